"""Which runs the work in this context has failed, so the Celery task doing it can say so.

A task's own return value is what Celery (and Flower) show. Runs fail deep inside the engine — a budget checked
before a model call, an invalid final answer, a model error — always through ``transitions.fail``, which notes
the run here once its transaction has committed (a rolled-back failure is no failure). A task wraps its work in
:func:`watching` and, when its run is among the failed, reports the failure to Celery (``rubot.agent_turn``
raises :class:`pipeline.errors.RunFailed`).
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.orm import Session

from pipeline.store.aftercommit import on_commit

_failed: contextvars.ContextVar[set[str] | None] = contextvars.ContextVar("rubot_failed_runs", default=None)


def note(session: Session, run_id: str) -> None:
    """Record that ``run_id`` failed, once ``session`` commits (only when someone is watching)."""
    failed = _failed.get()
    if failed is not None:
        on_commit(session, lambda: failed.add(run_id))


@contextmanager
def watching() -> Iterator[set[str]]:
    """The ids of the runs failed (and committed) while the block runs in this context."""
    failed: set[str] = set()
    token = _failed.set(failed)
    try:
        yield failed
    finally:
        _failed.reset(token)
