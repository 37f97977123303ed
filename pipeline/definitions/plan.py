"""A workflow's plan, built from its class body and checked step by step when the class is created.

:class:`pipeline.definitions.workflow.WorkflowMeta` calls :func:`build_plan` (the steps and parallel groups in
order, tool and agent references resolved, every step checked: names, approval roles and expiries, SLAs,
``input=`` arity, branching through :mod:`pipeline.definitions.flowchecks`) and :func:`check_revisions`; any
malformed definition is a :class:`DefinitionError` at import time.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from pipeline.definitions import registry
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
from pipeline.errors import DefinitionError

Unit = StepSpec | ParallelGroup

_OUTCOMES = ("fail", "continue")
_CHANGES_OUTCOMES = ("fail", "continue", "revise")
_ON_EXPIRE = ("reject", "escalate")


def flatten(plan: list[Unit]) -> list[StepSpec]:
    steps: list[StepSpec] = []
    for unit in plan:
        steps.extend(unit.steps if isinstance(unit, ParallelGroup) else [unit])
    return steps


def build_plan(cls: type, namespace: dict[str, Any]) -> list[Unit]:
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


def check_revisions(owner: str, plan: list[Unit]) -> None:
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
