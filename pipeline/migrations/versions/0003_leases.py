"""leases on claimed operations, recovery counts on runs

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rubot_effects") as batch:
        batch.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_rubot_effects_claimed", ["lease_expires_at"],
                           postgresql_where=sa.text("status = 'claimed'"), sqlite_where=sa.text("status = 'claimed'"))
    with op.batch_alter_table("rubot_runs") as batch:
        batch.add_column(sa.Column("recoveries", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("rubot_runs") as batch:
        batch.drop_column("recoveries")
    with op.batch_alter_table("rubot_effects") as batch:
        batch.drop_index("ix_rubot_effects_claimed")
        batch.drop_column("lease_expires_at")
