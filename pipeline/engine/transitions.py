"""The one state machine: every change of a run's status and of a ledger row's state, with its event.

Other modules decide *when* a run moves; this module is the only one that moves it. Each function takes the
session of the caller's transaction and the run row locked by it (``queries.lock_run``), changes the rows,
writes the event that explains the change in the same transaction, and queues the lifecycle hook
(:mod:`pipeline.engine.hooks`) that fires once the transaction commits.

Run statuses and the moves between them::

    queued ──► running ──► completed
      │          │ ▲
      │          ▼ │ (decision)
      │        waiting_for_approval
      │          │
      └──────────┴──► failed | cancelled                       (final)
                 └──► needs_reconciliation | dead_letter ──► running   (a person reconciles or retries)

Ledger rows (``rubot_effects``, unique per ``(run_id, op_key)``) are ``claimed`` (with a lease, see
:mod:`pipeline.engine.leases`) while work is in flight and ``done`` once its result is recorded here.
"""

from __future__ import annotations

import enum
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from pipeline.definitions import schemas
from pipeline.engine import hooks, revisions
from pipeline.engine.hooks import ApprovalInfo, ModelTurnInfo, RunInfo, StepInfo, ToolCallInfo
from pipeline.errors import InvalidRunState
from pipeline.notify import outbox
from pipeline.redact import redact
from pipeline.store import queries
from pipeline.store.tables import (
    CANCELLED,
    COMPLETED,
    DEAD_LETTER,
    DONE,
    FAILED,
    NEEDS_RECONCILIATION,
    PENDING,
    QUEUED,
    RUNNING,
    TERMINAL,
    WAITING,
    ApprovalRow,
    EffectRow,
    RunRow,
    utcnow,
)

SET_ASIDE = (NEEDS_RECONCILIATION, DEAD_LETTER)

#: Every allowed move of a run's status. Anything else is a bug in the caller, refused loudly.
RUN_MOVES: dict[str, frozenset[str]] = {
    QUEUED: frozenset({RUNNING, WAITING, FAILED, CANCELLED, *SET_ASIDE}),
    RUNNING: frozenset({WAITING, COMPLETED, FAILED, CANCELLED, *SET_ASIDE}),
    WAITING: frozenset({RUNNING, FAILED, CANCELLED, *SET_ASIDE}),
    NEEDS_RECONCILIATION: frozenset({RUNNING}),
    DEAD_LETTER: frozenset({RUNNING}),
    COMPLETED: frozenset(),
    FAILED: frozenset(),
    CANCELLED: frozenset(),
}

_HOOK_FOR = {
    RUNNING: "run_started",
    WAITING: "run_waiting",
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


def start(s: Session, run: RunRow, **data: Any) -> None:
    """``queued`` → ``running``: the run was admitted and its first segment is being dispatched."""
    _move(s, run, RUNNING, "run.started", workflow=run.workflow, **data)


def wait_for_approval(s: Session, run: RunRow, step: str) -> None:
    """→ ``waiting_for_approval``: a pending approval holds the run (no message, no worker, only rows)."""
    if run.status != WAITING:
        _move(s, run, WAITING, "run.waiting_for_approval", step)
    else:  # a second approval of the same turn: the run already waits
        queries.add_event(s, run.id, "run.waiting_for_approval", step)


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
) -> None:
    """A step's body failed: the run fails with the error (its claim, if any, is dropped first)."""
    row = queries.get_effect(s, run.id, step)
    if row is not None and row.status != DONE:
        s.delete(row)
    queries.add_event(s, run.id, "step.failed", step, **error)
    hooks.after_commit(s, "step_failed", step_info(run, step, kind, task_id=task_id, error=redact(error)))
    fail(s, run, {**error, "step": step}, step=step)


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
        evidence=redact(evidence) if evidence is not None else None,
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
    row: EffectRow,
    *,
    step: str,
    turn: int,
    agent: str,
    response: dict[str, Any],
    usage: dict[str, int],
    cost_micros: int,
    duration_seconds: float | None = None,
    **data: Any,
) -> None:
    """Record a model's response (claimed ``row`` → done) and add its usage and cost to the run's totals."""
    record(s, run, row.op_key, row.kind, {**response, "cost_micros": cost_micros}, row=row)
    run.input_tokens += usage.get("input_tokens", 0)
    run.output_tokens += usage.get("output_tokens", 0)
    run.cache_write_tokens += usage.get("cache_write_tokens", 0)
    run.cache_read_tokens += usage.get("cache_read_tokens", 0)
    run.cost_micros += cost_micros
    queries.add_event(
        s,
        run.id,
        "model.turn",
        step,
        turn=turn,
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
        ),
    )
