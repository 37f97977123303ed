"""The reads and writes the runtime does, each taking the session of the caller's transaction."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from pipeline.errors import RunNotFound
from pipeline.redact import redact
from pipeline.store import chain
from pipeline.store.tables import (
    CLAIMED,
    DONE,
    PENDING,
    ApprovalRow,
    EffectRow,
    EventRow,
    RunRow,
    utcnow,
)


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def lock_run(session: Session, run_id: str) -> RunRow:
    """Load the run row for update: Postgres locks it (``FOR UPDATE``); SQLite already holds the write lock."""
    runs = RunRow.__table__
    # The chain head as plain columns: read fresh even when the row object was already in the session.
    found = session.execute(
        select(RunRow, runs.c.event_seq, runs.c.event_hash).where(RunRow.id == run_id).with_for_update()
    ).one_or_none()
    if found is None:
        raise RunNotFound(f"no run with id {run_id!r}")
    chain.seed_head(session, run_id, found[1], found[2])  # the events this transaction appends chain onto it
    return found[0]


def run_status(connection: Connection, run_id: str) -> str:
    """The run's status, read without loading the row; ``RunNotFound`` if there is none."""
    status = connection.execute(select(RunRow.status).where(RunRow.id == run_id)).scalar_one_or_none()
    if status is None:
        raise RunNotFound(f"no run with id {run_id!r}")
    return status


def get_run(session: Session, run_id: str) -> RunRow:
    row = session.get(RunRow, run_id)
    if row is None:
        raise RunNotFound(f"no run with id {run_id!r}")
    return row


def add_event(session: Session, run_id: str, type: str, step: str | None = None, /, **data: Any) -> None:
    """Append an event to the run's trail, chained to its previous event (:mod:`pipeline.store.chain`)."""
    session.add(EventRow(**chain.append(session, run_id, type, step, redact(data) if data else None, utcnow())))


def effect(session: Session, run_id: str, op_key: str) -> EffectRow:
    """The ledger row that must exist (a recorded turn a tool call belongs to, say)."""
    found = get_effect(session, run_id, op_key)
    if found is None:
        raise LookupError(f"run {run_id} has no ledger entry {op_key!r}")
    return found


def get_effect(session: Session, run_id: str, op_key: str) -> EffectRow | None:
    return session.execute(
        select(EffectRow).where(EffectRow.run_id == run_id, EffectRow.op_key == op_key)
    ).scalar_one_or_none()


def add_effect(
    session: Session,
    run_id: str,
    op_key: str,
    kind: str,
    result: Any,
    task_id: str | None,
    *,
    status: str = DONE,
    lease_expires_at: Any = None,
) -> EffectRow:
    """Insert a ledger row; a concurrent duplicate fails the flush on the unique ``(run_id, op_key)``."""
    row = EffectRow(
        run_id=run_id,
        op_key=op_key,
        kind=kind,
        result=result,
        task_id=task_id,
        status=status,
        lease_expires_at=lease_expires_at,
        created_at=utcnow(),
    )
    session.add(row)
    session.flush()
    return row


def completed_ops(session: Session, run_id: str) -> set[str]:
    return set(
        session.execute(select(EffectRow.op_key).where(EffectRow.run_id == run_id, EffectRow.status == DONE)).scalars()
    )


def live_claims(session: Session, run_id: str, now: Any) -> list[EffectRow]:
    return list(
        session.execute(
            select(EffectRow).where(
                EffectRow.run_id == run_id, EffectRow.status == CLAIMED, EffectRow.lease_expires_at >= now
            )
        ).scalars()
    )


def effects_under(session: Session, run_id: str, prefix: str) -> dict[str, EffectRow]:
    """Ledger rows whose op key starts with ``prefix`` (an agent step's turns and tool calls)."""
    rows = session.execute(
        select(EffectRow).where(EffectRow.run_id == run_id, EffectRow.op_key.startswith(prefix, autoescape=True))
    )
    return {row.op_key: row for row in rows.scalars()}


def bump_counter(run: RunRow, name: str) -> None:
    run.counters = {**(run.counters or {}), name: (run.counters or {}).get(name, 0) + 1}


def pending_approval(session: Session, run_id: str, approval_id: str | None = None) -> ApprovalRow | None:
    query = select(ApprovalRow).where(ApprovalRow.run_id == run_id, ApprovalRow.status == PENDING)
    if approval_id is not None:
        query = query.where(ApprovalRow.id == approval_id)
    return session.execute(query.order_by(ApprovalRow.created_at)).scalars().first()


def approval_for_step(session: Session, run_id: str, step: str) -> ApprovalRow | None:
    return session.execute(
        select(ApprovalRow).where(ApprovalRow.run_id == run_id, ApprovalRow.step == step)
    ).scalar_one_or_none()


def events(session: Session, run_id: str) -> list[EventRow]:
    return list(session.execute(select(EventRow).where(EventRow.run_id == run_id).order_by(EventRow.id)).scalars())


def approvals(session: Session, run_id: str) -> list[ApprovalRow]:
    return list(
        session.execute(
            select(ApprovalRow).where(ApprovalRow.run_id == run_id).order_by(ApprovalRow.created_at, ApprovalRow.id)
        ).scalars()
    )


def effects(session: Session, run_id: str) -> list[EffectRow]:
    return list(session.execute(select(EffectRow).where(EffectRow.run_id == run_id).order_by(EffectRow.id)).scalars())


def children(session: Session, run_id: str) -> list[RunRow]:
    """The runs whose parent is ``run_id`` (an Operation's run), oldest first."""
    query = select(RunRow).where(RunRow.parent_run_id == run_id).order_by(RunRow.created_at, RunRow.id)
    return list(session.execute(query).scalars())


def list_runs(
    session: Session, *, statuses: list[str] | None = None, workflow: str | None = None, limit: int = 50
) -> list[RunRow]:
    query = select(RunRow)
    if statuses:
        query = query.where(RunRow.status.in_(statuses))
    if workflow:
        query = query.where(RunRow.workflow == workflow)
    return list(session.execute(query.order_by(RunRow.created_at.desc()).limit(limit)).scalars())
