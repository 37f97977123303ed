"""console and metrics: daily spend alerts raised once, indexes for the runs list and the metrics queries

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rubot_spend_alerts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("threshold_micros", sa.BigInteger, nullable=False),
        sa.Column("spent_micros", sa.BigInteger, nullable=False),
        sa.Column("run_id", sa.String(40), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("scope", "name", "day", name="uq_rubot_spend_alerts_scope_name_day"),
    )
    op.create_index("ix_rubot_runs_created", "rubot_runs", ["created_at"])
    op.create_index("ix_rubot_runs_workflow_created", "rubot_runs", ["workflow", "created_at"])
    op.create_index("ix_rubot_events_type_created", "rubot_events", ["type", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_rubot_events_type_created", "rubot_events")
    op.drop_index("ix_rubot_runs_workflow_created", "rubot_runs")
    op.drop_index("ix_rubot_runs_created", "rubot_runs")
    op.drop_table("rubot_spend_alerts")
