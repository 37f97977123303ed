"""Which notifications an approval event produces, written as outbox rows in the event's transaction.

One row per approver for ``per_recipient`` notifiers (e-mail, each later signed with a link of its own) and one
per event for the others (a webhook). The message text is fixed when the row is written, so a retry sends the same
words; only the signed link is made when sending (it needs the secret key, which rows never hold).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from pipeline.notify.base import Directory, Notifier, SettingsDirectory
from pipeline.notify.links import LinkSigner
from pipeline.store.db import on_commit
from pipeline.store.tables import OUTBOX_PENDING, OutboxRow, utcnow

if TYPE_CHECKING:
    from pipeline.store.tables import ApprovalRow, RunRow

log = logging.getLogger("rubot.notify")

HEADLINES = {
    "requested": "An approval is waiting for you",
    "escalated": "An approval was escalated to you",
    "reminded": "Reminder: an approval is still waiting for you",
    "expired": "An approval expired without a decision",
}


class Planner:
    """The notification set-up of one runtime: notifiers, the directory, links, and how rows get sent."""

    def __init__(
        self,
        notifiers: Iterable[Notifier],
        *,
        directory: Directory | None = None,
        base_url: str | None = None,
        secret_key: str | None = None,
        link_max_age: int | None = None,
        dispatch: Callable[[str], None] | None = None,
        max_attempts: int = 10,
    ) -> None:
        self.notifiers = {n.name: n for n in notifiers}
        self.directory: Directory = directory or SettingsDirectory()
        self.base_url = (base_url or "").rstrip("/") or None
        self.signer = LinkSigner(secret_key, max_age=link_max_age or 3 * 24 * 3600) if secret_key else None
        self.dispatch = dispatch
        self.max_attempts = max_attempts
        if self.notifiers and self.signer is None:
            log.warning("RUBOT_WEB_SECRET_KEY is not set: notifications carry no signed approval links")

    def approval_url(self, run_id: str) -> str | None:
        return f"{self.base_url}/approvals/{run_id}" if self.base_url else None

    def link_url(self, token: str) -> str | None:
        return f"{self.base_url}/links/{token}" if self.base_url else None

    def write(self, s: Session, run: RunRow, approval: ApprovalRow, event: str) -> list[str]:
        ids: list[str] = []
        for notifier in self.notifiers.values():
            people = self.directory.approvers(approval.role, approval.assignee) if notifier.per_recipient else [None]
            for person in people:
                row = OutboxRow(
                    id=f"ntf_{uuid.uuid4().hex}",
                    run_id=run.id,
                    approval_id=approval.id,
                    event=event,
                    channel=notifier.name,
                    recipient=person.email if person is not None else None,
                    approver=person.as_json() if person is not None and event != "expired" else None,
                    message=message(run, approval, event),
                    status=OUTBOX_PENDING,
                    attempts=0,
                    created_at=utcnow(),
                )
                s.add(row)
                ids.append(row.id)
        if ids and self.dispatch is not None:
            dispatch = self.dispatch

            def send() -> None:
                for notification_id in ids:
                    dispatch(notification_id)

            on_commit(s, send)
        return ids


def message(run: RunRow, approval: ApprovalRow, event: str) -> dict[str, Any]:
    """Subject and text of a notification (the summary is redacted already; nothing else comes from the run)."""
    what = approval.summary or approval.reason or approval.step
    lines = [
        f"{HEADLINES.get(event, event)} (role {approval.role}).",
        "",
        f"Workflow: {run.workflow}",
        f"Run: {run.id}",
        f"Step: {approval.step}",
        f"Reason: {approval.reason}",
    ]
    if approval.summary:
        lines.append(f"Summary: {approval.summary}")
    if approval.tool:
        lines.append(f"Tool call: {approval.tool} (arguments hash {approval.args_hash})")
    if approval.expires_at is not None:
        lines.append(f"Expires: {approval.expires_at.isoformat()}")
    return {
        "subject": f"[Rubot] {HEADLINES.get(event, event)}: {what}",
        "text": "\n".join(lines),
        "workflow": run.workflow,
        "step": approval.step,
        "role": approval.role,
        "summary": approval.summary,
    }
