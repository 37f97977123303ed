"""Runs: the status moves, with the table of allowed moves, and scheduled batches.

Part of the one state machine; see :mod:`pipeline.engine.transitions`.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from pipeline.engine import failures, hooks
from pipeline.engine.hooks import RunInfo
from pipeline.errors import InvalidRunState, RunNotFound
from pipeline.redact import redact
from pipeline.store import queries
from pipeline.store.signals import SIGNALS_KEY
from pipeline.store.tables import (
    CANCELLED,
    COMPLETED,
    DEAD_LETTER,
    FAILED,
    LAUNCHED,
    LAUNCHING,
    NEEDS_RECONCILIATION,
    PENDING,
    QUEUED,
    RUNNING,
    TERMINAL,
    WAITING,
    WAITING_FOR_CHILD,
    BatchRow,
    RunRow,
    utcnow,
)

SET_ASIDE = (NEEDS_RECONCILIATION, DEAD_LETTER)
#: Statuses in which a run waits for nothing but a person (or nothing at all): what ``pipeline.wait`` waits for.
RESTING = TERMINAL | {WAITING}

#: Every allowed move of a run's status. Anything else is a bug in the caller, refused loudly.
RUN_MOVES: dict[str, frozenset[str]] = {
    QUEUED: frozenset({RUNNING, WAITING, FAILED, CANCELLED, *SET_ASIDE}),
    RUNNING: frozenset({WAITING, WAITING_FOR_CHILD, COMPLETED, FAILED, CANCELLED, *SET_ASIDE}),
    WAITING: frozenset({RUNNING, FAILED, CANCELLED, *SET_ASIDE}),
    WAITING_FOR_CHILD: frozenset({RUNNING, FAILED, CANCELLED, *SET_ASIDE}),
    NEEDS_RECONCILIATION: frozenset({RUNNING}),
    DEAD_LETTER: frozenset({RUNNING}),
    COMPLETED: frozenset(),
    FAILED: frozenset(),
    CANCELLED: frozenset(),
}

_HOOK_FOR = {
    RUNNING: "run_started",
    WAITING: "run_waiting",
    WAITING_FOR_CHILD: "run_waiting",
    COMPLETED: "run_completed",
    FAILED: "run_failed",
    CANCELLED: "run_cancelled",
    NEEDS_RECONCILIATION: "run_set_aside",
    DEAD_LETTER: "run_set_aside",
}


class Outcome(enum.Enum):
    """What a step task tells Celery to do next."""

    CONTINUE = "continue"  # the step is recorded; the chain may go on
    HALT = "halt"  # the run is not running (failed, cancelled, set aside): stop the chain
    PARK = "park"  # the segment ends here: the run waits for a person, or an agent's turns carry on
    HOLD = "hold"  # another delivery holds this step's claim: do not report it done (a chord must wait)
    FAILED = "failed"  # this step failed the run (recorded): stop the chain, and let Celery record the failure


# --- runs ------------------------------------------------------------------------------------------------------


def _move(
    s: Session, run: RunRow, to: str, event: str, step: str | None = None, /, *, hook: str | None = None, **data: Any
) -> None:
    previous = run.status
    if to not in RUN_MOVES.get(previous, frozenset()):
        raise InvalidRunState(f"run {run.id} cannot go from {previous} to {to}")
    now = utcnow()
    run.status = to
    run.updated_at = now
    if to == RUNNING and run.started_at is None:
        run.started_at = now
    if to in TERMINAL:
        run.finished_at = now
    elif previous in TERMINAL:
        run.finished_at = None
    if to == WAITING and run.started_at is None:
        run.started_at = now
    queries.add_event(s, run.id, event, step, **data)
    if to in RESTING:
        signals = s.info.get(SIGNALS_KEY)
        if signals is not None:
            signals.rested(s, run.id)  # wakes pipeline.wait() callers once this commits
        if run.parent_run_id is not None:
            _wake_parent(s, run)
    hooks.after_commit(
        s,
        hook or _HOOK_FOR[to],
        RunInfo(
            run_id=run.id,
            workflow=run.workflow,
            status=to,
            previous=previous,
            step=step,
            user_id=run.user_id,
            error=run.error if to in (FAILED, CANCELLED, *SET_ASIDE) else None,
            cost_micros=run.cost_micros or 0,
        ),
    )


def _wake_parent(s: Session, child: RunRow) -> None:
    """``child`` came to rest: its parent, if it waits for a child, goes back to ``running`` (see the docstring)."""
    try:
        parent = queries.lock_run(s, str(child.parent_run_id))
    except RunNotFound:
        return
    if parent.status == WAITING_FOR_CHILD:
        _move(s, parent, RUNNING, "run.resumed", hook="run_resumed", child_run_id=child.id, child_status=child.status)


def start(s: Session, run: RunRow, **data: Any) -> None:
    """``queued`` → ``running``: the run was admitted and its first segment is being dispatched."""
    _move(s, run, RUNNING, "run.started", workflow=run.workflow, **data)


def wait_for_approval(s: Session, run: RunRow, step: str) -> None:
    """→ ``waiting_for_approval``: a pending approval holds the run (no message, no worker, only rows)."""
    if run.status != WAITING:
        _move(s, run, WAITING, "run.waiting_for_approval", step)
    else:  # a second approval of the same turn: the run already waits
        queries.add_event(s, run.id, "run.waiting_for_approval", step)


def wait_for_child(s: Session, run: RunRow, step: str, *, child_run_id: str) -> None:
    """``running`` → ``waiting_for_child``: an operation's routing waits for ``child_run_id`` to come to rest."""
    _move(s, run, WAITING_FOR_CHILD, "run.waiting_for_child", step, child_run_id=child_run_id)


