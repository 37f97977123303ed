"""The hot path: a step and its events recorded in one transaction (one statement on Postgres).

Part of the one state machine; see :mod:`pipeline.engine.transitions`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, String, Table, bindparam, insert, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from pipeline.engine import hooks
from pipeline.engine.hooks import StepInfo
from pipeline.engine.transitions.ledger import apply
from pipeline.errors import RunNotFound
from pipeline.store import chain
from pipeline.store.tables import (
    CLAIMED,
    DONE,
    EffectRow,
    EventRow,
    RunRow,
    utcnow,
)

# --- the hot path: a step recorded in one transaction ---------------------------------------------------------


@dataclass(frozen=True)
class Recorded:
    """What :func:`record_step` leaves behind: the run's status after the step, and whether it just completed."""

    status: str
    workflow: str
    user_id: str | None


def record_step(
    s: Session,
    run_id: str,
    step: str,
    kind: str,
    delta: dict[str, Any],
    *,
    task_id: str | None,
    claimed: bool,
    started_at: datetime,
) -> Recorded:
    """Record a step's result and apply its delta to the run's state, in the caller's (single) transaction.

    The ledger row is written first: a concurrent delivery that recorded the same step already makes this insert
    fail on the unique ``(run_id, op_key)`` (``IntegrityError``), and the whole transaction is dropped. With
    ``claimed`` (a lease row exists, taken up front or lazily by the heartbeat) that row is set done instead.
    The state is merged in SQL on Postgres (``jsonb ||``; the row lock is held only for that statement) and in
    Python on SQLite (whose write lock the transaction already holds).
    """
    effects: Table = EffectRow.__table__  # type: ignore[assignment]
    now = utcnow()
    updated = 0
    if claimed:
        updated = s.execute(
            update(effects)
            .where(effects.c.run_id == run_id, effects.c.op_key == step, effects.c.status == CLAIMED)
            .values(status=DONE, result=delta, lease_expires_at=None)
        ).rowcount  # type: ignore[attr-defined]
    if not updated:
        s.execute(
            insert(effects).values(
                run_id=run_id, op_key=step, kind=kind, result=delta, task_id=task_id, status=DONE, created_at=now
            )
        )
    status, workflow, user_id = _merge_state(s, run_id, delta, now)
    s.execute(
        insert(EventRow).values(
            [
                chain.append(s, run_id, "step.started", step, {"kind": kind, "task_id": task_id}, started_at),
                chain.append(s, run_id, "step.completed", step, {"keys": sorted(delta["set"])}, now),
            ]
        )
    )
    hooks.after_commit(
        s,
        "step_completed",
        StepInfo(run_id=run_id, workflow=workflow, step=step, kind=kind, task_id=task_id, user_id=user_id),
    )
    return Recorded(status=status, workflow=workflow, user_id=user_id)


_PG_MERGE = text(
    "UPDATE rubot_runs SET state = ((COALESCE(state::jsonb, '{}'::jsonb) || CAST(:set AS jsonb)) "
    "- CAST(:unset AS text[]))::json, updated_at = :now WHERE id = :id "
    "RETURNING status, workflow, user_id, event_seq, event_hash"
).bindparams(bindparam("unset", type_=ARRAY(String())))


def _merge_state(s: Session, run_id: str, delta: dict[str, Any], now: datetime) -> tuple[str, str, str | None]:
    """Merge ``delta`` into the run's state; the run's row is locked from here on, so its event chain's head,
    read in the same statement, is the one the step's events extend."""
    row: Any
    if s.get_bind().dialect.name == "postgresql":
        row = s.execute(
            _PG_MERGE,
            {"set": json.dumps(delta["set"]), "unset": list(delta.get("unset", [])), "id": run_id, "now": now},
        ).one_or_none()
    else:
        runs: Table = RunRow.__table__  # type: ignore[assignment]
        current = s.execute(
            select(
                runs.c.state, runs.c.status, runs.c.workflow, runs.c.user_id, runs.c.event_seq, runs.c.event_hash
            ).where(runs.c.id == run_id)
        ).one_or_none()
        row = None
        if current is not None:
            s.execute(update(runs).where(runs.c.id == run_id).values(state=apply(current.state, delta), updated_at=now))
            row = (current.status, current.workflow, current.user_id, current.event_seq, current.event_hash)
    if row is None:
        raise RunNotFound(f"no run with id {run_id!r}")
    chain.seed_head(s, run_id, row[3], row[4])
    return row[0], row[1], row[2]


