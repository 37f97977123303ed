"""The outbox: notifications written in the transaction that changes an approval, sent after it commits.

:func:`write` is called by :mod:`pipeline.engine.transitions` when an approval is requested, escalated, reminded or
expires. It asks the runtime's :class:`~pipeline.notify.planner.Planner` (found in the session, like the hooks)
which messages to send, inserts one ``rubot_outbox`` row per message and, once the transaction commits, sends
``rubot.send_notification(row_id)``. A rolled-back change writes nothing; a crash after the commit leaves rows
that the beat sweep sends. Without a planner (no notifier configured) nothing is written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from pipeline.store.tables import ApprovalRow, RunRow

#: Where a session finds its runtime's notification planner (``Database.session_info``).
PLANNER_KEY = "rubot_notify_planner"


def write(s: Session, run: RunRow, approval: ApprovalRow, event: str) -> list[str]:
    """Insert the outbox rows for ``event`` on ``approval``; returns their ids (empty without a planner)."""
    planner: Any = s.info.get(PLANNER_KEY)
    if planner is None:
        return []
    return planner.write(s, run, approval, event)
