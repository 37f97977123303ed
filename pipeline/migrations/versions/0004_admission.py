"""concurrency caps: the run's user and subject as indexed columns

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rubot_runs") as batch:
        batch.add_column(sa.Column("user_id", sa.String(200), nullable=True))
        batch.add_column(sa.Column("subject_key", sa.String(500), nullable=True))
        batch.create_index("ix_rubot_runs_user_status", ["user_id", "status"])
        batch.create_index("ix_rubot_runs_subject_status", ["subject_key", "status"])


def downgrade() -> None:
    with op.batch_alter_table("rubot_runs") as batch:
        batch.drop_index("ix_rubot_runs_subject_status")
        batch.drop_index("ix_rubot_runs_user_status")
        batch.drop_column("subject_key")
        batch.drop_column("user_id")
