"""Celery-style launch handles: ``MyWorkflow.delay(**input)`` and ``MyWorkflow.apply_async(...)``.

A launch from a host process sends the ``rubot.launch`` task by name on the runtime's Celery app — a message
with the workflow's name, its input and a run id chosen here — and returns a :class:`RunHandle` at once; nothing
is written to the database in the calling process (in a web request, the launch costs one broker message). The
worker validates the input and inserts the run under that id: bad input and unknown workflows become a failed
run with the reason, under the same id, so the handle always finds out what happened.

Reads go through SQL like ``pipeline.get_run``: the handle's ``status`` is ``"sent"`` until a worker recorded the
run. The waiting loop here is the one ``pipeline.wait`` uses.
"""

from __future__ import annotations

import re
import time
import uuid
from datetime import datetime
from typing import Any

from celery import current_task

from pipeline import runtime as rubot_runtime
from pipeline.errors import (
    DefinitionError,
    RunFailed,
    RunNotFound,
    WaitInsideTaskError,
    WaitTimeout,
)
from pipeline.runs import Run
from pipeline.store import queries
from pipeline.store.tables import COMPLETED, TERMINAL, WAITING

LAUNCH_TASK = "rubot.launch"
#: The message header holding a launch's input, subject and context (kept out of the task's arguments).
LAUNCH_HEADER = "rubot_launch"
RESTING = TERMINAL | {WAITING}
SENT = "sent"
_RUN_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,40}$")


def new_run_id() -> str:
    return f"run_{uuid.uuid4().hex}"


def check_run_id(run_id: Any) -> str:
    """A caller-chosen run id: 1-40 letters, digits or ``_ . : -`` (it is the run's primary key)."""
    if not isinstance(run_id, str) or not _RUN_ID.match(run_id):
        raise DefinitionError(f"run_id must be 1-40 letters, digits or _.:- characters, got {run_id!r}")
    return run_id


def send_launch(
    app: Any,
    workflow: str,
    input: Any = None,
    *,
    subject: Any = None,
    context: Any = None,
    run_id: str | None = None,
    queue: str = "rubot",
    countdown: float | None = None,
    eta: datetime | None = None,
) -> str:
    """Send ``rubot.launch`` by name on ``app`` (JSON, whatever the app's default) and return the run id."""
    run_id = check_run_id(run_id) if run_id is not None else new_run_id()
    options: dict[str, Any] = {}
    if countdown is not None:
        options["countdown"] = countdown
    if eta is not None:
        options["eta"] = eta
    # Arguments are what Flower and the worker's log show: ids only. The data travels in a message header.
    app.send_task(
        LAUNCH_TASK,
        args=[workflow],
        kwargs={"run_id": run_id},
        headers={LAUNCH_HEADER: {"input": input, "subject": subject, "context": context}},
        queue=queue,
        serializer="json",
        **options,
    )
    return run_id


def launch_data(request: Any) -> dict[str, Any] | None:
    """The input, subject and context a ``rubot.launch`` message carries in its header (``None`` for a message
    sent the older way, with the input in its arguments)."""
    data = getattr(request, LAUNCH_HEADER, None)
    if data is None:
        data = (getattr(request, "headers", None) or {}).get(LAUNCH_HEADER)
    return data if isinstance(data, dict) else None


class RunHandle:
    """What ``Workflow.delay`` returns: the run id at once, and the run from SQL once a worker recorded it."""

    def __init__(self, run_id: str, workflow: str, runtime: rubot_runtime.Runtime | None = None) -> None:
        self.id = run_id
        self.workflow = workflow
        self._runtime = runtime

    def __repr__(self) -> str:
        return f"<RunHandle {self.id} {self.workflow}>"

    @property
    def runtime(self) -> rubot_runtime.Runtime:
        return self._runtime or rubot_runtime.current()

    def run(self) -> Run | None:
        """The run as recorded now, or ``None`` while no worker has taken the launch yet."""
        rt = self.runtime
        try:
            with rt.db.transaction() as s:
                return Run(rt, queries.get_run(s, self.id))
        except RunNotFound:
            return None

    @property
    def status(self) -> str:
        """The run's status, or ``"sent"`` while the launch message waits for a worker."""
        found = self.run()
        return found.status if found is not None else SENT

    def wait(self, timeout: float | None = None) -> Run:
        """Block until the run rests (finished, or waiting for an approval) and return it."""
        return wait_for(self.runtime, self.id, RESTING, timeout=timeout, what="RunHandle.wait")

    def get(self, timeout: float | None = None) -> Any:
        """Like Celery's ``AsyncResult.get``: wait until the run is finished and return its output; a run that
        failed, was cancelled or was set aside raises :class:`RunFailed` (its ``details`` are ``run.error``)."""
        run = wait_for(self.runtime, self.id, TERMINAL, timeout=timeout, what="RunHandle.get")
        if run.status != COMPLETED:
            error = run.error or {}
            raise RunFailed(
                f"run {run.id} ({run.workflow}) is {run.status}: {error.get('reason', '?')}: "
                f"{error.get('message', '')}".rstrip(": "),
                details=error,
            )
        return run.output


def wait_for(
    rt: rubot_runtime.Runtime,
    run_id: str,
    statuses: frozenset[str] | set[str],
    *,
    timeout: float | None,
    what: str,
    missing_ok: bool = True,
) -> Run:
    """Wait until the run is in one of ``statuses``; ``WaitTimeout`` after ``timeout`` seconds. A run not recorded
    yet (a launch still in the broker) is waited for too, unless ``missing_ok`` is False.

    Woken by the transition that puts a run to rest (Postgres ``LISTEN``/``NOTIFY`` from any process, or a signal
    from a worker inside this one; see :mod:`pipeline.store.signals`), with a look at SQL every so often anyway:
    every 2 s while notifications arrive, else with a growing interval from 20 to 250 ms.
    """
    refuse_inside_task(what)
    deadline = None if timeout is None else time.monotonic() + timeout
    signals = rt.db.signals
    with signals.watching(run_id) as changed:
        poll = 0.02
        while True:
            status = rt.db.reading(lambda s: _status(s, run_id, missing_ok))
            if status in statuses:
                return rt.db.reading(lambda s: Run(rt, queries.get_run(s, run_id)))
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise WaitTimeout(f"run {run_id} is still {status} after {timeout}s")
            pause = 2.0 if signals.live and status != SENT else poll
            changed.wait(pause if remaining is None else min(pause, remaining))
            changed.clear()
            poll = min(poll * 1.5, 0.25)


def _status(s: Any, run_id: str, missing_ok: bool) -> str:
    try:
        return queries.run_status(s.connection(), run_id)
    except RunNotFound:
        if not missing_ok:
            raise
        return SENT


def refuse_inside_task(what: str) -> None:
    task = current_task._get_current_object()  # the proxy itself is never None
    if task is not None and getattr(task.request, "id", None) and not task.request.called_directly:
        raise WaitInsideTaskError(
            f"{what}() was called inside the Celery task {task.name!r}: waiting there would hold the worker "
            "the run needs. Use pipeline.enqueue() and react to the run's status instead."
        )
