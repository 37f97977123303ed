"""Approvals park a run in SQL and a decision resumes it.

Parking records a pending approval and sets ``waiting_for_approval`` in the step task's transaction; the
compiled segment ends at the approval step, so no broker message, worker or result key waits with it.
A decision is recorded once, with the ledger row of the approval step and the state entry
``state[step] = {"decision", "decided_by", "comment", "payload"}`` in the same transaction; then a
``rubot.resume`` message re-dispatches the rest of the plan from SQL.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from celery import chain
from sqlalchemy.orm import Session

from pipeline import bodies, schemas
from pipeline.compiler import RESUME_TASK, TOOL_TASK, TURN_TASK
from pipeline.dsl import ApprovalStep
from pipeline.errors import ApprovalAlreadyDecided, ApprovalError, NoPendingApproval
from pipeline.runs import Approval
from pipeline.store import queries
from pipeline.store.tables import (
    APPROVED,
    CHANGES_REQUESTED,
    PENDING,
    REJECTED,
    RUNNING,
    WAITING,
    ApprovalRow,
    RunRow,
    utcnow,
)

if TYPE_CHECKING:
    from pipeline.executor import Outcome
    from pipeline.runtime import Runtime

DECISIONS = (APPROVED, REJECTED, CHANGES_REQUESTED)


def park(session: Session, run: RunRow, spec: ApprovalStep) -> Outcome:
    """Record a pending approval for ``spec`` (once) and put the run in ``waiting_for_approval``."""
    from pipeline.executor import Outcome

    existing = queries.approval_for_step(session, run.id, spec.name)  # type: ignore[arg-type]
    if existing is None:
        now = utcnow()
        approval = ApprovalRow(id=queries.new_id("apr"), run_id=run.id, step=spec.name, role=spec.role,
                               reason=spec.reason, assignee=spec.assignee, status=PENDING, created_at=now,
                               expires_at=now + spec.expires_in if spec.expires_in else None)
        session.add(approval)
        queries.add_event(session, run.id, "approval.requested", spec.name, approval_id=approval.id,
                          role=spec.role, reason=spec.reason, assignee=spec.assignee,
                          expires_at=approval.expires_at.isoformat() if approval.expires_at else None)
    run.status = WAITING
    if run.started_at is None:
        run.started_at = utcnow()
    queries.add_event(session, run.id, "run.waiting_for_approval", spec.name)
    return Outcome.PARK


def decide(runtime: Runtime, run_id: str, decision: str, *, by: str, payload: Any = None,
           comment: str | None = None, approval_id: str | None = None) -> Approval:
    """Record ``decision`` on the run's pending approval and resume or end the run accordingly."""
    if decision not in DECISIONS:
        raise ApprovalError(f"decision must be one of {DECISIONS}, got {decision!r}")
    if not isinstance(by, str) or not by.strip():
        raise ApprovalError("a decision needs the identity of who made it (by=...)")
    payload = schemas.to_json(payload, what="decision payload")

    resume_seq, tool_call = None, None
    with runtime.db.transaction() as s:
        run = queries.lock_run(s, run_id)
        approval = _pending(s, run, approval_id)
        if approval.assignee and approval.assignee != by:
            raise ApprovalError(f"approval {approval.id} is assigned to {approval.assignee}, not {by}")
        approval.status, approval.decided_by, approval.decided_at = decision, by, utcnow()
        approval.comment, approval.decision_payload = comment, payload
        if approval.kind == "tool_call":
            tool_call = _decide_tool_call(s, run, approval, decision, by, comment)
        else:
            resume_seq = _decide_step(runtime, s, run, approval, decision, by, comment, payload)
        result = Approval.from_row(approval)
    if tool_call is not None:
        # The tool task reads the decision (run exactly the approved call, or tell the model it was refused);
        # the next turn goes on once every call of the turn has a result.
        step, n, call_id = tool_call
        queue = runtime.settings.queue
        chain(runtime.app.signature(TOOL_TASK, args=(run_id, step, n, call_id), immutable=True, queue=queue),
              runtime.app.signature(TURN_TASK, args=(run_id, step, n + 1), immutable=True, queue=queue)).apply_async()
    if resume_seq is not None:
        runtime.send(RESUME_TASK, run_id, resume_seq)
    return result


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


def _decide_step(runtime: Runtime, s: Session, run: RunRow, approval: ApprovalRow, decision: str, by: str,
                 comment: str | None, payload: Any) -> int | None:
    """An approval_step's decision: ledger row and state entry; returns the seq to resume with, if any."""
    from pipeline.executor import workflow_of

    spec = workflow_of(runtime, run.workflow)._steps[approval.step]
    record = {"decision": decision, "decided_by": by, "comment": comment, "payload": payload,
              "approval_id": approval.id}
    delta = {"set": {approval.step: record}, "unset": []}
    queries.add_effect(s, run.id, approval.step, "approval", delta, None)
    run.state = bodies.apply(run.state, delta)
    queries.add_event(s, run.id, f"approval.{decision}", approval.step, approval_id=approval.id,
                      decided_by=by, comment=comment)
    outcome = getattr(spec, "on_reject" if decision == REJECTED else "on_changes_requested", "continue")
    if decision == APPROVED or outcome == "continue":
        run.status = RUNNING
        queries.add_event(s, run.id, "run.resumed", approval.step, decision=decision)
        return run.dispatch_seq
    queries.fail_run(s, run, {"reason": decision, "message": f"{approval.step} was {decision} by {by}",
                              "comment": comment, "step": approval.step}, step=approval.step)
    return None


_TOOL_OP = re.compile(r"^(?P<step>[^/]+)/turn-(?P<n>\d+)/tool-(?P<call>.+)$")


def _decide_tool_call(s: Session, run: RunRow, approval: ApprovalRow, decision: str, by: str,
                      comment: str | None) -> tuple[str, int, str]:
    match = _TOOL_OP.match(approval.step)
    if match is None:
        raise ApprovalError(f"approval {approval.id} names no tool call ({approval.step!r})")
    queries.add_event(s, run.id, f"approval.{decision}", approval.step, approval_id=approval.id, decided_by=by,
                      comment=comment, args_hash=approval.args_hash)
    others = [a for a in queries.approvals(s, run.id) if a.status == PENDING and a.id != approval.id]
    if not others:
        run.status = RUNNING
        queries.add_event(s, run.id, "run.resumed", approval.step, decision=decision)
    return match["step"], int(match["n"]), match["call"]
