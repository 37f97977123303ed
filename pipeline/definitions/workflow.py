"""``Workflow``: an ordered plan of steps, checked when the class is created.

The metaclass collects the step descriptions of :mod:`pipeline.definitions.dsl` from the class body in order, resolves
tool and agent references, and rejects malformed definitions (unknown tools, duplicate names, an approval
step without a role, an ``input=`` callable of the wrong arity) with a :class:`DefinitionError` at import
time, long before a run could fail halfway.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from datetime import timedelta
from typing import Any, ClassVar

from marshmallow import Schema

from pipeline.definitions import flowchecks, registry, schemas
from pipeline.definitions.agent import Agent
from pipeline.definitions.dsl import (
    AgentStep,
    ApprovalStep,
    ChoiceStep,
    ComputeStep,
    FunctionStep,
    ParallelGroup,
    RouteStep,
    StepSpec,
    ToolStep,
)
from pipeline.definitions.tool import resolve as resolve_tool
from pipeline.errors import DefinitionError, InvalidRunInput

Unit = StepSpec | ParallelGroup
_OUTCOMES = ("fail", "continue")
_CHANGES_OUTCOMES = ("fail", "continue", "revise")
_ON_EXPIRE = ("reject", "escalate")


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
        cls._plan = _build_plan(cls, namespace)
        _check_revisions(name, cls._plan)
        flowchecks.check_flow(cls, cls._plan)
        check_approvers(name, cls.__dict__.get("approvers"))
        cls._steps = {s.name: s for s in _flatten(cls._plan)}
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


def _flatten(plan: list[Unit]) -> list[StepSpec]:
    steps: list[StepSpec] = []
    for unit in plan:
        steps.extend(unit.steps if isinstance(unit, ParallelGroup) else [unit])
    return steps


def _build_plan(cls: type, namespace: dict[str, Any]) -> list[Unit]:
    inherited: list[Unit] = []
    for base in reversed(cls.__mro__[1:]):
        for unit in getattr(base, "_plan", None) or []:
            inherited = [u for u in inherited if u.name != unit.name] + [unit]
    own = [v for v in namespace.values() if isinstance(v, StepSpec | ParallelGroup)]
    overridden = {u.name for u in own}
    plan = [u if u.name not in overridden else next(o for o in own if o.name == u.name) for u in inherited]
    plan += [u for u in own if u.name not in {p.name for p in inherited}]
    if not plan:
        raise DefinitionError(f"{cls.__name__} declares no steps")
    seen: set[str] = set()
    checked = []
    for unit in plan:
        checked.append(_check_unit(cls.__name__, unit, seen))
    return checked


def _check_unit(owner: str, unit: Unit, seen: set[str]) -> Unit:
    if isinstance(unit, ParallelGroup):
        where = f"{owner}.{unit.name}"
        if len(unit.steps) < 2:
            raise DefinitionError(f"{where}: parallel() needs at least two steps")
        members = []
        for member in unit.steps:
            if not isinstance(member, StepSpec):
                raise DefinitionError(f"{where}: parallel() takes steps, got {member!r}")
            if member.ends_segment:
                raise DefinitionError(
                    f"{where}: an {member.kind} step cannot run in parallel with other steps "
                    "(it continues the run from SQL when it is done)"
                )
            members.append(_check_step(owner, member, seen))
        _claim(owner, unit.name, seen)
        return ParallelGroup(steps=tuple(members), name=unit.name)
    return _check_step(owner, unit, seen)


def _claim(owner: str, name: str | None, seen: set[str]) -> None:
    if not name or not name.isidentifier():
        raise DefinitionError(f"{owner}: step name {name!r} must be a Python identifier")
    if name in seen:
        raise DefinitionError(f"{owner}: step name {name!r} is used twice")
    seen.add(name)


def _check_step(owner: str, spec: StepSpec, seen: set[str]) -> StepSpec:
    from dataclasses import replace

    _claim(owner, spec.name, seen)
    where = f"{owner}.{spec.name}"
    if isinstance(spec, ToolStep):
        _check_input_fn(where, spec.input)
        return replace(spec, tool=resolve_tool(spec.tool, where=f"{where}: tool_step"))
    if isinstance(spec, AgentStep):
        _check_input_fn(where, spec.input)
        agent = spec.agent
        if isinstance(agent, str):
            agent = registry.agents.get(agent) or agent
        if not (isinstance(agent, type) and issubclass(agent, Agent) and agent is not Agent):
            raise DefinitionError(f"{where}: agent_step expects an Agent subclass or agent name, got {agent!r}")
        if not isinstance(spec.batch, bool):
            raise DefinitionError(f"{where}: agent_step(batch=...) must be True or False, got {spec.batch!r}")
        return replace(spec, agent=agent)
    if isinstance(spec, FunctionStep):
        if not callable(spec.func) or not _accepts(spec.func, 1):
            raise DefinitionError(f"{where}: a @step must be a method taking only self")
        return spec
    if isinstance(spec, ComputeStep | ChoiceStep):
        return spec  # checked with the whole plan (flowchecks: functions, targets, loop bounds)
    if isinstance(spec, ApprovalStep):
        if not isinstance(spec.role, str) or not spec.role.strip():
            raise DefinitionError(f'{where}: approval_step needs a role, e.g. approval_step(role="manager")')
        if spec.on_reject not in _OUTCOMES:
            raise DefinitionError(f"{where}: on_reject must be one of {_OUTCOMES}")
        if spec.on_changes_requested not in _CHANGES_OUTCOMES:
            raise DefinitionError(f"{where}: on_changes_requested must be one of {_CHANGES_OUTCOMES}")
        _check_presentation(where, spec)
        spec = _check_expiry(where, spec)
        _check_sla(where, spec.sla, spec.expires_in, deadline="expires_in")
        return spec
    if isinstance(spec, RouteStep):  # built by Operation, never written by hand: nothing to check
        return spec
    raise DefinitionError(f"{where}: unsupported step {spec!r}")


def _check_expiry(where: str, spec: ApprovalStep) -> ApprovalStep:
    """Validate an approval's SLA settings; an approval with ``expires_in`` always has an ``on_expire``."""
    from dataclasses import replace

    _check_duration(where, "expires_in", spec.expires_in)
    _check_duration(where, "escalate_expires_in", spec.escalate_expires_in)
    if spec.on_expire is not None and spec.on_expire not in _ON_EXPIRE:
        raise DefinitionError(f"{where}: on_expire must be one of {_ON_EXPIRE}, got {spec.on_expire!r}")
    if spec.expires_in is None:
        if spec.on_expire is not None:
            raise DefinitionError(f"{where}: on_expire={spec.on_expire!r} needs expires_in (when does it expire?)")
        if spec.escalate_to is not None or spec.escalate_expires_in is not None:
            raise DefinitionError(f'{where}: escalate_to/escalate_expires_in need expires_in and on_expire="escalate"')
        return spec
    if spec.on_expire == "escalate":
        if not isinstance(spec.escalate_to, str) or not spec.escalate_to.strip():
            raise DefinitionError(f'{where}: on_expire="escalate" needs escalate_to, the role to escalate to')
        if spec.escalate_to == spec.role:
            raise DefinitionError(f"{where}: escalate_to must name another role than {spec.role!r}")
        return spec
    if spec.escalate_to is not None or spec.escalate_expires_in is not None:
        raise DefinitionError(f'{where}: escalate_to/escalate_expires_in only apply with on_expire="escalate"')
    return replace(spec, on_expire="reject")


