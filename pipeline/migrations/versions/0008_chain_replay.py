"""tamper evidence and replay: a hash chain over each run's events (seq, hash; the head on the run), replay_of

Revision ID: 0008
Revises: 0005
Create Date: 2026-11-23

Existing events are chained in the order they were written (by id), so ``rubot verify`` checks old runs too.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rubot_runs") as batch:
        batch.add_column(sa.Column("event_seq", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("event_hash", sa.String(64), nullable=True))
        batch.add_column(sa.Column("replay_of", sa.String(40), nullable=True))
        batch.create_index("ix_rubot_runs_replay_of", ["replay_of"])
    with op.batch_alter_table("rubot_events") as batch:
        batch.add_column(sa.Column("seq", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("hash", sa.String(64), nullable=True))
    _chain_existing_events()
    with op.batch_alter_table("rubot_events") as batch:
        batch.create_unique_constraint("uq_rubot_events_run_seq", ["run_id", "seq"])


def _chain_existing_events() -> None:
    from pipeline.store.chain import content_digest, link

    bind = op.get_bind()
    events = sa.table(
        "rubot_events",
        sa.column("id", sa.Integer()),
        sa.column("run_id", sa.String()),
        sa.column("type", sa.String()),
        sa.column("step", sa.String()),
        sa.column("data", sa.JSON()),
        sa.column("created_at", sa.DateTime(timezone=True)),
        sa.column("seq", sa.Integer()),
        sa.column("hash", sa.String()),
    )
    runs = sa.table("rubot_runs", sa.column("id", sa.String()), sa.column("event_seq", sa.Integer()),
                    sa.column("event_hash", sa.String()))
    heads: dict[str, tuple[int, str | None]] = {}
    rows = bind.execute(sa.select(events).order_by(events.c.id)).fetchall()
    for row in rows:
        seq, previous = heads.get(row.run_id, (0, None))
        seq += 1
        digest = link(previous, seq, content_digest(row.run_id, row.type, row.step, row.data, row.created_at))
        bind.execute(sa.update(events).where(events.c.id == row.id).values(seq=seq, hash=digest))
        heads[row.run_id] = (seq, digest)
    for run_id, (seq, digest) in heads.items():
        bind.execute(sa.update(runs).where(runs.c.id == run_id).values(event_seq=seq, event_hash=digest))


def downgrade() -> None:
    with op.batch_alter_table("rubot_events") as batch:
        batch.drop_constraint("uq_rubot_events_run_seq", type_="unique")
        batch.drop_column("hash")
        batch.drop_column("seq")
    with op.batch_alter_table("rubot_runs") as batch:
        batch.drop_index("ix_rubot_runs_replay_of")
        batch.drop_column("replay_of")
        batch.drop_column("event_hash")
        batch.drop_column("event_seq")
