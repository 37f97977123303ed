"""Durable Operations: an Operation's routing runs in a worker as a parent run that launches and awaits children.

An :class:`~pipeline.definitions.operation.Operation` gets a synthetic workflow of one step (``route``, a
:class:`~pipeline.definitions.dsl.RouteStep`). Its run — the *operation's run* — is enqueued like any run; the
``rubot.step`` task of ``route`` calls :func:`start_routing` (a deferred starter, like an agent step's), which:

1. reads the run and the children its routing launched so far (ledger rows ``route/child-1``, ``route/child-2``,
   ... of kind ``child_run``, each holding the child's run id and workflow);
2. executes the routing (the operation's ``launch`` code, as written) with a :class:`ChildRouter` set in
   :mod:`pipeline.routing`, so ``pipeline.enqueue`` / ``run`` / ``wait`` inside it become:

   - the n-th launch: if ``route/child-n`` is recorded, the recorded child (a different workflow there fails the
     run with ``routing_changed``); else ONE transaction records ``route/child-n`` and inserts the child run
     (``parent_run_id`` set), and the child is dispatched after the commit. A routing executed again — after a
     crash of the worker, or because a child came to rest — therefore finds the same children instead of
     launching others;
   - a wait: the child's ``Run`` if it is at rest (final or waiting for an approval); else the routing stops there
     (:class:`_Park`) and the operation's run parks in ``waiting_for_child``, holding nothing but rows;
3. when the routing returns, records ``route`` with what it returned (a ``Run`` is recorded by id) and completes
   the operation's run in the same transaction.

A child coming to rest moves its waiting parent back to ``running`` in its own transition
(:mod:`pipeline.engine.transitions`) and the parent's routing is dispatched again
(:mod:`pipeline.engine.children`): it replays the recorded children and goes on from the first one not at rest.
So the routing must be deterministic given its input and its children's outcomes, as in Temporal or DBOS
workflows: no clock, no randomness, no reads of changing data to choose what to launch (a child's own steps are
the place for those).
"""

from __future__ import annotations

import copy
import types
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import IntegrityError

from pipeline import api, routing
from pipeline import runtime as rubot_runtime
from pipeline.definitions import registry, schemas
from pipeline.definitions.dsl import RouteStep
from pipeline.definitions.registry import workflow_of
from pipeline.definitions.workflow import Workflow
from pipeline.engine import bodies, dispatch, transitions
from pipeline.errors import DefinitionError, RoutingChanged, StepFailed, UnknownOperationError
from pipeline.handles import RESTING
from pipeline.runs import Run
from pipeline.store import queries
from pipeline.store.tables import DONE, RUNNING

if TYPE_CHECKING:
    from pipeline.definitions.operation import Operation
    from pipeline.runtime import Runtime

ROUTE_STEP = "route"
CHILD_PREFIX = f"{ROUTE_STEP}/child-"
#: How often one delivery executes the routing again at once because the child it was about to wait for came to
#: rest meanwhile (each time it gets further: a bound against a bug, never reached by a working routing).
MAX_REPLAYS = 100


class _Park(BaseException):
    """The routing waits for a child not at rest yet. A BaseException, so routing code that catches ``Exception``
    cannot swallow it."""

    def __init__(self, child_run_id: str) -> None:
        super().__init__(child_run_id)
        self.child_run_id = child_run_id


class _Stop(BaseException):
    """The operation's run is no longer running (cancelled, failed meanwhile): the routing stops here."""


def workflow_for(operation: type[Operation]) -> type[Workflow]:
    """The synthetic workflow whose runs are ``operation``'s runs (registered under the operation's name)."""

    def body(namespace: dict[str, Any]) -> None:
        namespace["__module__"] = operation.__module__
        namespace["__qualname__"] = f"{operation.__qualname__}.workflow"
        namespace["__doc__"] = f"The runs of the Operation {operation.name}: its routing, as one step."
        namespace["name"] = operation.name
        namespace["input_schema"] = operation.input_schema
        namespace[ROUTE_STEP] = RouteStep(operation=operation, name=ROUTE_STEP)

    return types.new_class(f"{operation.__name__}Workflow", (Workflow,), exec_body=body)


def returned_run(run: Run) -> Run:
    """What ``Operation.launch`` hands back: the run the routing returned, as it is now, else the operation's run."""
    if run.status == "completed" and isinstance(run.output, dict):
        recorded = next((e for e in run.effects if e.op_key == ROUTE_STEP), None)
        run_id = (recorded.result or {}).get("returned_run_id") if recorded is not None else None
        if run_id:
            return api.get_run(run_id)
    return run


