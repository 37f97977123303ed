"""Start runs by workflow *name*, for a host process that does not import the workflow classes.

It only needs a Celery app reaching the broker of the workers that run Rubot (the host's own app, with or
without ``pipeline.install``); the ``rubot.launch`` task runs there. Processes that import the workflow classes
use ``MyWorkflow.delay(...)`` instead (:mod:`pipeline.handles`), which sends the same message.

    from pipeline.client import launch
    run_id = launch(celery_app, "ConferenceTravelReviewWorkflow", {"employee_id": "emp_42", ...})

In Django, call it in ``transaction.on_commit`` when the input refers to rows written in the same request.
"""

from __future__ import annotations

from typing import Any

from pipeline.handles import LAUNCH_TASK, send_launch

__all__ = ["LAUNCH_TASK", "launch"]


def launch(
    app: Any,
    workflow: str,
    input: Any = None,
    *,
    subject: Any = None,
    context: Any = None,
    run_id: str | None = None,
    queue: str = "rubot",
) -> str:
    """Send ``rubot.launch`` by name and return the run id (chosen here, so the caller can track it).

    An unknown workflow or bad input is recorded by the worker as a failed run under this id."""
    return send_launch(app, workflow, input, subject=subject, context=context, run_id=run_id, queue=queue)
