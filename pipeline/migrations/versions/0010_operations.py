"""durable operations: a run launched by an operation's routing links to its parent run

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rubot_runs") as batch:
        batch.add_column(sa.Column("parent_run_id", sa.String(40), nullable=True))
        batch.create_index("ix_rubot_runs_parent", ["parent_run_id"])


def downgrade() -> None:
    with op.batch_alter_table("rubot_runs") as batch:
        batch.drop_index("ix_rubot_runs_parent")
        batch.drop_column("parent_run_id")
