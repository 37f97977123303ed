"""Approvals: requested, decided, refused, reminded, escalated, expired and sent back for revision.

Part of the one state machine; see :mod:`pipeline.engine.transitions`.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from pipeline.engine import hooks, revisions
from pipeline.engine.hooks import ApprovalInfo
from pipeline.engine.transitions.ledger import apply
from pipeline.engine.transitions.runs import _move, wait_for_approval
from pipeline.errors import InvalidRunState
from pipeline.notify import outbox
from pipeline.redact import redact
from pipeline.store import queries
from pipeline.store.tables import (
    PENDING,
    RUNNING,
    ApprovalRow,
    RunRow,
    utcnow,
)

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
