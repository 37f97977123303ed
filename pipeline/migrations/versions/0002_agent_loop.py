"""agent loop: claimed effects, guard counters, tool-call approvals, stored large results

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rubot_effects") as batch:
        batch.add_column(sa.Column("status", sa.String(16), nullable=False, server_default="done"))
    with op.batch_alter_table("rubot_runs") as batch:
        batch.add_column(sa.Column("counters", sa.JSON(), nullable=True))
    with op.batch_alter_table("rubot_approvals") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="step"))
        batch.add_column(sa.Column("tool_input", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("args_hash", sa.String(64), nullable=True))
    op.create_table(
        "rubot_blobs",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("run_id", sa.String(40), sa.ForeignKey("rubot_runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("op_key", sa.String(500), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_rubot_blobs_run_id", "rubot_blobs", ["run_id"])


def downgrade() -> None:
    op.drop_index("ix_rubot_blobs_run_id", table_name="rubot_blobs")
    op.drop_table("rubot_blobs")
    with op.batch_alter_table("rubot_approvals") as batch:
        batch.drop_column("args_hash")
        batch.drop_column("tool_input")
        batch.drop_column("kind")
    with op.batch_alter_table("rubot_runs") as batch:
        batch.drop_column("counters")
    with op.batch_alter_table("rubot_effects") as batch:
        batch.drop_column("status")
