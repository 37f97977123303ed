"""Start runs from a host application (Flask, Django) through the host's own Celery app.

Nothing here imports Rubot's ``config`` or ``tasks`` packages, so a host project with top-level packages of
the same names (cookiecutter-django has ``config``) can use it. The host's app only needs to reach the same
broker; the ``rubot.launch`` task runs on Rubot's worker.

    from pipeline.client import launch
    run_id = launch(celery_app, "ConferenceTravelReviewWorkflow", {"employee_id": "emp_42", ...})

In Django, call it in ``transaction.on_commit`` when the input refers to rows written in the same request.
"""

from __future__ import annotations

import uuid
from typing import Any

LAUNCH_TASK = "rubot.launch"


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
    """Send ``rubot.launch`` by name and return the run id (chosen here, so the caller can track it)."""
    run_id = run_id or f"run_{uuid.uuid4().hex}"
    app.send_task(
        LAUNCH_TASK,
        args=[workflow, input],
        kwargs={"subject": subject, "context": context, "run_id": run_id},
        queue=queue,
        serializer="json",
    )  # JSON even if the host's default is something else
    return run_id
