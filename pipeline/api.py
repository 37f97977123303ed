"""The public entry points: ``enqueue``, ``run``, ``wait``, ``get_run``, ``list_runs``."""

from __future__ import annotations

import time
from typing import Any

from celery import current_task

from pipeline import runtime
from pipeline.definitions import registry, schemas
from pipeline.definitions.workflow import Workflow
from pipeline.engine import admission, dispatch
from pipeline.errors import DefinitionError, RunError, RunIdInUse, WaitInsideTaskError, WaitTimeout
from pipeline.runs import Run
from pipeline.store import queries
from pipeline.store.tables import FAILED, QUEUED, TERMINAL, WAITING, RunRow, utcnow

RESTING = TERMINAL | {WAITING}


def _workflow_class(workflow: type[Workflow] | str, rt: runtime.Runtime) -> type[Workflow]:
    if isinstance(workflow, str):
        return registry.workflow(workflow, modules=rt.settings.workflow_modules)  # type: ignore[return-value]
    if isinstance(workflow, type) and issubclass(workflow, Workflow) and workflow is not Workflow:
        return workflow
    raise DefinitionError(f"expected a Workflow subclass or a workflow name, got {workflow!r}")


def create(
    rt: runtime.Runtime,
    workflow: type[Workflow] | str,
    *,
    input: Any = None,
    subject: Any = None,
    context: Any = None,
    run_id: str | None = None,
    record_invalid: bool = False,
) -> str:
    """Validate and insert a queued run, then ask a worker to start it.

    Bad input raises ``InvalidRunInput`` (with the field errors) before anything is written. With
    ``record_invalid`` (launches from a host app's task, where nobody could catch the exception) the run is
    recorded as failed with reason ``invalid_input`` instead, so the mistake is visible and no step runs.
    """
    rt.db.check_migrated()
    cls = _workflow_class(workflow, rt)
    run_id = run_id or queries.new_id("run")
    try:
        data = cls.validate_input(input)
        context = schemas.to_json(context if context is not None else {}, what="run context")
        subject = schemas.to_json(subject, what="run subject")
    except RunError as exc:
        if not record_invalid:
            raise
        _record_rejected_launch(rt, run_id, cls.name, exc)
        return run_id
    with rt.db.transaction() as s:
        existing = s.get(RunRow, run_id)
        if existing is not None:
            if existing.workflow != cls.name:
                raise RunIdInUse(f"run id {run_id!r} belongs to a {existing.workflow} run, not {cls.name}")
            # The same launch delivered again: the run exists and was dispatched when it was inserted (a
            # dispatch lost to a crash right after that commit is picked up by the sweeper as a stalled run).
            return run_id
        row = RunRow(
            id=run_id,
            workflow=cls.name,
            status=QUEUED,
            input=data,
            context=context,
            subject=subject,
            user_id=admission.user_of(context),
            subject_key=admission.subject_key(subject),
            state={},
            dispatch_seq=0,
            created_at=utcnow(),
        )
        s.add(row)
        s.flush()  # the run row first: events reference it
        queries.add_event(s, run_id, "run.enqueued", workflow=cls.name, subject=subject)
        # Admission and the first segment are decided here, in the insert's transaction: no resume hop.
        send = dispatch.plan_next(s, rt, row, cls)
    send()
    return run_id


def _record_rejected_launch(rt: runtime.Runtime, run_id: str, workflow: str, exc: RunError) -> None:
    with rt.db.transaction() as s:
        if s.get(RunRow, run_id) is not None:  # a redelivered launch message: recorded already
            return
        s.add(
            RunRow(
                id=run_id,
                workflow=workflow,
                status=FAILED,
                input=None,
                context={},
                state={},
                error=exc.as_dict(),
                dispatch_seq=0,
                created_at=utcnow(),
                finished_at=utcnow(),
            )
        )
        s.flush()
        queries.add_event(s, run_id, "run.rejected", workflow=workflow, **exc.as_dict())


def enqueue(
    workflow: type[Workflow] | str,
    input: Any = None,
    *,
    subject: Any = None,
    context: Any = None,
    run_id: str | None = None,
) -> Run:
    """Start a run and return at once (status ``queued``)."""
    rt = runtime.current()
    return get_run(create(rt, workflow, input=input, subject=subject, context=context, run_id=run_id))


def run(
    workflow: type[Workflow] | str,
    input: Any = None,
    *,
    subject: Any = None,
    context: Any = None,
    timeout: float | None = None,
) -> Run:
    """Start a run and wait until it completes, fails, is cancelled or waits for an approval."""
    _refuse_inside_task("pipeline.run")
    return wait(enqueue(workflow, input, subject=subject, context=context), timeout=timeout)


def get_run(run_id: str) -> Run:
    rt = runtime.current()
    return rt.db.reading(lambda s: Run(rt, queries.get_run(s, run_id)))


def list_runs(*, status: str | list[str] | None = None, workflow: str | None = None, limit: int = 50) -> list[Run]:
    rt = runtime.current()
    statuses = [status] if isinstance(status, str) else status
    return rt.db.reading(
        lambda s: [Run(rt, row) for row in queries.list_runs(s, statuses=statuses, workflow=workflow, limit=limit)]
    )


def wait(run: Run | str, *, timeout: float | None = None) -> Run:
    """Block until the run rests (final or waiting for approval); ``WaitTimeout`` after ``timeout`` seconds.

    Woken by the transition that puts the run to rest (Postgres ``LISTEN``/``NOTIFY``, or a signal inside this
    process), with a look at SQL every so often in case a notification cannot reach us (a SQLite worker in
    another process). Calling it inside a worker task is an error: the task would hold the worker the run needs.
    """
    _refuse_inside_task("pipeline.wait")
    run_id = run if isinstance(run, str) else run.id
    rt = runtime.current()
    deadline = None if timeout is None else time.monotonic() + timeout
    signals = rt.db.signals
    with signals.watching(run_id) as changed:
        poll = 0.02
        while True:
            status = rt.db.reading(lambda s: queries.run_status(s.connection(), run_id))
            if status in RESTING:
                return get_run(run_id)
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise WaitTimeout(f"run {run_id} is still {status} after {timeout}s")
            # With notifications from every process, SQL is only a safety net; without, poll with backoff.
            pause = 2.0 if signals.live else poll
            changed.wait(pause if remaining is None else min(pause, remaining))
            changed.clear()
            poll = min(poll * 1.5, 0.25)


def _refuse_inside_task(what: str) -> None:
    task = current_task._get_current_object()  # the proxy itself is never None
    if task is not None and getattr(task.request, "id", None) and not task.request.called_directly:
        raise WaitInsideTaskError(
            f"{what}() was called inside the Celery task {task.name!r}: waiting there would hold the worker "
            "the run needs. Use pipeline.enqueue() and react to the run's status instead."
        )