# The step's two events are chained in SQL: ``head`` locks the run row (FOR UPDATE returns its newest version, so
# a step of a parallel group that committed meanwhile is seen) and the links are computed from the head it read;
# the UPDATE moves the head on. Appends to one run's chain are thus serialized by its row lock, as everywhere.
_PG_RECORD = text(
    f"""
    WITH head AS (
        SELECT event_seq, event_hash FROM rubot_runs WHERE id = :run_id FOR UPDATE
    ), effect AS (
        INSERT INTO rubot_effects (run_id, op_key, kind, status, result, task_id, created_at)
        VALUES (:run_id, :op_key, :kind, 'done', CAST(:result AS json), :task_id, :now)
        RETURNING id
    ), link1 AS (
        SELECT event_seq + 1 AS seq1,
               {chain.pg_link("event_hash", "event_seq + 1", "CAST(:started_digest AS text)")} AS hash1
        FROM head
    ), links AS (
        SELECT seq1, hash1, seq1 + 1 AS seq2,
               {chain.pg_link("hash1", "seq1 + 1", "CAST(:completed_digest AS text)")} AS hash2
        FROM link1
    ), trail AS (
        INSERT INTO rubot_events (run_id, type, step, data, created_at, seq, hash)
        SELECT :run_id, v.type, :op_key, CAST(v.data AS json), v.at, v.seq, v.hash
        FROM links, LATERAL (VALUES
            ('step.started', CAST(:started_data AS text), CAST(:started_at AS timestamptz), links.seq1, links.hash1),
            ('step.completed', CAST(:completed_data AS text), CAST(:now AS timestamptz), links.seq2, links.hash2)
        ) AS v(type, data, at, seq, hash)
        WHERE EXISTS (SELECT 1 FROM effect)
        RETURNING id
    )
    UPDATE rubot_runs
    SET state = ((COALESCE(state::jsonb, '{{}}'::jsonb) || CAST(:set AS jsonb)) - CAST(:unset AS text[]))::json,
        updated_at = :now, event_seq = links.seq2, event_hash = links.hash2
    FROM links
    WHERE rubot_runs.id = :run_id AND EXISTS (SELECT 1 FROM effect)
    RETURNING status, workflow, user_id
    """
).bindparams(bindparam("unset", type_=ARRAY(String())))


def record_step_at_once(
    conn: Connection,
    run_id: str,
    step: str,
    kind: str,
    delta: dict[str, Any],
    *,
    task_id: str | None,
    started_at: datetime,
) -> Recorded:
    """:func:`record_step` for Postgres as ONE statement on an autocommit connection: one round trip, one commit.

    The ledger insert, both events and the state merge are one data-modifying statement, so they commit (or fail,
    on the unique ledger key, with ``IntegrityError``) together. Used for unclaimed steps that do not end the plan;
    the caller calls the ``step_completed`` hook after it.
    """
    now = utcnow()
    started_data = {"kind": kind, "task_id": task_id}
    completed_data = {"keys": sorted(delta["set"])}
    row = conn.execute(
        _PG_RECORD,
        {
            "run_id": run_id,
            "op_key": step,
            "kind": kind,
            "result": json.dumps(delta),
            "task_id": task_id,
            "now": now,
            "started_at": started_at,
            "started_data": json.dumps(started_data),
            "completed_data": json.dumps(completed_data),
            "started_digest": chain.content_digest(run_id, "step.started", step, started_data, started_at),
            "completed_digest": chain.content_digest(run_id, "step.completed", step, completed_data, now),
            "set": json.dumps(delta["set"]),
            "unset": list(delta.get("unset", [])),
        },
    ).one_or_none()
    if row is None:
        raise RunNotFound(f"no run with id {run_id!r}")
    return Recorded(status=row.status, workflow=row.workflow, user_id=row.user_id)