def resume(s: Session, run: RunRow, step: str, *, decision: str) -> None:
    """``waiting_for_approval`` → ``running`` after a decision that lets the run go on."""
    _move(s, run, RUNNING, "run.resumed", step, hook="run_resumed", decision=decision)


def complete(s: Session, run: RunRow, output: Any) -> None:
    """``running`` → ``completed`` with its output."""
    run.output = output
    _move(s, run, COMPLETED, "run.completed")


def fail(s: Session, run: RunRow, error: dict[str, Any], *, step: str | None = None) -> bool:
    """An active run → ``failed`` with ``error`` (redacted); False when it had already ended."""
    if run.status in TERMINAL:
        return False
    run.error = redact(error)
    _move(s, run, FAILED, "run.failed", step, **run.error)
    failures.note(s, run.id)  # the task doing this work tells Celery it failed the run
    return True


def cancel(s: Session, run: RunRow, *, by: str | None, reason: str | None) -> None:
    """→ ``cancelled``; its pending approvals can no longer be decided."""
    if run.status in TERMINAL:
        raise InvalidRunState(f"run {run.id} is already {run.status}")
    for approval in queries.approvals(s, run.id):
        if approval.status == PENDING:
            approval.status = CANCELLED
    run.error = {"reason": "cancelled", "message": reason or "cancelled", "by": by}
    _move(s, run, CANCELLED, "run.cancelled", by=by, reason=reason, previous_status=run.status)


def set_aside(s: Session, run: RunRow, status: str, error: dict[str, Any]) -> None:
    """→ ``needs_reconciliation`` or ``dead_letter``: the run waits for a person and moves no further by itself."""
    assert status in SET_ASIDE, status
    run.error = redact(error)
    _move(s, run, status, f"run.{status}", error.get("op_key"), **run.error)


def reopen(s: Session, run: RunRow, event: str, step: str | None = None, /, **data: Any) -> None:
    """A set-aside run → ``running`` again (``run.reconciled`` / ``run.retried``)."""
    if run.status not in SET_ASIDE:
        raise InvalidRunState(f"run {run.id} is {run.status}, not {' or '.join(SET_ASIDE)}")
    run.error = None
    _move(s, run, RUNNING, event, step, hook="run_reopened", **data)


def reject_launch(s: Session, run_id: str, workflow: str, error: dict[str, Any], *, batch_id: str | None) -> RunRow:
    """A launch that cannot start (unknown workflow, bad input) is recorded as a ``failed`` run under its id,
    with the reason, so whoever holds the id sees why; no step runs."""
    now = utcnow()
    run = RunRow(
        id=run_id,
        workflow=workflow,
        status=FAILED,
        input=None,
        context={},
        state={},
        error=redact(error),
        batch_id=batch_id,
        dispatch_seq=0,
        created_at=now,
        updated_at=now,
        finished_at=now,
    )
    s.add(run)
    s.flush()  # the run row first: events reference it
    queries.add_event(s, run_id, "run.rejected", workflow=workflow, **run.error)
    hooks.after_commit(
        s, "run_failed", RunInfo(run_id=run_id, workflow=workflow, status=FAILED, previous=None, error=run.error)
    )
    return run


# --- batches ---------------------------------------------------------------------------------------------------


def start_batch(s: Session, batch_id: str, *, schedule: str, workflow: str, tick: datetime | None) -> BatchRow:
    """A scheduled batch begins launching its runs (the unique id makes a second start fail the flush)."""
    batch = BatchRow(
        id=batch_id, schedule=schedule, workflow=workflow, tick=tick, status=LAUNCHING, created_at=utcnow()
    )
    s.add(batch)
    s.flush()
    return batch


def batch_launched(s: Session, batch: BatchRow, *, total: int) -> None:
    """Every run of the batch exists."""
    batch.status, batch.total, batch.finished_at = LAUNCHED, total, utcnow()


def batch_failed(s: Session, batch: BatchRow, error: dict[str, Any]) -> None:
    """The batch's subjects could not be listed; the runs created so far go on."""
    batch.status, batch.error, batch.finished_at = FAILED, redact(error), utcnow()
