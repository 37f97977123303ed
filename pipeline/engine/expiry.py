"""Approval expiry: what happens when nobody decides an approval before its deadline.

An approval step with ``expires_in`` (and a tool whose ``approval_expires_in`` is set) gets an ``expires_at``
when it is requested. The beat task ``rubot.expire_approvals`` calls :func:`expire_approvals`, which resolves
every pending approval past its deadline as its step says:

* ``on_expire="reject"`` (the default): the approval is rejected by ``rubot:expiry`` through the same code path
  as a person's rejection, so ``on_reject`` applies. A step that fails on rejection fails the run with reason
  ``approval_expired``; an expired tool-call approval is answered to the model as a refused call.
* ``on_expire="escalate"``: the same approval row moves to ``escalate_to`` with a new deadline; the run keeps
  waiting. An approval expires at most once more after escalating: the second expiry rejects it.

Each approval is resolved in its own transaction that holds the run's row lock and checks again that it is
still pending and overdue, so a person deciding at the same moment, or two sweeps racing (two beats by
mistake, a slow sweep overlapping the next), resolve it exactly once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from pipeline.definitions.dsl import ApprovalStep
from pipeline.engine import approvals, transitions
from pipeline.store import queries
from pipeline.store.tables import PENDING, REJECTED, WAITING, ApprovalRow, EventRow, RunRow, utcnow

if TYPE_CHECKING:
    from pipeline.runtime import Runtime

log = logging.getLogger("rubot.expiry")

#: The stable name of the beat task that runs :func:`expire_approvals`.
SWEEP_TASK = "rubot.expire_approvals"
#: Who the trail says decided an approval that expired.
EXPIRY_ACTOR = "rubot:expiry"
EXPIRY_PRINCIPAL = {"id": EXPIRY_ACTOR, "display_name": "approval expiry", "roles": [], "via": "system"}
#: ``run.error["reason"]`` of a run that failed because its approval expired.
EXPIRED_REASON = "approval_expired"
# One sweep handles at most this many approvals; the rest wait for the next tick instead of one long sweep.
BATCH = 500


@dataclass(frozen=True)
class _Policy:
    """What to do with one overdue approval, read from its step (tool-call approvals always reject)."""

    action: str  # "reject" | "escalate"
    escalate_to: str | None = None
    escalate_expires_in: timedelta | None = None


def expire_approvals(runtime: Runtime, *, now: datetime | None = None, limit: int = BATCH) -> list[str]:
    """Resolve every pending approval whose deadline is at or before ``now`` (default: the current time).

    Returns the ids of the approvals this call expired (rejected or escalated); approvals that a person or a
    concurrent sweep resolved first are skipped. A failure on one approval is logged and does not stop the rest.
    """
    now = _utc(now or utcnow())
    with runtime.db.transaction() as s:
        due = _due(s, now, limit)
    expired: list[str] = []
    for approval_id, run_id in due:
        try:
            if _expire_one(runtime, run_id, approval_id, now):
                expired.append(approval_id)
        except Exception:  # one broken run (say, a workflow no longer importable) must not hold up the others
            log.exception("could not expire approval %s of run %s", approval_id, run_id)
    if expired:
        log.info("expired %d approval(s)", len(expired))
    return expired


def _due(s: Session, now: datetime, limit: int) -> list[tuple[str, str]]:
    """``(approval_id, run_id)`` of overdue pending approvals of waiting runs, oldest deadline first.

    Served by the partial index on pending approvals: a sweep reads what is pending, not the history.
    """
    query = (
        select(ApprovalRow.id, ApprovalRow.run_id)
        .join(RunRow, RunRow.id == ApprovalRow.run_id)
        .where(
            ApprovalRow.status == PENDING,
            ApprovalRow.expires_at.is_not(None),
            ApprovalRow.expires_at <= now,
            RunRow.status == WAITING,
        )
        .order_by(ApprovalRow.expires_at, ApprovalRow.id)
        .limit(limit)
    )
    return [(approval_id, run_id) for approval_id, run_id in s.execute(query)]


def _expire_one(runtime: Runtime, run_id: str, approval_id: str, now: datetime) -> bool:
    """Resolve one overdue approval under the run lock; False when it no longer needs it."""
    with runtime.db.transaction() as s:
        run = queries.lock_run(s, run_id)
        approval = s.get(ApprovalRow, approval_id)
        # Checked again under the lock: between the scan and now, a person may have decided, the run may have
        # been cancelled, or another sweep may have rejected or escalated it (moving its deadline on).
        if (
            approval is None
            or approval.status != PENDING
            or run.status != WAITING
            or approval.expires_at is None
            or _utc(approval.expires_at) > now
        ):
            return False
        policy = _policy(runtime, s, run, approval)
        deadline = _utc(approval.expires_at)
        if policy.action == "escalate":
            _escalate(s, run, approval, policy, now)
            return True
        transitions.note_approval_expired(s, run, approval, deadline=deadline, resolution=REJECTED)
        comment = (
            f"The approval expired at {deadline.isoformat()} before anyone ({approval.role}) decided; "
            "it was rejected automatically."
        )
        send = approvals.record_decision(
            runtime,
            s,
            run,
            approval,
            REJECTED,
            by=EXPIRY_ACTOR,
            principal=EXPIRY_PRINCIPAL,
            comment=comment,
            failure={
                "reason": EXPIRED_REASON,
                "message": f"{approval.step}: approval expired at {deadline.isoformat()} without a decision",
                "expired_at": deadline.isoformat(),
            },
        )
    send()
    return True


def _policy(runtime: Runtime, s: Session, run: RunRow, approval: ApprovalRow) -> _Policy:
    if approval.kind != "step":
        return _Policy("reject")
    from pipeline.definitions.registry import workflow_of

    spec = workflow_of(runtime, run.workflow).step_named(approval.step)
    if not isinstance(spec, ApprovalStep) or spec.on_expire != "escalate" or not spec.escalate_to:
        return _Policy("reject")
    if _escalated_before(s, run.id, approval.id):
        return _Policy("reject")  # escalation happens once: a second deadline missed is a rejection
    return _Policy("escalate", spec.escalate_to, spec.escalate_expires_in or spec.expires_in)


def _escalated_before(s: Session, run_id: str, approval_id: str) -> bool:
    # The event trail is the record of escalation, so no column is needed and a redefined workflow (say, a
    # changed escalate_to) cannot make an approval escalate again.
    rows = s.execute(select(EventRow.data).where(EventRow.run_id == run_id, EventRow.type == "approval.escalated"))
    return any((data or {}).get("approval_id") == approval_id for data in rows.scalars())


def _escalate(s: Session, run: RunRow, approval: ApprovalRow, policy: _Policy, now: datetime) -> None:
    assert approval.expires_at is not None and policy.escalate_to and policy.escalate_expires_in is not None
    deadline = _utc(approval.expires_at)
    # The assignee belonged to the role that missed the deadline; anyone holding the new role may decide.
    transitions.note_approval_expired(s, run, approval, deadline=deadline, resolution="escalated")
    transitions.escalate_approval(
        s, run, approval, to_role=policy.escalate_to, expires_at=now + policy.escalate_expires_in
    )


def _utc(moment: datetime) -> datetime:
    """An aware UTC datetime; SQLite hands back naive values, which Rubot always writes in UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
