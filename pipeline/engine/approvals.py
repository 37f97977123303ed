"""Approvals park a run in SQL and a decision resumes it.

Parking records a pending approval and sets ``waiting_for_approval`` in the step task's transaction; the
compiled segment ends at the approval step, so no broker message, worker or result key waits with it.
A decision is recorded once, with the ledger row of the approval step and the state entry
``state[step] = {"decision", "decided_by", "comment", "payload"}`` in the same transaction; then a
``rubot.resume`` message re-dispatches the rest of the plan from SQL. An approval nobody decided in time is
rejected through the same :func:`record_decision` by the expiry sweep (:mod:`pipeline.engine.expiry`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

from celery import chain
from sqlalchemy.orm import Session

from pipeline.definitions import schemas
from pipeline.definitions.dsl import ApprovalStep
from pipeline.definitions.registry import workflow_of
from pipeline.engine import dispatch, transitions
from pipeline.engine.compiler import TOOL_TASK, TURN_TASK
from pipeline.engine.snapshots import Approval
from pipeline.engine.transitions import Outcome
from pipeline.errors import ApprovalAlreadyDecided, ApprovalError, NoPendingApproval
from pipeline.store import queries
from pipeline.store.tables import (
    APPROVED,
    CHANGES_REQUESTED,
    PENDING,
    REJECTED,
    WAITING,
    ApprovalRow,
    RunRow,
    utcnow,
)

if TYPE_CHECKING:
    from pipeline.runtime import Runtime

DECISIONS = (APPROVED, REJECTED, CHANGES_REQUESTED)


def park(session: Session, run: RunRow, spec: ApprovalStep) -> Outcome:
    """Record a pending approval for ``spec`` (once) and put the run in ``waiting_for_approval``."""
    existing = queries.approval_for_step(session, run.id, spec.name)  # type: ignore[arg-type]
    if existing is None:
        expires_at = utcnow() + spec.expires_in if spec.expires_in else None
        transitions.request_approval(
            session,
            run,
            step=spec.name,
            role=spec.role,
            reason=spec.reason,  # type: ignore[arg-type]
            assignee=spec.assignee,
            expires_at=expires_at,
        )
    else:
        transitions.wait_for_approval(session, run, spec.name)  # type: ignore[arg-type]
    return Outcome.PARK


def decide(
    runtime: Runtime,
    run_id: str,
    decision: str,
    *,
    by: str,
    payload: Any = None,
    comment: str | None = None,
    approval_id: str | None = None,
) -> Approval:
    """Record ``decision`` on the run's pending approval and resume or end the run accordingly."""
    if decision not in DECISIONS:
        raise ApprovalError(f"decision must be one of {DECISIONS}, got {decision!r}")
    if not isinstance(by, str) or not by.strip():
        raise ApprovalError("a decision needs the identity of who made it (by=...)")
    payload = schemas.to_json(payload, what="decision payload")

    with runtime.db.transaction() as s:
        run = queries.lock_run(s, run_id)
        approval = _pending(s, run, approval_id)
        if approval.assignee and approval.assignee != by:
            raise ApprovalError(f"approval {approval.id} is assigned to {approval.assignee}, not {by}")
        send = record_decision(runtime, s, run, approval, decision, by=by, payload=payload, comment=comment)
        result = Approval.from_row(approval)
    send()
    return result


def record_decision(
    runtime: Runtime,
    s: Session,
    run: RunRow,
    approval: ApprovalRow,
    decision: str,
    *,
    by: str,
    payload: Any = None,
    comment: str | None = None,
    failure: Mapping[str, Any] | None = None,
) -> Callable[[], None]:
    """Write ``decision`` on the pending ``approval`` in the caller's transaction, which holds the run lock.

    Returns the follow-up to call once that transaction has committed (sending earlier could let a worker
    read the run before the decision is visible): the approved or refused tool call and the next turn, or
    the resume of the run; a no-op when the decision ended the run. ``failure`` adds to (or overrides) the
    fields of ``run.error`` when the decision fails the run, e.g. ``{"reason": "approval_expired"}``.
    """
    if approval.kind == "tool_call":
        step, n, call_id = _decide_tool_call(s, run, approval, decision, by, comment, payload)
        return partial(_send_tool_call, runtime, run.id, step, n, call_id)
    return _decide_step(runtime, s, run, approval, decision, by, comment, payload, failure)


