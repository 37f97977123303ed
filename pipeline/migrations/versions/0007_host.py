"""host launches and scheduled batches: rubot_batches, and the batch a run belongs to

Revision ID: 0007
Revises: 0004
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rubot_batches",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("schedule", sa.String(200), nullable=False),
        sa.Column("workflow", sa.String(200), nullable=False),
        sa.Column("tick", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("total", sa.Integer, nullable=True),
        sa.Column("error", sa.JSON, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_rubot_batches_created", "rubot_batches", ["created_at"])
    with op.batch_alter_table("rubot_runs") as batch:
        batch.add_column(sa.Column("batch_id", sa.String(40), nullable=True))
        batch.create_index("ix_rubot_runs_batch_status", ["batch_id", "status"])


def downgrade() -> None:
    with op.batch_alter_table("rubot_runs") as batch:
        batch.drop_index("ix_rubot_runs_batch_status")
        batch.drop_column("batch_id")
    op.drop_index("ix_rubot_batches_created", "rubot_batches")
    op.drop_table("rubot_batches")
