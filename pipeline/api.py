"""The public entry points: ``enqueue``, ``run``, ``wait``, ``get_run``, ``list_runs``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pipeline import routing, runtime
from pipeline.definitions import registry, schemas
from pipeline.definitions.workflow import Workflow
from pipeline.engine import admission, dispatch, transitions
from pipeline.errors import DefinitionError, RubotError, RunError, RunIdInUse
from pipeline.handles import RESTING, check_run_id, refuse_inside_task, wait_for
from pipeline.runs import Run
from pipeline.store import queries
from pipeline.store.tables import QUEUED, RunRow, utcnow


def workflow_class(workflow: type[Workflow] | str, rt: runtime.Runtime) -> type[Workflow]:
    if isinstance(workflow, str):
        return registry.workflow(workflow, modules=rt.settings.workflow_modules)
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
    batch_id: str | None = None,
    parent_run_id: str | None = None,
    seed: Callable[[Session, RunRow], None] | None = None,
) -> str:
    """Validate and insert a queued run, then ask a worker to start it.

    Bad input raises ``InvalidRunInput`` (with the field errors) before anything is written. With
    ``record_invalid`` (launches sent by a host, where nobody could catch the exception) an unknown workflow or
    bad input is recorded as a failed run under ``run_id`` instead (reason ``unknown_workflow`` /
    ``invalid_input``), so the mistake is visible where the host will look and no step runs.

    ``run_id`` is the idempotency key: a launch delivered twice, or two launches racing with the same id (a
    duplicated beat tick), create one run; the insert that loses the race is not an error.

    ``seed(session, row)`` runs in the insert's transaction before the first segment is planned (a replay
    fills the new run's ledger with the results it reuses there).
    """
    rt.db.check_migrated()
    run_id = check_run_id(run_id) if run_id is not None else queries.new_id("run")
    try:
        cls = workflow_class(workflow, rt)
        data = cls.validate_input(input)
        context = schemas.to_json(context if context is not None else {}, what="run context")
        subject = schemas.to_json(subject, what="run subject")
    except (RunError, DefinitionError) as exc:
        if not record_invalid:
            raise
        name = workflow if isinstance(workflow, str) else getattr(workflow, "name", repr(workflow))
        _record_rejected_launch(rt, run_id, str(name), exc, batch_id=batch_id)
        return run_id
    try:
        with rt.db.transaction() as s:
            existing = s.get(RunRow, run_id)
            if existing is not None:
                if existing.workflow != cls.name:
                    raise RunIdInUse(f"run id {run_id!r} belongs to a {existing.workflow} run, not {cls.name}")
                # The same launch delivered again: the run exists and was dispatched when it was inserted (a
                # dispatch lost to a crash right after that commit is picked up by the sweeper as a stalled run).
                return run_id
            send = insert_run(
                s,
                rt,
                cls,
                run_id,
                data,
                subject=subject,
                context=context,
                batch_id=batch_id,
                parent_run_id=parent_run_id,
                seed=seed,
            )
    except IntegrityError:
        # Another process inserted the same run id between our check and our insert (two deliveries of one
        # launch, two beats for one tick): that run is the one, and its creator dispatches it.
        with rt.db.transaction() as s:
            other = s.get(RunRow, run_id)
            if other is None:
                raise
            if other.workflow != cls.name:
                raise RunIdInUse(f"run id {run_id!r} belongs to a {other.workflow} run, not {cls.name}") from None
        return run_id
    send()
    return run_id


def insert_run(
    s: Any,
    rt: runtime.Runtime,
    cls: type[Workflow],
    run_id: str,
    data: Any,
    *,
    subject: Any,
    context: Any,
    batch_id: str | None = None,
    parent_run_id: str | None = None,
    seed: Callable[[Session, RunRow], None] | None = None,
) -> dispatch.Send:
    """Insert a queued run (input already validated) in the caller's transaction and decide its first segment;
    returns what to send once that transaction commits. ``seed`` runs before the segment is planned."""
    row = RunRow(
        id=run_id,
        workflow=cls.name,
        status=QUEUED,
        input=data,
        context=context,
        subject=subject,
        user_id=admission.user_of(context),
        subject_key=admission.subject_key(subject),
        batch_id=batch_id,
        parent_run_id=parent_run_id,
        state={},
        dispatch_seq=0,
        created_at=utcnow(),
    )
    s.add(row)
    s.flush()  # the run row first: events reference it (a concurrent insert of the same id fails here)
    queries.add_event(
        s,
        run_id,
        "run.enqueued",
        workflow=cls.name,
        subject=subject,
        **({"parent_run_id": parent_run_id} if parent_run_id else {}),
    )
    if seed is not None:
        seed(s, row)
    # Admission and the first segment are decided here, in the insert's transaction: no resume hop.
    return dispatch.plan_next(s, rt, row, cls)


def _record_rejected_launch(
    rt: runtime.Runtime, run_id: str, workflow: str, exc: RubotError, *, batch_id: str | None
) -> None:
    try:
        with rt.db.transaction() as s:
            if s.get(RunRow, run_id) is None:  # else: a redelivered launch message, recorded already
                transitions.reject_launch(s, run_id, workflow[:200], exc.as_dict(), batch_id=batch_id)
    except IntegrityError:
        pass  # a concurrent delivery recorded it first


def enqueue(
    workflow: type[Workflow] | str,
    input: Any = None,
    *,
    subject: Any = None,
    context: Any = None,
    run_id: str | None = None,
) -> Run:
    """Start a run and return at once (status ``queued``).

    Inside an Operation's routing (executed by a worker) this launches a child run of the operation's run,
    recorded in its ledger first, so the routing executed again gets the same child back.
    """
    router = routing.current()
    if router is not None:
        if run_id is not None:
            raise DefinitionError(
                "run_id= cannot be given inside an Operation's routing: child run ids are chosen there"
            )
        return router.enqueue(workflow, input, subject=subject, context=context)
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
    """Start a run and wait until it completes, fails, is cancelled or waits for an approval.

    Inside an Operation's routing this is a durable child launch and wait: the operation's run parks
    (``waiting_for_child``) until the child comes to rest, and the routing carries on with the child's ``Run``,
    whatever its outcome (a failed child is a ``Run`` with ``status == "failed"``, not an exception).
    """
    router = routing.current()
    if router is not None:
        return router.wait(router.enqueue(workflow, input, subject=subject, context=context))
    refuse_inside_task("pipeline.run")
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


def migrate() -> str | None:
    """Create or upgrade Rubot's tables in the current runtime's database (Alembic); returns the revision."""
    from pipeline.store.migrate import upgrade

    return upgrade(runtime.current().db)


def wait(run: Run | str, *, timeout: float | None = None) -> Run:
    """Block until the run rests (final or waiting for approval); ``WaitTimeout`` after ``timeout`` seconds.

    Woken by the transition that puts the run to rest (Postgres ``LISTEN``/``NOTIFY``, or a signal inside this
    process), with a look at SQL every so often in case a notification cannot reach us (a SQLite worker in
    another process). Calling it inside a worker task is an error: the task would hold the worker the run needs.
    """
    router = routing.current()
    if router is not None:
        return router.wait(run)
    run_id = run if isinstance(run, str) else run.id
    return wait_for(runtime.current(), run_id, RESTING, timeout=timeout, what="pipeline.wait", missing_ok=False)
