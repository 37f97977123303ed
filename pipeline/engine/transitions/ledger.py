"""The ledger: recorded results and their step events, branch decisions, children launched, replays seeded.

Part of the one state machine; see :mod:`pipeline.engine.transitions`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from pipeline.definitions import schemas
from pipeline.engine import hooks, visits
from pipeline.engine.hooks import StepInfo
from pipeline.engine.transitions.runs import _move, fail
from pipeline.redact import redact
from pipeline.store import queries
from pipeline.store.tables import (
    DONE,
    QUEUED,
    RUNNING,
    ApprovalRow,
    EffectRow,
    RunRow,
    utcnow,
)

# --- ledger ----------------------------------------------------------------------------------------------------


def record(
    s: Session,
    run: RunRow,
    op_key: str,
    kind: str,
    result: Any,
    *,
    task_id: str | None = None,
    row: EffectRow | None = None,
) -> EffectRow:
    """Record ``result`` as the outcome of ``op_key``: the claimed ``row`` becomes ``done``, or a ``done`` row
    is inserted (a concurrent duplicate then fails the flush on the unique ``(run_id, op_key)``)."""
    if row is None:
        row = EffectRow(
            run_id=run.id, op_key=op_key, kind=kind, result=result, task_id=task_id, status=DONE, created_at=utcnow()
        )
        s.add(row)
        s.flush()
    else:
        row.result, row.status, row.lease_expires_at = result, DONE, None
    run.updated_at = utcnow()  # progress, as far as the sweeper is concerned
    return row


def apply(state: dict[str, Any] | None, delta: dict[str, Any]) -> dict[str, Any]:
    """``state`` with a step's delta ``{"set": {...}, "unset": [...]}`` applied."""
    merged = {k: v for k, v in (state or {}).items() if k not in set(delta.get("unset", []))}
    merged.update(delta.get("set", {}))
    return merged


def diff(before: dict[str, Any], after: dict[str, Any], *, what: str) -> dict[str, Any]:
    """The delta that turns ``before`` into ``after`` (its values checked to be JSON)."""
    changed = {k: v for k, v in after.items() if k not in before or before[k] != v}
    return {"set": schemas.to_json(changed, what=what), "unset": [k for k in before if k not in after]}


# --- steps -----------------------------------------------------------------------------------------------------


def step_info(
    run: RunRow, step: str, kind: str, *, task_id: str | None = None, error: dict[str, Any] | None = None
) -> StepInfo:
    return StepInfo(
        run_id=run.id, workflow=run.workflow, step=step, kind=kind, task_id=task_id, user_id=run.user_id, error=error
    )


def step_started(s: Session, run: RunRow, step: str, kind: str, *, task_id: str | None) -> None:
    """The step's body is about to run (a queued run starts running with it)."""
    if run.status == QUEUED:
        _move(s, run, RUNNING, "run.started", workflow=run.workflow)
    run.updated_at = utcnow()
    queries.add_event(s, run.id, "step.started", step, kind=kind, task_id=task_id)


def complete_step(
    s: Session,
    run: RunRow,
    step: str,
    kind: str,
    delta: dict[str, Any],
    *,
    task_id: str | None = None,
    row: EffectRow | None = None,
    extra: dict[str, Any] | None = None,
    **data: Any,
) -> None:
    """Record a step's state delta in the ledger and apply it to the run's state, in one transaction."""
    record(s, run, step, kind, {**delta, **(extra or {})}, task_id=task_id, row=row)
    run.state = apply(run.state, delta)
    queries.add_event(s, run.id, "step.completed", step, keys=sorted(delta["set"]), **data)
    hooks.after_commit(s, "step_completed", step_info(run, step, kind, task_id=task_id))


def fail_step(
    s: Session, run: RunRow, step: str, kind: str, error: dict[str, Any], *, task_id: str | None = None
) -> bool:
    """A step's body failed: the run fails with the error (its claim, if any, is dropped first). False when the
    run had already ended (nothing more to report)."""
    row = queries.get_effect(s, run.id, step)
    if row is not None and row.status != DONE:
        s.delete(row)
    queries.add_event(s, run.id, "step.failed", step, **error)
    hooks.after_commit(s, "step_failed", step_info(run, step, kind, task_id=task_id, error=redact(error)))
    return fail(s, run, {**error, "step": step}, step=step)


# --- branches --------------------------------------------------------------------------------------------------


