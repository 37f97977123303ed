"""Work that must wait until a transaction has committed (sending a message, calling a hook, waking a waiter).

:meth:`pipeline.store.db.Database.transaction` runs the callbacks registered here after its commit, outside the
transaction, and drops them when it rolls back.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.orm import Session

KEY = "rubot_after_commit"


def on_commit(session: Session, callback: Callable[[], None]) -> None:
    """Call ``callback`` once ``session``'s transaction has committed."""
    session.info.setdefault(KEY, []).append(callback)


def take(session: Session) -> list[Callable[[], None]]:
    """The callbacks registered on ``session``, removed from it."""
    return session.info.pop(KEY, [])