def _check_presentation(where: str, spec: ApprovalStep) -> None:
    if spec.summary is not None and not (isinstance(spec.summary, str) or callable(spec.summary)):
        raise DefinitionError(f"{where}: summary must be a format string or a callable (input, state, context)")
    if callable(spec.summary) and not _accepts(spec.summary, 3):
        raise DefinitionError(f"{where}: a summary callable must accept (input, state, context)")
    check_approvers(where, spec.approvers)


def check_approvers(where: str, hook: Any) -> None:
    """An ``approvers`` hook is a callable taking one ApproverCheck (or None)."""
    if hook is None:
        return
    if not callable(hook) or not _accepts(hook, 1):
        raise DefinitionError(f"{where}: approvers must be a callable taking one ApproverCheck, got {hook!r}")


def _check_sla(where: str, sla: Any, expires_in: Any, *, deadline: str) -> None:
    """``sla`` (when the reminder goes out) is a positive timedelta, earlier than the deadline when there is one."""
    _check_duration(where, "sla", sla)
    if sla is not None and expires_in is not None and sla >= expires_in:
        raise DefinitionError(
            f"{where}: sla ({sla}) must be shorter than {deadline} ({expires_in}): the reminder goes out before "
            "the approval expires"
        )


def _check_revisions(owner: str, plan: list[Unit]) -> None:
    """``on_changes_requested="revise"`` needs an earlier top-level step to go back to and a positive bound."""
    order = [u.name for u in plan]
    for index, unit in enumerate(plan):
        steps = unit.steps if isinstance(unit, ParallelGroup) else (unit,)
        for spec in steps:
            if not isinstance(spec, ApprovalStep):
                continue
            where = f"{owner}.{spec.name}"
            if spec.on_changes_requested != "revise":
                if spec.revise_from is not None or spec.max_revisions is not None:
                    raise DefinitionError(
                        f'{where}: revise_from/max_revisions only apply with on_changes_requested="revise"'
                    )
                continue
            if not isinstance(spec.revise_from, str) or not spec.revise_from:
                raise DefinitionError(f'{where}: on_changes_requested="revise" needs revise_from, an earlier step')
            if spec.revise_from not in order[:index]:
                where_is = "a later step" if spec.revise_from in order else "not a step of this workflow"
                if spec.revise_from == spec.name:
                    where_is = "the approval step itself"
                raise DefinitionError(
                    f"{where}: revise_from={spec.revise_from!r} is {where_is}; it must name an earlier step "
                    f"(one of {order[:index]})"
                )
            between = plan[order.index(spec.revise_from) : index]
            if any(isinstance(u, ApprovalStep) for u in between):
                raise DefinitionError(f"{where}: the steps revised from {spec.revise_from!r} include another approval")
            if isinstance(spec.max_revisions, bool) or not isinstance(spec.max_revisions, int):
                raise DefinitionError(f'{where}: on_changes_requested="revise" needs max_revisions, a positive int')
            if spec.max_revisions < 1:
                raise DefinitionError(f"{where}: max_revisions must be at least 1")


