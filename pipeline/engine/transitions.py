"""The one state machine: every change of a run's status and of a ledger row's state, with its event.

Other modules decide *when* a run moves; this module is the only one that moves it. Each function takes the
session of the caller's transaction and the run row locked by it (``queries.lock_run``), changes the rows,
writes the event that explains the change in the same transaction, and queues the lifecycle hook
(:mod:`pipeline.engine.hooks`) that fires once the transaction commits.

Run statuses and the moves between them::

    queued ──► running ──► completed
      │          │ ▲ ▲
      │          │ │ └──── waiting_for_child     (an operation's run waits for a child run; the child's
      │          ▼ │ (decision)                   transition to rest moves it back to running)
      │        waiting_for_approval
      │          │
      └──────────┴──► failed | cancelled                       (final)
                 └──► needs_reconciliation | dead_letter ──► running   (a person reconciles or retries)

A run launched by an operation's routing names its parent (``parent_run_id``); whenever such a run comes to rest
(final, or waiting for an approval) and its parent waits for a child, the parent goes back to ``running`` in the
same transaction (event ``run.resumed`` with the child's id), and the ``run_resumed`` hook of
:mod:`pipeline.engine.children` dispatches the parent's routing again once that commits. A lost dispatch leaves the
parent ``running`` with nothing claimed: the sweeper's stall check dispatches it again.

Ledger rows (``rubot_effects``, unique per ``(run_id, op_key)``) are ``claimed`` (with a lease, see
:mod:`pipeline.engine.leases`) while work is in flight and ``done`` once its result is recorded here.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, String, Table, bindparam, insert, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from pipeline.definitions import schemas
from pipeline.engine import failures, hooks, revisions, visits
from pipeline.engine.hooks import ApprovalInfo, ModelTurnInfo, RunInfo, StepInfo, ToolCallInfo
from pipeline.errors import InvalidRunState, RunNotFound
from pipeline.notify import outbox
from pipeline.redact import redact
from pipeline.store import chain, queries
from pipeline.store.signals import SIGNALS_KEY
from pipeline.store.tables import (
    CANCELLED,
    CLAIMED,
    COMPLETED,
    DEAD_LETTER,
    DONE,
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
    ApprovalRow,
    BatchRow,
    EffectRow,
    EventRow,
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


def launch_child(s: Session, parent: RunRow, op_key: str, child_run_id: str, workflow: str) -> EffectRow:
    """Record in the parent's ledger that its routing launched ``child_run_id`` (under ``op_key``), with its event.

    Written in the transaction that inserts the child run: a routing executed again finds this row and gets the same
    child back instead of launching another (a concurrent duplicate fails the flush on the unique ledger key).
    """
    row = record(s, parent, op_key, "child_run", {"run_id": child_run_id, "workflow": workflow})
    queries.add_event(s, parent.id, "operation.child_launched", op_key, child_run_id=child_run_id, workflow=workflow)
    return row


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


# --- approvals -------------------------------------------------------------------------------------------------


def approval_info(run: RunRow, approval: ApprovalRow, action: str) -> ApprovalInfo:
    return ApprovalInfo(
        run_id=run.id,
        workflow=run.workflow,
        approval_id=approval.id,
        step=approval.step,
        role=approval.role,
        action=action,
        decided_by=approval.decided_by,
        assignee=approval.assignee,
        principal=approval.principal,
        kind=approval.kind or "step",
        summary=approval.summary,
    )


def request_approval(
    s: Session,
    run: RunRow,
    *,
    step: str,
    role: str,
    reason: str,
    kind: str = "step",
    assignee: str | None = None,
    expires_at: datetime | None = None,
    tool_input: Any = None,
    args_hash: str | None = None,
    tool: str | None = None,
    summary: str | None = None,
    evidence: dict[str, Any] | None = None,
    remind_at: datetime | None = None,
    **data: Any,
) -> ApprovalRow:
    """Insert a pending approval (with what its approvers are shown) and put the run in ``waiting_for_approval``.

    The notifications of the request are written to the outbox in this same transaction.
    """
    approval = ApprovalRow(
        id=queries.new_id("apr"),
        run_id=run.id,
        step=step,
        role=role,
        reason=reason,
        assignee=assignee,
        status=PENDING,
        kind=kind,
        tool_input=tool_input,
        args_hash=args_hash,
        tool=tool,
        summary=summary,
        evidence=redact(evidence, for_approvers=True) if evidence is not None else None,
        remind_at=remind_at,
        created_at=utcnow(),
        expires_at=expires_at,
    )
    s.add(approval)
    fields = {"approval_id": approval.id, "role": role, "reason": reason, **data}
    if kind == "step":
        fields.update(assignee=assignee, expires_at=expires_at.isoformat() if expires_at else None)
    else:
        fields.update(tool=tool, args_hash=args_hash)
    if summary:
        fields["summary"] = summary
    queries.add_event(s, run.id, "approval.requested", step, **fields)
    hooks.after_commit(s, "approval_requested", approval_info(run, approval, "requested"))
    outbox.write(s, run, approval, "requested")
    wait_for_approval(s, run, step)
    return approval


def decide_approval(
    s: Session,
    run: RunRow,
    approval: ApprovalRow,
    decision: str,
    *,
    by: str,
    principal: dict[str, Any] | None = None,
    comment: str | None = None,
    payload: Any = None,
    **data: Any,
) -> None:
    """Write a decision on a pending approval, with the principal that made it (the caller resumes or ends the run)."""
    if approval.status != PENDING:
        raise InvalidRunState(f"approval {approval.id} is {approval.status}, not pending")
    principal = principal or {"id": by, "display_name": by, "roles": [], "via": "python"}
    approval.status, approval.decided_by, approval.decided_at = decision, by, utcnow()
    approval.comment, approval.decision_payload, approval.principal = comment, payload, principal
    queries.add_event(
        s,
        run.id,
        f"approval.{decision}",
        approval.step,
        approval_id=approval.id,
        decided_by=by,
        principal=principal,
        comment=comment,
        **data,
    )
    hooks.after_commit(s, "approval_decided", approval_info(run, approval, decision))


def refuse_approval(s: Session, run: RunRow, approval: ApprovalRow, *, principal: dict[str, Any], why: str) -> None:
    """Record that ``principal`` tried to decide ``approval`` and was refused; the approval stays as it was."""
    queries.add_event(
        s,
        run.id,
        "approval.refused",
        approval.step,
        approval_id=approval.id,
        principal=principal,
        role=approval.role,
        why=why,
    )
    hooks.after_commit(
        s, "approval_refused", replace(approval_info(run, approval, "refused"), principal=principal, why=why)
    )


def remind_approval(s: Session, run: RunRow, approval: ApprovalRow) -> None:
    """The SLA reminder of a pending approval: recorded once (``reminded_at``), with its notifications."""
    approval.reminded_at = utcnow()
    queries.add_event(
        s,
        run.id,
        "approval.reminded",
        approval.step,
        approval_id=approval.id,
        role=approval.role,
        expires_at=approval.expires_at.isoformat() if approval.expires_at else None,
    )
    hooks.after_commit(s, "approval_reminded", approval_info(run, approval, "reminded"))
    outbox.write(s, run, approval, "reminded")


def start_revision(s: Session, run: RunRow, approval: ApprovalRow, steps: list[str], record: dict[str, Any]) -> None:
    """Changes requested on a revise step: archive this round, put the comment in state, run ``steps`` again.

    ``steps`` runs from the step the workflow revises from up to the approval step (see
    :mod:`pipeline.engine.revisions`). The run goes back to ``running``; the caller sends the resume.
    """
    step = approval.step
    round_ = revisions.archive_round(s, run.id, approval, steps)
    run.state = apply(run.state, {"set": {step: record}, "unset": []})
    queries.add_event(s, run.id, "approval.revision_started", step, round=round_ + 1, steps=steps)
    _move(s, run, RUNNING, "run.resumed", step, hook="run_resumed", decision=record["decision"], revise=True)


def escalate_approval(s: Session, run: RunRow, approval: ApprovalRow, *, to_role: str, expires_at: datetime) -> None:
    """Hand a pending approval to another role with a new deadline (the run keeps waiting)."""
    from_role, from_assignee = approval.role, approval.assignee
    approval.role, approval.assignee, approval.expires_at = to_role, None, expires_at
    queries.add_event(
        s,
        run.id,
        "approval.escalated",
        approval.step,
        approval_id=approval.id,
        from_role=from_role,
        to_role=to_role,
        from_assignee=from_assignee,
        expires_at=expires_at.isoformat(),
    )
    hooks.after_commit(s, "approval_escalated", approval_info(run, approval, "escalated"))
    outbox.write(s, run, approval, "escalated")


def note_approval_expired(
    s: Session, run: RunRow, approval: ApprovalRow, *, deadline: datetime, resolution: str
) -> None:
    """The event (and hook) of an approval whose deadline passed; ``resolution`` says what happens to it."""
    queries.add_event(
        s,
        run.id,
        "approval.expired",
        approval.step,
        approval_id=approval.id,
        role=approval.role,
        expires_at=deadline.isoformat(),
        resolution=resolution,
    )
    hooks.after_commit(s, "approval_expired", approval_info(run, approval, "expired"))
    outbox.write(s, run, approval, "expired")


# --- agent steps -----------------------------------------------------------------------------------------------


def answer_tool_call(
    s: Session,
    run: RunRow,
    op_key: str,
    tool: str,
    result: dict[str, Any],
    *,
    event: str,
    row: EffectRow | None = None,
    **data: Any,
) -> None:
    """Record what a model's tool call returns to the model (a result or an error), with its event."""
    record(s, run, op_key, "tool_call", result, row=row)
    step = op_key.split("/")[0]
    is_error = bool(result.get("is_error"))
    queries.add_event(s, run.id, event, step, op_key=op_key, tool=tool, is_error=is_error, **data)
    hooks.after_commit(
        s,
        "tool_call_answered",
        ToolCallInfo(
            run_id=run.id, workflow=run.workflow, step=step, op_key=op_key, tool=tool, outcome=event, is_error=is_error
        ),
    )