def _send_tool_call(runtime: Runtime, run_id: str, step: str, n: int, call_id: str) -> None:
    # The tool task reads the decision (run exactly the approved call, or tell the model it was refused);
    # the next turn goes on once every call of the turn has a result.
    queue = runtime.settings.queue
    chain(
        runtime.app.signature(TOOL_TASK, args=(run_id, step, n, call_id), immutable=True, queue=queue),
        runtime.app.signature(TURN_TASK, args=(run_id, step, n + 1), immutable=True, queue=queue),
    ).apply_async()


def _nothing() -> None:
    return None


def _pending(s: Session, run: RunRow, approval_id: str | None) -> ApprovalRow:
    approval = queries.pending_approval(s, run.id, approval_id)
    if approval is None:
        decided = [a for a in queries.approvals(s, run.id) if approval_id in (None, a.id)]
        if decided:
            last = decided[-1]
            by_whom = f" by {last.decided_by}" if last.decided_by else ""
            raise ApprovalAlreadyDecided(f"approval {last.id} of run {run.id} was already {last.status}{by_whom}")
        raise NoPendingApproval(f"run {run.id} has no pending approval (status {run.status})")
    if run.status != WAITING:
        raise NoPendingApproval(f"run {run.id} is {run.status}, not waiting for approval")
    return approval


def _decide_step(
    runtime: Runtime,
    s: Session,
    run: RunRow,
    approval: ApprovalRow,
    decision: str,
    by: str,
    comment: str | None,
    payload: Any,
    failure: Mapping[str, Any] | None,
) -> Callable[[], None]:
    """An approval_step's decision: ledger row and state entry, and the next segment decided in the same
    transaction (no ``rubot.resume`` hop); returns what to send once it commits."""
    spec = workflow_of(runtime, run.workflow).step_named(approval.step)
    record = {
        "decision": decision,
        "decided_by": by,
        "comment": comment,
        "payload": payload,
        "approval_id": approval.id,
    }
    transitions.decide_approval(s, run, approval, decision, by=by, comment=comment, payload=payload)
    transitions.record(s, run, approval.step, "approval", {"set": {approval.step: record}, "unset": []})
    run.state = transitions.apply(run.state, {"set": {approval.step: record}, "unset": []})
    outcome = getattr(spec, "on_reject" if decision == REJECTED else "on_changes_requested", "continue")
    if decision == APPROVED or outcome == "continue":
        transitions.resume(s, run, approval.step, decision=decision)
        return dispatch.plan_next(s, runtime, run, workflow_of(runtime, run.workflow))
    error = {
        "reason": decision,
        "message": f"{approval.step} was {decision} by {by}",
        "comment": comment,
        "step": approval.step,
    }
    transitions.fail(s, run, {**error, **(failure or {})}, step=approval.step)
    return _nothing


_TOOL_OP = re.compile(r"^(?P<step>[^/]+)/turn-(?P<n>\d+)/tool-(?P<call>.+)$")


def _decide_tool_call(
    s: Session, run: RunRow, approval: ApprovalRow, decision: str, by: str, comment: str | None, payload: Any
) -> tuple[str, int, str]:
    match = _TOOL_OP.match(approval.step)
    if match is None:
        raise ApprovalError(f"approval {approval.id} names no tool call ({approval.step!r})")
    transitions.decide_approval(
        s, run, approval, decision, by=by, comment=comment, payload=payload, args_hash=approval.args_hash
    )
    others = [a for a in queries.approvals(s, run.id) if a.status == PENDING and a.id != approval.id]
    if not others:
        transitions.resume(s, run, approval.step, decision=decision)
    return match["step"], int(match["n"]), match["call"]
