"""The beat task that expires overdue approvals: ``rubot.expire_approvals`` (scheduled in ``config/celery.py``)."""

from __future__ import annotations

from celery import Celery

from pipeline.engine import expiry
from pipeline.runtime import Runtime


def register(app: Celery, runtime: Runtime) -> None:
    """Register ``rubot.expire_approvals`` on ``app``; it uses ``runtime`` (never a thread-local current app)."""

    # No autoretry: the sweep is idempotent and beat sends the next one within a sweep interval anyway.
    @app.task(name=expiry.SWEEP_TASK, shared=False, ignore_result=True)
    def expire_approvals() -> int:
        """Resolve the approvals past their deadline (reject or escalate); returns how many it resolved."""
        return len(expiry.expire_approvals(runtime))
