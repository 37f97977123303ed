"""SLA reminders: an approval with ``sla`` reminds its approvers once, when the SLA passes without a decision.

The beat task ``rubot.remind_approvals`` calls :func:`send_reminders`. Each due approval is handled in its own
transaction under the run's row lock and checked again there (still pending, run still waiting, not reminded yet),
so two sweeps racing remind once. The reminder is recorded (``reminded_at``, event ``approval.reminded``) with its
notifications in the outbox, in that transaction; the deadline (``expires_in``) and escalation follow as before.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select

from pipeline.engine import transitions
from pipeline.store import queries
from pipeline.store.tables import PENDING, WAITING, ApprovalRow, RunRow, as_utc, utcnow

if TYPE_CHECKING:
    from pipeline.runtime import Runtime

log = logging.getLogger("rubot.reminders")

SWEEP_TASK = "rubot.remind_approvals"
BATCH = 500


def send_reminders(runtime: Runtime, *, now: datetime | None = None, limit: int = BATCH) -> list[str]:
    """Remind the approvers of every pending approval whose SLA passed by ``now``; returns the approval ids."""
    now = now or utcnow()
    query = (
        select(ApprovalRow.id, ApprovalRow.run_id)
        .join(RunRow, RunRow.id == ApprovalRow.run_id)
        .where(
            ApprovalRow.status == PENDING,
            ApprovalRow.remind_at.is_not(None),
            ApprovalRow.remind_at <= now,
            ApprovalRow.reminded_at.is_(None),
            RunRow.status == WAITING,
        )
        .order_by(ApprovalRow.remind_at, ApprovalRow.id)
        .limit(limit)
    )
    with runtime.db.transaction() as s:
        due = list(s.execute(query))
    reminded = []
    for approval_id, run_id in due:
        try:
            with runtime.db.transaction() as s:
                run = queries.lock_run(s, run_id)
                approval = s.get(ApprovalRow, approval_id)
                if (
                    approval is None
                    or approval.status != PENDING
                    or approval.reminded_at is not None
                    or run.status != WAITING
                    or approval.remind_at is None
                    or as_utc(approval.remind_at) > now  # type: ignore[operator]
                ):
                    continue
                transitions.remind_approval(s, run, approval)
            reminded.append(approval_id)
        except Exception:  # one broken run must not hold up the others' reminders
            log.exception("could not remind approval %s of run %s", approval_id, run_id)
    return reminded
