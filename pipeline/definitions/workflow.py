"""``Workflow``: an ordered plan of steps, checked when the class is created.

The metaclass collects the step descriptions of :mod:`pipeline.definitions.dsl` from the class body in order, resolves
tool and agent references, and rejects malformed definitions (unknown tools, duplicate names, an approval
step without a role, an ``input=`` callable of the wrong arity) with a :class:`DefinitionError` at import
time, long before a run could fail halfway.
"""

from __future__ import annotations

from typing import Any, ClassVar

from marshmallow import Schema

from pipeline.definitions import flowchecks, registry, schemas
from pipeline.definitions.dsl import (
    AgentStep,
    ParallelGroup,
    StepSpec,
)
from pipeline.definitions.plan import Unit, build_plan, check_approvers, check_revisions, flatten
from pipeline.errors import DefinitionError, InvalidRunInput
from pipeline.redact import sensitive_values


class _Namespace(dict):
    """Class-body namespace that remembers step names assigned twice (a plain dict silently keeps one)."""

    def __init__(self) -> None:
        super().__init__()
        self.duplicates: list[str] = []

    def __setitem__(self, key: str, value: Any) -> None:
        if isinstance(value, StepSpec | ParallelGroup) and isinstance(self.get(key), StepSpec | ParallelGroup):
            self.duplicates.append(key)
        super().__setitem__(key, value)


class WorkflowMeta(type):
    @classmethod
    def __prepare__(mcs, name: str, bases: tuple[type, ...], /, **kwargs: Any) -> _Namespace:  # noqa: N804
        return _Namespace()

    def __new__(mcs, name: str, bases: tuple[type, ...], namespace: _Namespace, **kwargs: Any):  # noqa: N804
        if not isinstance(namespace, _Namespace):
            # type(name, bases, dict) skips __prepare__: the class body, where steps are declared and checked
            # (order, duplicates), never ran.
            raise DefinitionError(
                f"{name}: a Workflow must be defined with a class statement (class {name}(Workflow): ...), "
                "not built with type()"
            )
        cls: Any = super().__new__(mcs, name, bases, dict(namespace), **kwargs)
        if namespace.get("__abstract__", False):
            return cls
        if namespace.duplicates:
            raise DefinitionError(f"{name}: step {namespace.duplicates[0]!r} is defined twice")
        cls._plan = build_plan(cls, namespace)
        check_revisions(name, cls._plan)
        flowchecks.check_flow(cls, cls._plan)
        check_approvers(name, cls.__dict__.get("approvers"))
        cls._steps = {s.name: s for s in flatten(cls._plan)}
        cls._input = schemas.make_schema(cls.input_schema, owner=name, attribute="input_schema")
        if "name" not in namespace:
            cls.name = name
        flowchecks.check_output(cls, cls.output, set(cls._steps) | {s.state_key for s in cls._steps.values()})
        flowchecks.check_on_failure(cls)
        if cls.schedule is not None:
            from pipeline.schedules import as_schedule

            cls.schedule = as_schedule(cls.schedule, where=f"{name}.schedule")
        registry.workflows.add(cls.name, cls)
        return cls