class ChildRouter:
    """What ``pipeline.enqueue`` / ``run`` / ``wait`` do inside one execution of an operation's routing."""

    def __init__(self, runtime: Runtime, parent: Any, recorded: dict[str, dict[str, Any]]) -> None:
        self.runtime = runtime
        self.parent_id: str = parent.id
        self.parent_context = parent.context
        self.recorded = recorded
        self.launched = 0

    def _get(self, run_id: str) -> Run:
        rt = self.runtime
        return rt.db.reading(lambda s: Run(rt, queries.get_run(s, run_id)))

    def enqueue(self, workflow: Any, input: Any, *, subject: Any, context: Any) -> Run:
        rt = self.runtime
        self.launched += 1
        op_key = f"{CHILD_PREFIX}{self.launched}"
        cls = api.workflow_class(workflow, rt)
        found = self.recorded.get(op_key)
        if found is not None:
            return self._recorded(op_key, found, cls.name)
        data = cls.validate_input(input)  # bad input raises in the routing, before anything is written
        context = schemas.to_json(context if context is not None else self.parent_context or {}, what="run context")
        subject = schemas.to_json(subject, what="run subject")
        child_id = queries.new_id("run")
        send = None
        try:
            with rt.db.transaction() as s:
                parent = queries.lock_run(s, self.parent_id)
                if parent.status == RUNNING:  # else cancelled or failed meanwhile: launch nothing more
                    transitions.launch_child(s, parent, op_key, child_id, cls.name)
                    send = api.insert_run(
                        s, rt, cls, child_id, data, subject=subject, context=context, parent_run_id=parent.id
                    )
        except IntegrityError:
            # Another execution of this routing (a duplicated delivery) recorded this launch first: its child stands.
            with rt.db.transaction() as s:
                row = queries.get_effect(s, self.parent_id, op_key)
                result = dict(row.result or {}) if row is not None else None
            if result is None:
                raise
            return self._recorded(op_key, result, cls.name)
        if send is None:
            raise _Stop
        send()
        return self._get(child_id)

    def _recorded(self, op_key: str, found: dict[str, Any], workflow: str) -> Run:
        if found.get("workflow") != workflow:
            raise RoutingChanged(
                f"the routing launched {workflow} as its launch {op_key!r}, but {found.get('workflow')} was recorded "
                "there: routing must decide only from its input and its children's outcomes",
                details={"op_key": op_key, "recorded": found.get("workflow"), "now": workflow},
            )
        return self._get(found["run_id"])

    def wait(self, run: Run | str) -> Run:
        child = self._get(run if isinstance(run, str) else run.id)
        if child.parent_run_id != self.parent_id:
            raise DefinitionError(
                f"inside an Operation's routing, pipeline.wait() waits only for runs the routing launched; "
                f"{child.id} is not one of them"
            )
        if child.status in RESTING:
            return child
        raise _Park(child.id)


def start_routing(
    runtime: Runtime, run_id: str, spec: RouteStep, step_input: Any, *, task_id: str | None = None
) -> None:
    """The deferred starter of ``route`` (see the module docstring); exceptions of the routing fail the run."""
    operation = spec.operation
    for _ in range(MAX_REPLAYS):
        with runtime.db.transaction() as s:
            parent = queries.get_run(s, run_id)
            if parent.status != RUNNING:
                return
            recorded = {
                key: dict(row.result or {})
                for key, row in queries.effects_under(s, run_id, CHILD_PREFIX).items()
                if row.status == DONE
            }
            router = ChildRouter(runtime, parent, recorded)
            input, subject, context = copy.deepcopy((parent.input, parent.subject, parent.context))
        try:
            with routing.routing(router):
                returned = operation.route(input, subject=subject, context=context)
        except _Park as park:
            if _park(runtime, run_id, park.child_run_id):
                return
            continue  # the child came to rest before the run could park: go on from there at once
        except _Stop:
            return
        _finish(runtime, run_id, returned, what=f"the value {operation.name}'s routing returned")
        return
    raise StepFailed(f"the routing of {operation.name} was executed {MAX_REPLAYS} times in a row without parking")


def _park(runtime: Runtime, run_id: str, child_run_id: str) -> bool:
    """Park the operation's run until ``child_run_id`` comes to rest; False when it already has (go on at once)."""
    with runtime.db.transaction() as s:
        parent = queries.lock_run(s, run_id)
        if parent.status != RUNNING:
            return True
        # Read after the parent's lock: a child's transition to rest locks the parent too, so either it committed
        # before this read (we see it at rest) or it wakes the parent we park here.
        if queries.run_status(s.connection(), child_run_id) in RESTING:
            return False
        transitions.wait_for_child(s, parent, ROUTE_STEP, child_run_id=child_run_id)
    return True


def _finish(runtime: Runtime, run_id: str, returned: Any, *, what: str) -> None:
    """Record the routing's result as the ``route`` step and complete the operation's run, in one transaction."""
    extra: dict[str, Any] = {}
    if isinstance(returned, Run):
        output: Any = {"run_id": returned.id, "workflow": returned.workflow, "status": returned.status}
        extra["returned_run_id"] = returned.id
    else:
        output = schemas.to_json(returned, what=what)
    try:
        with runtime.db.transaction() as s:
            parent = queries.lock_run(s, run_id)
            if parent.status != RUNNING:
                return
            delta = {"set": {ROUTE_STEP: output}, "unset": []}
            transitions.complete_step(s, parent, ROUTE_STEP, RouteStep.kind, delta, extra=extra)
            dispatch.finish_if_complete(s, runtime, parent, workflow_of(runtime, parent.workflow))
    except IntegrityError:
        pass  # a duplicated delivery recorded the routing's result first; it stands


def trigger(
    name: str, input: Any = None, *, subject: Any = None, context: Any = None, run_id: str | None = None
) -> Run:
    """Start the Operation registered as ``name`` (its ``name`` or one of its ``entry_points``); returns its run at
    once, like ``Operation.enqueue``. Unknown names raise ``UnknownOperationError`` listing the known ones."""
    rt = rubot_runtime.current()
    operation = registry.operations.get(name)
    if operation is None and rt.settings.workflow_modules:
        registry.import_modules(rt.settings.workflow_modules)
        operation = registry.operations.get(name)
    if operation is None:
        known = ", ".join(registry.operations.names()) or "none"
        raise UnknownOperationError(f"no operation named {name!r} is registered (known: {known})")
    return operation.enqueue(input, subject=subject, context=context, run_id=run_id)


bodies.register_deferred(RouteStep, start_routing)