def _check_duration(where: str, attribute: str, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, timedelta):
        raise DefinitionError(f"{where}: {attribute} must be a datetime.timedelta, got {value!r}")
    if value.total_seconds() <= 0:
        raise DefinitionError(f"{where}: {attribute} must be positive")


def _check_input_fn(where: str, fn: Callable[..., Any] | None) -> None:
    if fn is None:
        return
    if not callable(fn):
        raise DefinitionError(f"{where}: input= must be callable, got {fn!r}")
    if not _accepts(fn, 3):
        raise DefinitionError(
            f"{where}: input= must accept three arguments (input, state, context); "
            f"got {getattr(fn, '__name__', fn)}{_signature(fn)}"
        )


def _accepts(fn: Callable[..., Any], count: int) -> bool:
    try:
        inspect.signature(fn).bind(*range(count))
    except TypeError:
        return False
    except ValueError:  # builtins without a signature: let them be
        return True
    return True


def _signature(fn: Callable[..., Any]) -> str:
    try:
        return str(inspect.signature(fn))
    except (TypeError, ValueError):
        return "(?)"


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
        return _flatten(cls._plan)[-1].state_key

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
    def validate_input(cls, data: Any) -> Any:
        if cls._input is None:
            return schemas.to_json(data if data is not None else {}, what="run input")
        schema = cls._input
        schemas.load(schema, data, error=InvalidRunInput, what=f"input of workflow {cls.name!r}")
        return schemas.to_json(data, what="run input")
