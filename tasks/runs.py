"""Thin task entry points. Each takes ids, calls into ``pipeline`` and decides only what Celery should do
next (go on with the chain, or stop it). :func:`register` binds them to an app under their stable names."""

from __future__ import annotations

from typing import Any

from celery import Celery
from sqlalchemy.exc import InterfaceError, OperationalError

from pipeline import api, compiler, dispatch, executor
from pipeline.runtime import Runtime

# Infrastructure hiccups (database restarted, connection dropped) are retried; everything else is a run outcome.
RETRY = {"autoretry_for": (OperationalError, InterfaceError), "retry_backoff": True, "retry_backoff_max": 30,
         "max_retries": 20}


def register(app: Celery, runtime: Runtime) -> None:
    """Register the ``rubot.*`` tasks on ``app``; they use ``runtime`` (never a thread-local current app)."""

    @app.task(name=compiler.STEP_TASK, shared=False, bind=True, ignore_result=True, **RETRY)
    def step(self: Any, run_id: str, step_name: str) -> str:
        outcome = executor.execute_step(runtime, run_id, step_name, task_id=self.request.id)
        if outcome is not executor.Outcome.CONTINUE:
            self.request.chain = None  # the run is parked, failed or cancelled: send nothing after this step
        # Chord members return their own id so the join can forget their result keys.
        return self.request.id

    @app.task(name=compiler.JOIN_TASK, shared=False, bind=True, ignore_result=True, **RETRY)
    def join(self: Any, results: list[Any], run_id: str, group_name: str) -> None:
        if not dispatch.join(runtime, results, run_id, group_name):
            self.request.chain = None

    @app.task(name=compiler.FINISH_TASK, shared=False, ignore_result=True, **RETRY)
    def finish(run_id: str) -> None:
        dispatch.finish(runtime, run_id)

    @app.task(name=compiler.RESUME_TASK, shared=False, ignore_result=True, **RETRY)
    def resume(run_id: str, expected_seq: int | None = None) -> None:
        dispatch.resume(runtime, run_id, expected_seq)

    @app.task(name=compiler.LAUNCH_TASK, shared=False, ignore_result=True, **RETRY)
    def launch(workflow: str, input: Any = None, subject: Any = None, context: Any = None,
               run_id: str | None = None) -> str:
        """Entry point for host apps: ``send_task("rubot.launch", args=[name, input], kwargs={...})``."""
        return api.create(runtime, workflow, input=input, subject=subject, context=context, run_id=run_id,
                          record_invalid=True)
