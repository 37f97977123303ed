"""Sending outbox rows: at least once, never lost, and not sent twice at the same moment.

:func:`send` (task ``rubot.send_notification``) claims a pending row for a short while, sends it outside any
transaction, then marks it ``sent``. A failure releases the claim and raises :class:`NotificationFailed`, which the
task retries with backoff; after ``max_attempts`` the row is marked ``failed`` with its last error. :func:`sweep`
(beat task ``rubot.sweep_notifications``) sends again every pending row nobody holds — the ones whose dispatch
message was lost with a crash between the commit and the send. A sender that dies after the notifier delivered
but before ``sent`` was recorded leaves the row to be sent again: at least once, deduplicable by its id.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import or_, select

from pipeline.errors import NotificationFailed
from pipeline.notify.base import Notification
from pipeline.store.tables import OUTBOX_FAILED, OUTBOX_PENDING, OUTBOX_SENT, OutboxRow, as_utc, utcnow

if TYPE_CHECKING:
    from pipeline.notify.planner import Planner
    from pipeline.store.db import Database

log = logging.getLogger("rubot.notify")

#: The task that sends one outbox row, and the beat task that re-sends rows left pending.
SEND_TASK = "rubot.send_notification"
SWEEP_TASK = "rubot.sweep_notifications"
# Long enough for a slow SMTP server; a sender that died is replaced after it.
CLAIM_SECONDS = 120
# The sweep leaves fresh rows to the message sent right after their commit.
SWEEP_MIN_AGE_SECONDS = 10


def send(db: Database, planner: Planner, outbox_id: str) -> str:
    """Send one row; returns ``sent``, or why nothing was sent (``done``, ``held``, ``no_notifier``)."""
    now = utcnow()
    with db.transaction() as s:
        row = s.get(OutboxRow, outbox_id, with_for_update=True)
        if row is None or row.status != OUTBOX_PENDING:
            return "done"
        if row.claimed_until is not None and as_utc(row.claimed_until) > now:  # type: ignore[operator]
            return "held"
        notifier = planner.notifiers.get(row.channel)
        if notifier is None:
            row.last_error = f"no notifier named {row.channel!r} is configured in this process"
            return "no_notifier"
        row.claimed_until = now + timedelta(seconds=CLAIM_SECONDS)
        row.attempts += 1
        notification = build(planner, row)
    try:
        notifier.send(notification)
    except Exception as exc:
        failed = _release(db, outbox_id, f"{type(exc).__name__}: {exc}", planner.max_attempts)
        log.warning("notification %s (%s) not sent: %s%s", outbox_id, notifier.name, exc, " (gave up)" * failed)
        raise NotificationFailed(f"notification {outbox_id} via {notifier.name} failed: {exc}") from exc
    with db.transaction() as s:
        row = s.get(OutboxRow, outbox_id, with_for_update=True)
        if row is not None:
            row.status, row.sent_at, row.claimed_until, row.last_error = OUTBOX_SENT, utcnow(), None, None
    return "sent"


def _release(db: Database, outbox_id: str, error: str, max_attempts: int) -> bool:
    with db.transaction() as s:
        row = s.get(OutboxRow, outbox_id, with_for_update=True)
        if row is None:
            return False
        row.claimed_until, row.last_error = None, error[:2000]
        if row.attempts >= max_attempts:
            row.status = OUTBOX_FAILED
            return True
    return False


def build(planner: Planner, row: OutboxRow) -> Notification:
    """The notification of ``row``; per-approver rows get their signed link here (the row never holds one)."""
    message = dict(row.message or {})
    link = None
    if row.approver and planner.signer is not None and planner.base_url:
        token = planner.signer.sign(
            link_id=row.id, approval_id=row.approval_id, run_id=row.run_id, approver=row.approver
        )
        link = planner.link_url(token)
    approval_url = planner.approval_url(row.run_id)
    text = message.get("text", "")
    if link:
        days = round(planner.signer.max_age / 86400, 1) if planner.signer else 0
        text += f"\n\nOpen it and decide (this link is for you alone, works once and expires in {days:g} days):\n{link}"
    if approval_url:
        text += f"\n\nThe approval page (sign-in needed): {approval_url}"
    return Notification(
        id=row.id,
        event=row.event,
        channel=row.channel,
        recipient=row.recipient,
        subject=message.get("subject", "[Rubot] approval"),
        text=text,
        run_id=row.run_id,
        approval_id=row.approval_id,
        workflow=message.get("workflow", ""),
        step=message.get("step", ""),
        role=message.get("role", ""),
        summary=message.get("summary"),
        approval_url=approval_url,
        link=link,
    )


def sweep(db: Database, dispatch: Callable[[str], None], *, now: datetime | None = None, limit: int = 500) -> list[str]:
    """Dispatch every pending row nobody holds and that is older than a few seconds; returns their ids."""
    now = now or utcnow()
    query = (
        select(OutboxRow.id)
        .where(
            OutboxRow.status == OUTBOX_PENDING,
            or_(OutboxRow.claimed_until.is_(None), OutboxRow.claimed_until < now),
            OutboxRow.created_at <= now - timedelta(seconds=SWEEP_MIN_AGE_SECONDS),
        )
        .order_by(OutboxRow.created_at)
        .limit(limit)
    )
    with db.transaction() as s:
        ids = list(s.execute(query).scalars())
    for outbox_id in ids:
        dispatch(outbox_id)
    return ids