def skip_step(
    s: Session, run: RunRow, step: str, kind: str, *, key: str, because: str, task_id: str | None = None
) -> None:
    """Record ``step`` as skipped (its ``if_``/``unless`` said so, or a choice went past it): a ledger row, so a
    resumed run never decides again, and a ``step.skipped`` event. Its state entry ``key`` is removed: a step
    skipped on a later pass of a loop leaves no stale result behind."""
    delta = {"set": {}, "unset": [key] if key in (run.state or {}) else []}
    record(s, run, step, kind, {**delta, "skipped": because}, task_id=task_id)
    if delta["unset"]:
        run.state = apply(run.state, delta)
    queries.add_event(s, run.id, "step.skipped", step, kind=kind, because=because)


def decide_branch(
    s: Session,
    run: RunRow,
    choice: str,
    decision: dict[str, Any],
    *,
    skipped: list[tuple[str, str, str]] = (),  # type: ignore[assignment]
    task_id: str | None = None,
) -> None:
    """A choice goes on to the next step or forward to ``decision["to"]``: the steps in between are recorded as
    skipped and the decision as the choice's result (``state[choice]``), all in the caller's transaction."""
    for name, kind, key in skipped:
        skip_step(s, run, name, kind, key=key, because=f"{choice} went to {decision['to']}", task_id=task_id)
    delta = {"set": {choice: decision}, "unset": []}
    record(s, run, choice, "choice", delta, task_id=task_id)
    run.state = apply(run.state, delta)
    queries.add_event(s, run.id, "choice.decided", choice, **decision)
    hooks.after_commit(s, "step_completed", step_info(run, choice, "choice", task_id=task_id))


def loop_back(
    s: Session, run: RunRow, choice: str, decision: dict[str, Any], *, steps: list[str], task_id: str | None = None
) -> None:
    """A choice sends the run back to ``decision["to"]``: the ledger rows of ``steps`` (from there up to the choice)
    are kept under this visit's prefix (:mod:`pipeline.engine.visits`), so they run again, and the decision is kept
    the same way; all in the caller's transaction, which also dispatches the steps again."""
    visit = decision["visit"] - 1  # the visit that ends here
    visits.archive(s, run.id, visit, choice, steps)
    delta = {"set": {choice: decision}, "unset": []}
    record(s, run, visits.key(visit, choice, choice), "choice", delta, task_id=task_id)
    run.state = apply(run.state, delta)
    queries.add_event(s, run.id, "choice.decided", choice, again=steps, **decision)


def launch_child(s: Session, parent: RunRow, op_key: str, child_run_id: str, workflow: str) -> EffectRow:
    """Record in the parent's ledger that its routing launched ``child_run_id`` (under ``op_key``), with its event.

    Written in the transaction that inserts the child run: a routing executed again finds this row and gets the same
    child back instead of launching another (a concurrent duplicate fails the flush on the unique ledger key).
    """
    row = record(s, parent, op_key, "child_run", {"run_id": child_run_id, "workflow": workflow})
    queries.add_event(s, parent.id, "operation.child_launched", op_key, child_run_id=child_run_id, workflow=workflow)
    return row


# --- replays ---------------------------------------------------------------------------------------------------


def seed_replay(
    s: Session,
    run: RunRow,
    source: RunRow,
    *,
    from_step: str,
    rows: list[EffectRow],
    approvals: list[ApprovalRow],
) -> None:
    """Make ``run`` (inserted, not yet dispatched) a replay of ``source``: copy the recorded ``rows`` it reuses
    into its ledger as done (so the engine skips them: no model request, no tool call), apply their steps'
    state deltas, copy the decided ``approvals`` of those steps, and say so in the trail."""
    run.replay_of = source.id
    state: dict[str, Any] = {}
    now = utcnow()
    for row in rows:
        s.add(
            EffectRow(run_id=run.id, op_key=row.op_key, kind=row.kind, result=row.result, status=DONE, created_at=now)
        )
        if "/" not in row.op_key and isinstance(row.result, dict) and "set" in row.result:
            state = apply(state, row.result)
    for approval in approvals:
        copy = {c.key: getattr(approval, c.key) for c in ApprovalRow.__table__.columns}
        s.add(ApprovalRow(**{**copy, "id": queries.new_id("apr"), "run_id": run.id}))
    run.state = state
    queries.add_event(s, run.id, "run.replay_of", source=source.id, from_step=from_step, reused=len(rows))
    for row in rows:
        queries.add_event(
            s, run.id, "replay.reused", row.op_key.split("/")[0], op_key=row.op_key, kind=row.kind, source=source.id
        )