def record_model_turn(
    s: Session,
    run: RunRow,
    row: EffectRow | None,
    *,
    step: str,
    turn: int,
    agent: str,
    response: dict[str, Any],
    usage: dict[str, int],
    cost_micros: int,
    duration_seconds: float | None = None,
    op_key: str | None = None,
    batch: bool = False,
    **data: Any,
) -> None:
    """Record a model's response (claimed ``row`` → done, or a new done row under ``op_key`` for a batch turn)
    and add its usage and cost to the run's totals."""
    result = {**response, "cost_micros": cost_micros, **({"batch": True} if batch else {})}
    record(s, run, row.op_key if row is not None else str(op_key), "model_turn", result, row=row)
    run.input_tokens += usage.get("input_tokens", 0)
    run.output_tokens += usage.get("output_tokens", 0)
    run.cache_write_tokens += usage.get("cache_write_tokens", 0)
    run.cache_read_tokens += usage.get("cache_read_tokens", 0)
    run.cost_micros += cost_micros
    if batch:
        data["batch"] = True
    queries.add_event(
        s,
        run.id,
        "model.turn",
        step,
        turn=turn,
        agent=agent,
        provider=response.get("provider"),
        model=response.get("model"),
        stop_reason=response.get("stop_reason"),
        cost_micros=cost_micros,
        usage=usage,
        **data,
    )
    hooks.after_commit(
        s,
        "model_turn_recorded",
        ModelTurnInfo(
            run_id=run.id,
            workflow=run.workflow,
            step=step,
            turn=turn,
            agent=agent,
            model=response.get("model") or "",
            provider=response.get("provider"),
            usage=dict(usage),
            cost_micros=cost_micros,
            stop_reason=response.get("stop_reason"),
            tool_calls=tuple(data.get("tool_calls") or ()),
            duration_seconds=duration_seconds,
            batch=batch,
        ),
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


def record_estimated_charge(
    s: Session,
    run: RunRow,
    op_key: str,
    *,
    step: str,
    turn: int,
    agent: str,
    model: str,
    usage: dict[str, int],
    cost_micros: int,
    **data: Any,
) -> None:
    """Record what a request whose response was lost may have cost (``op_key`` is unique per attempt, so an
    attempt is charged once). The estimate counts in ``cost_micros`` and, separately, ``estimated_cost_micros``;
    its tokens are not added to the run's token totals, which hold only what the provider reported."""
    record(
        s,
        run,
        op_key,
        "model_charge_estimate",
        {"estimated": True, "model": model, "usage": usage, "cost_micros": cost_micros, **data},
    )
    run.cost_micros += cost_micros
    run.estimated_cost_micros = (run.estimated_cost_micros or 0) + cost_micros
    queries.add_event(
        s,
        run.id,
        "model.turn_estimated",
        step,
        turn=turn,
        agent=agent,
        model=model,
        estimated=True,
        cost_micros=cost_micros,
        usage=usage,
        op_key=op_key,
        **data,
    )
    hooks.after_commit(
        s,
        "model_turn_estimated",
        ModelTurnInfo(
            run_id=run.id,
            workflow=run.workflow,
            step=step,
            turn=turn,
            agent=agent,
            model=model,
            usage=dict(usage),
            cost_micros=cost_micros,
            batch=bool(data.get("batch")),
            estimated=True,
        ),
    )


def note_batch_submitted(
    s: Session, run: RunRow, row: EffectRow, *, step: str, turn: int, batch_id: str, lease_until: datetime
) -> None:
    """A turn's request is in a Message Batch: its claim now lasts until the batch's results must have been read,
    so the run waits with nothing in flight (no worker, no message) and the sweeper leaves it alone."""
    row.result = {**(row.result or {}), "batch_id": batch_id}
    row.lease_expires_at = lease_until
    run.updated_at = utcnow()
    queries.add_event(
        s, run.id, "model.batch_submitted", step, turn=turn, batch_id=batch_id, custom_id=row.result.get("custom_id")
    )


def settle_batch_request(s: Session, run: RunRow, row: EffectRow, outcome: str, *, step: str, **data: Any) -> None:
    """A submitted batch request ended (``succeeded``, ``errored``, ``expired``, ``canceled`` or ``lost``)."""
    record(s, run, row.op_key, row.kind, {**(row.result or {}), "outcome": outcome, **data}, row=row)
    queries.add_event(s, run.id, f"model.batch_{outcome}", step, op_key=row.op_key, **data)
