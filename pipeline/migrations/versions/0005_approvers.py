"""approvers: the deciding principal and evidence on approvals, API tokens, the notification outbox, link uses

Revision ID: 0005
Revises: 0006
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rubot_approvals") as batch:
        batch.add_column(sa.Column("principal", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("tool", sa.String(64), nullable=True))
        batch.add_column(sa.Column("summary", sa.Text(), nullable=True))
        batch.add_column(sa.Column("evidence", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("remind_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("reminded_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "rubot_api_tokens",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("user_id", sa.String(200), nullable=False),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("roles", sa.JSON(), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_rubot_api_tokens_user_id", "rubot_api_tokens", ["user_id"])
    op.create_table(
        "rubot_outbox",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("run_id", sa.String(40), sa.ForeignKey("rubot_runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("approval_id", sa.String(40), nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("recipient", sa.String(500), nullable=True),
        sa.Column("approver", sa.JSON(), nullable=True),
        sa.Column("message", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_rubot_outbox_run_id", "rubot_outbox", ["run_id"])
    op.create_index("ix_rubot_outbox_approval_id", "rubot_outbox", ["approval_id"])
    op.create_index("ix_rubot_outbox_pending", "rubot_outbox", ["created_at"],
                    postgresql_where=sa.text("status = 'pending'"), sqlite_where=sa.text("status = 'pending'"))
    op.create_table(
        "rubot_link_uses",
        sa.Column("link_id", sa.String(64), primary_key=True),
        sa.Column("approval_id", sa.String(40), nullable=False),
        sa.Column("principal_id", sa.String(200), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("rubot_link_uses")
    op.drop_index("ix_rubot_outbox_pending", table_name="rubot_outbox")
    op.drop_index("ix_rubot_outbox_approval_id", table_name="rubot_outbox")
    op.drop_index("ix_rubot_outbox_run_id", table_name="rubot_outbox")
    op.drop_table("rubot_outbox")
    op.drop_index("ix_rubot_api_tokens_user_id", table_name="rubot_api_tokens")
    op.drop_table("rubot_api_tokens")
    with op.batch_alter_table("rubot_approvals") as batch:
        for column in ("reminded_at", "remind_at", "evidence", "summary", "tool", "principal"):
            batch.drop_column(column)
