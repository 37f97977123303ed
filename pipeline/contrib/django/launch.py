"""Launch a workflow when the current database transaction commits (Django's ``transaction.on_commit``).

A view that writes a row and launches a run about it must not let a worker start before the row is committed
(or at all, if the transaction rolls back). These helpers choose the run id now — so the view can answer with
it — and send ``rubot.launch`` from ``on_commit``. Outside a transaction (autocommit) they send at once.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from pipeline.handles import RunHandle, new_run_id


def launch_on_commit(
    workflow: Any,
    input: Any = None,
    *,
    subject: Any = None,
    context: Any = None,
    run_id: str | None = None,
    countdown: float | None = None,
    using: str | None = None,
) -> RunHandle:
    """``workflow.apply_async(...)`` once the transaction on ``using`` commits; the handle is returned now."""
    run_id = run_id or new_run_id()

    def send() -> None:
        workflow.apply_async(kwargs=input, subject=subject, context=context, run_id=run_id, countdown=countdown)

    transaction.on_commit(send, using=using)
    return RunHandle(run_id, workflow.name)


def delay_on_commit(workflow: Any, /, **input: Any) -> RunHandle:
    """``workflow.delay(**input)`` once the transaction commits (like Celery's ``delay_on_commit``)."""
    return launch_on_commit(workflow, input)
