"""cost: the estimated part of a run's cost (requests billed whose response was lost)

Revision ID: 0006
Revises: 0007
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rubot_runs") as batch:
        batch.add_column(sa.Column("estimated_cost_micros", sa.BigInteger(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("rubot_runs") as batch:
        batch.drop_column("estimated_cost_micros")
