"""``Operation``: a named, durable business process that composes workflow runs (e.g. review, then approve).

The subclass writes its *routing* as ``launch(cls, input, subject=None, context=None)`` — plain code that starts
runs with ``pipeline.run`` / ``pipeline.enqueue`` and chooses what happens next from their outcomes (DESIGN.md §3).
Defining the class turns that code into the routing of a run executed by the engine in a worker
(:mod:`pipeline.operations`), and gives the class its public entry points:

- ``Op.enqueue(input, subject=..., context=...)`` starts the operation's run and returns it at once;
- ``Op.launch(input, subject=..., context=...)`` starts it and waits as ``pipeline.run`` does, then returns the
  run the routing returned (or the operation's run when the routing returned anything else, or failed);
- ``pipeline.trigger(name, input)`` / ``rubot launch-operation NAME`` start it by its name or by one of its
  ``entry_points``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pipeline import api
from pipeline.definitions import registry
from pipeline.errors import DefinitionError
from pipeline.handles import refuse_inside_task

if TYPE_CHECKING:
    from pipeline.definitions.workflow import Workflow
    from pipeline.runs import Run


class Operation:
    """Subclass and implement the routing as ``launch(cls, input, subject=None, context=None)`` (a classmethod).

    The routing runs in a worker as the operation's run (the *parent*); every ``pipeline.run(Workflow, ...)`` in
    it launches a *child* run linked both ways (``child.parent_run_id``, ``parent.children``) and parks the parent
    until the child rests. A child that failed is returned like any other (``review.status == "failed"``): route on
    it. A crashed caller or worker loses nothing: the parent's ledger records each child before it is dispatched.

    Class attributes: ``name`` (default: the class name) names the operation's runs and its trigger;
    ``entry_points`` are more names it can be triggered by; ``input_schema`` validates the input at enqueue.
    """

    name: ClassVar[str] = "Operation"
    #: More names ``pipeline.trigger`` / ``rubot launch-operation`` accept for this operation.
    entry_points: ClassVar[tuple[str, ...]] = ()
    #: Marshmallow fields (or a Schema) checked before the operation's run is created, like a workflow's.
    input_schema: ClassVar[Any] = None
    #: The synthetic workflow whose runs are this operation's runs (one step, ``route``); built with the class.
    workflow: ClassVar[type[Workflow]]
    _routing: ClassVar[Any] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = cls.__name__
        launch = cls.__dict__.get("launch")
        if launch is not None:
            if not isinstance(launch, classmethod):
                raise DefinitionError(f"{cls.__name__}.launch must be a @classmethod")
            cls._routing = launch.__func__
            del cls.launch  # Operation.launch (enqueue and wait) takes its place; the code is the routing
        if cls._routing is None:
            raise DefinitionError(f"{cls.__name__} must define launch(cls, input, subject=None, context=None)")
        if isinstance(cls.entry_points, str) or not all(isinstance(n, str) and n for n in cls.entry_points):
            raise DefinitionError(f"{cls.__name__}.entry_points must be a tuple of names, got {cls.entry_points!r}")
        from pipeline import operations

        cls.workflow = operations.workflow_for(cls)
        registry.operations.add(cls.name, cls)
        for entry_point in cls.entry_points:
            registry.operations.add(entry_point, cls)

    @classmethod
    def route(cls, input: Any, *, subject: Any = None, context: Any = None) -> Any:
        """Execute the routing code itself (what the worker does; outside a worker, see ``launch``)."""
        return cls._routing(cls, input, subject=subject, context=context)

    @classmethod
    def enqueue(cls, input: Any = None, *, subject: Any = None, context: Any = None, run_id: str | None = None) -> Run:
        """Start the operation's run and return it at once (status ``queued``); its routing runs in a worker."""
        return api.enqueue(cls.workflow, input, subject=subject, context=context, run_id=run_id)

    @classmethod
    def launch(
        cls, input: Any = None, subject: Any = None, context: Any = None, *, timeout: float | None = None
    ) -> Run:
        """Start the operation's run and wait as ``pipeline.run`` does (until its routing returned or failed).

        Returns the run the routing returned, as it is now (e.g. a child waiting for an approval), or the
        operation's run itself when the routing returned another value or failed (``run.error`` says why).
        """
        from pipeline import operations, routing

        if routing.current() is None:
            refuse_inside_task(f"{cls.__name__}.launch")
        return operations.returned_run(api.run(cls.workflow, input, subject=subject, context=context, timeout=timeout))
