"""The beat task collecting Message Batches results: ``rubot.collect_batches`` (scheduled in ``config/celery.py``)."""

from __future__ import annotations

from celery import Celery

from pipeline.llm import batch_collect
from pipeline.runtime import Runtime


def register(app: Celery, runtime: Runtime) -> None:
    """Register ``rubot.collect_batches`` on ``app``; it uses ``runtime`` (never a thread-local current app)."""

    # No autoretry: collecting is idempotent (settled requests are skipped) and beat sends the next one anyway.
    @app.task(name=batch_collect.COLLECT_TASK, shared=False, ignore_result=True)
    def collect_batches() -> dict[str, int]:
        """Record the turns of ended batches and resume their runs; returns what it did."""
        return batch_collect.collect(runtime)