class Workflow(metaclass=WorkflowMeta):
    """Declare steps as class attributes; they run in class-body order.

    ``input_schema`` (optional) validates the run's input before any step runs. ``output`` says what becomes
    ``run.output``: a state key (a step's name or ``save_as``), a list of keys (a dict of those entries) or a
    callable ``(input, state, context)``; by default the last step's entry. ``on_failure(self, error)``, when
    defined, is called once when a run of the workflow fails (in a worker, after the failure is committed).
    """

    __abstract__ = True
    name: ClassVar[str] = "Workflow"
    input_schema: ClassVar[Any] = None
    output: ClassVar[Any] = None
    #: ``def on_failure(self, error)``: called once (task ``rubot.on_failure``) when a run of this workflow fails.
    on_failure: ClassVar[Any] = None
    #: Run budgets over all agent steps (unset: only the agents' own budgets apply). ``max_cost`` in USD.
    max_turns: ClassVar[int | None] = None
    max_tokens: ClassVar[int | None] = None
    max_cost: ClassVar[float | None] = None
    #: Concurrency caps of this workflow (tighter than the settings'); one active run per subject if True.
    max_running: ClassVar[int | None] = None
    max_running_per_user: ClassVar[int | None] = None
    one_active_per_subject: ClassVar[bool] = False
    #: A :class:`pipeline.llm.policy.Policy` consulted on every tool call an agent makes.
    policy: ClassVar[Any] = None
    #: Launch this workflow from Celery beat: a ``celery.schedules.crontab``, a ``timedelta``, a number of
    #: seconds or ``pipeline.every(...)`` (see :mod:`pipeline.schedules`); ``schedule_input`` is each run's input.
    schedule: ClassVar[Any] = None
    schedule_input: ClassVar[Any] = None
    #: Narrows who may decide this workflow's approvals beyond the role/assignee rule: a callable taking a
    #: :class:`pipeline.auth.authorize.ApproverCheck` and returning True or a reason (e.g. ``four_eyes``).
    approvers: ClassVar[Any] = None

    _plan: ClassVar[list[Unit]]
    _steps: ClassVar[dict[str, StepSpec]]
    _input: ClassVar[type[Schema] | None] = None

    def __init__(self, run: Any) -> None:
        self.run = run

    @classmethod
    def steps(cls) -> list[StepSpec]:
        """Every step, parallel members included, in plan order."""
        return list(cls._steps.values())

    @classmethod
    def step_named(cls, name: str) -> StepSpec | None:
        """The step called ``name`` (a parallel member too), or ``None``."""
        return cls._steps.get(name)

    @classmethod
    def step(cls, name: str) -> StepSpec:
        """The step called ``name``; a :class:`DefinitionError` if the workflow has none (a renamed step)."""
        spec = cls._steps.get(name)
        if spec is None:
            raise DefinitionError(f"{cls.name} has no step {name!r}")
        return spec

    @classmethod
    def agent_step(cls, name: str) -> AgentStep:
        """The agent step called ``name``; a :class:`DefinitionError` if it is not one."""
        spec = cls.step(name)
        if not isinstance(spec, AgentStep):
            raise DefinitionError(f"{cls.name}.{name} is not an agent step")
        return spec

    @classmethod
    def in_last_unit(cls, name: str) -> bool:
        """Whether step ``name`` is the plan's last step or a member of its last parallel group."""
        last = cls._plan[-1]
        return name in ({s.name for s in last.steps} if isinstance(last, ParallelGroup) else {last.name})

    @classmethod
    def steps_from(cls, first: str, *, to: str) -> list[str]:
        """The names of the steps from top-level step ``first`` up to and including ``to``, in plan order."""
        names: list[str] = []
        collecting = False
        for unit in cls._plan:
            collecting = collecting or unit.name == first
            if not collecting:
                continue
            members = unit.steps if isinstance(unit, ParallelGroup) else (unit,)
            names.extend(m.name for m in members)
            if to in {m.name for m in members}:
                break
        return names

    @classmethod
    def step_names(cls) -> list[str]:
        return list(cls._steps)

    @classmethod
    def plan(cls) -> list[Unit]:
        """The plan in order: steps and parallel groups (what the compiler walks)."""
        return list(cls._plan)

    @classmethod
    def output_step(cls) -> str:
        """The state key ``run.output`` is read from when ``output`` is a key or unset (the last step's)."""
        if isinstance(cls.output, str):
            return cls.output
        return flatten(cls._plan)[-1].state_key

    @classmethod
    def output_of(cls, input: Any, state: dict[str, Any] | None, context: Any) -> Any:
        """``run.output`` of a completed run with this ``input``, ``state`` and ``context``."""
        import copy

        state = state or {}
        output = cls.output
        if output is None or isinstance(output, str):
            return state.get(cls.output_step())
        if isinstance(output, list | tuple):
            return {key: state.get(key) for key in output}
        return output(copy.deepcopy(input), copy.deepcopy(state), copy.deepcopy(context))

    @classmethod
    def batch(cls, tick: Any) -> Any:
        """For a scheduled workflow: ``None`` (default) launches one run per tick; return an iterable to launch one
        run per item instead — a ``(subject, input)`` pair, or a subject alone (its input is ``schedule_input``)."""
        return None

    @classmethod
    def delay(cls, **input: Any) -> Any:
        """Launch a run with ``input`` (keyword arguments) like a Celery task's ``delay``: one broker message, a
        :class:`pipeline.handles.RunHandle` back at once (see :meth:`apply_async`)."""
        return cls.apply_async(kwargs=input)

    @classmethod
    def apply_async(
        cls,
        kwargs: Any = None,
        *,
        subject: Any = None,
        context: Any = None,
        run_id: str | None = None,
        countdown: float | None = None,
        eta: Any = None,
    ) -> Any:
        """Launch a run like Celery's ``apply_async``: ``kwargs`` is the run's input; ``countdown`` (seconds) or
        ``eta`` (a datetime) delays the start; ``run_id`` (default: a new one) is the idempotency key. Sends
        ``rubot.launch`` on the installed runtime's Celery app and returns a ``RunHandle`` with the id at once; a
        worker validates the input (bad input is recorded as a failed run under that id)."""
        from pipeline.handles import RunHandle, send_launch
        from pipeline.runtime import current

        rt = current()
        run_id = send_launch(
            rt.app,
            cls.name,
            kwargs,
            subject=subject,
            context=context,
            run_id=run_id,
            queue=rt.settings.queue,
            countdown=countdown,
            eta=eta,
        )
        return RunHandle(run_id, cls.name, rt)

    @classmethod
    def secrets_in_input(cls, data: Any) -> list[str]:
        """The values of ``data`` held by fields of ``input_schema`` marked sensitive (to scrub from messages)."""
        return sensitive_values(cls._input, data)

    @classmethod
    def validate_input(cls, data: Any) -> Any:
        if cls._input is None:
            return schemas.to_json(data if data is not None else {}, what="run input")
        schema = cls._input
        schemas.load(schema, data, error=InvalidRunInput, what=f"input of workflow {cls.name!r}")
        return schemas.to_json(data, what="run input")
