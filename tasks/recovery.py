"""The beat-driven sweeper task: ``rubot.recover`` takes over runs whose worker died."""

from __future__ import annotations

from celery import Celery

from pipeline.engine import recovery
from pipeline.runtime import Runtime

RECOVER_TASK = "rubot.recover"


def register(app: Celery, runtime: Runtime) -> None:
    @app.task(name=RECOVER_TASK, shared=False, ignore_result=True)
    def recover() -> int:
        return len(recovery.sweep(runtime))
