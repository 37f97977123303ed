"""Checks of a workflow's branching and data shaping, made when the class is created.

``if_`` / ``unless`` / ``when`` conditions and ``compute`` functions are callables of ``(input, state, context)``
or names of workflow methods ``(self, input, state, context)``; ``choice`` / ``jump_to`` / ``skip_to`` targets are
top-level steps of the plan (a ``jump_to`` earlier, a ``skip_to`` later); every loop (a target earlier than the
choice) has a positive ``max_visits`` and no approval step inside it; ``save_as`` keys collide with no step; and
``output`` is a state key, a list of them or a callable. Each failure is a :class:`DefinitionError` naming the
workflow and step, at import time.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from pipeline.definitions.dsl import ApprovalStep, ChoiceStep, ComputeStep, ParallelGroup, StepSpec
from pipeline.errors import DefinitionError


def _accepts(fn: Callable[..., Any], count: int) -> bool:
    try:
        inspect.signature(fn).bind(*range(count))
    except TypeError:
        return False
    except ValueError:
        return True
    return True


def check_condition(cls: type, where: str, attribute: str, condition: Any) -> None:
    """A condition (or ``compute`` function): a callable ``(input, state, context)`` or a workflow method name."""
    if condition is None:
        return
    if isinstance(condition, str):
        method = getattr(cls, condition, None)
        if method is None or not callable(method) or isinstance(method, StepSpec):
            raise DefinitionError(f"{where}: {attribute}={condition!r} names no method of {cls.__name__}")
        if not _accepts(method, 4):
            raise DefinitionError(
                f"{where}: {attribute}={condition!r} must be a method taking (self, input, state, context)"
            )
        return
    if not callable(condition):
        raise DefinitionError(f"{where}: {attribute} must be a callable (input, state, context) or a method name")
    if not _accepts(condition, 3):
        raise DefinitionError(f"{where}: {attribute} must accept three arguments (input, state, context)")


def check_flow(cls: type, plan: list[Any]) -> None:
    """Every branching and shaping rule of ``plan`` (already named and checked step by step)."""
    owner = cls.__name__
    order = [u.name for u in plan]
    names = {s.name for u in plan for s in (u.steps if isinstance(u, ParallelGroup) else (u,))}
    keys: dict[str, str] = {}
    for unit in plan:
        for spec in unit.steps if isinstance(unit, ParallelGroup) else (unit,):
            where = f"{owner}.{spec.name}"
            check_condition(cls, where, "if_", spec.if_)
            check_condition(cls, where, "unless", spec.unless)
            if spec.if_ is not None and spec.unless is not None:
                raise DefinitionError(f"{where}: give if_ or unless, not both")
            _check_save_as(where, spec, names, keys)
            if isinstance(spec, ComputeStep):
                if spec.fn is None:
                    raise DefinitionError(f"{where}: compute() needs a function (input, state, context)")
                check_condition(cls, where, "compute", spec.fn)
    for index, unit in enumerate(plan):
        if isinstance(unit, ChoiceStep):
            _check_choice(cls, f"{owner}.{unit.name}", unit, plan, order, index)


def _check_save_as(where: str, spec: StepSpec, names: set[str], keys: dict[str, str]) -> None:
    if spec.save_as is None:
        return
    if isinstance(spec, ApprovalStep | ChoiceStep):
        raise DefinitionError(f"{where}: save_as does not apply to {spec.kind} steps")
    if not isinstance(spec.save_as, str) or not spec.save_as.strip():
        raise DefinitionError(f"{where}: save_as must be a non-empty string, got {spec.save_as!r}")
    if spec.save_as in names and spec.save_as != spec.name:
        raise DefinitionError(f"{where}: save_as={spec.save_as!r} is the name of another step")
    if spec.save_as in keys:
        raise DefinitionError(f"{where}: save_as={spec.save_as!r} is also the save_as of step {keys[spec.save_as]!r}")
    keys[spec.save_as] = spec.name


def _check_choice(cls: type, where: str, spec: ChoiceStep, plan: list[Any], order: list[str], index: int) -> None:
    for branch in spec.branches:
        if not hasattr(branch, "condition") or not hasattr(branch, "target"):
            raise DefinitionError(f"{where}: choice() takes when(condition, 'step') branches, got {branch!r}")
        check_condition(cls, where, "when", branch.condition)
    targets = spec.targets()
    if not targets:
        raise DefinitionError(f"{where}: a choice needs at least one when(condition, 'step') or otherwise='step'")
    loops = False
    for target in targets:
        if not isinstance(target, str) or target not in order:
            members = [s.name for u in plan if isinstance(u, ParallelGroup) for s in u.steps]
            hint = " (a member of a parallel group; target the group)" if target in members else ""
            raise DefinitionError(f"{where}: target {target!r} is not a step of this workflow{hint}; one of {order}")
        at = order.index(target)
        if at == index:
            raise DefinitionError(f"{where}: a choice cannot go to itself")
        if spec.direction == "back" and at > index:
            raise DefinitionError(f"{where}: jump_to({target!r}) must name an earlier step (use skip_to to go forward)")
        if spec.direction == "forward" and at < index:
            raise DefinitionError(f"{where}: skip_to({target!r}) must name a later step (use jump_to to go back)")
        if at < index:
            loops = True
            inside = [u for u in plan[at:index] if isinstance(u, ApprovalStep)]
            if inside:
                raise DefinitionError(
                    f"{where}: the loop back to {target!r} contains approval step {inside[0].name!r}; "
                    'an approval is sent back with on_changes_requested="revise"'
                )
    bound = spec.max_visits
    if loops:
        if isinstance(bound, bool) or not isinstance(bound, int):
            raise DefinitionError(
                f"{where}: going back to an earlier step is a loop; give max_visits (how many times its steps may "
                "run in all) so it ends"
            )
        if bound < 2:
            raise DefinitionError(f"{where}: max_visits must be at least 2 (the first run and one more)")
    elif bound is not None:
        raise DefinitionError(f"{where}: max_visits only applies to a choice that goes back to an earlier step")


def check_output(cls: type, output: Any, keys: set[str]) -> None:
    """``output``: ``None`` (the last step's entry), a state key, a list of keys, or ``(input, state, context)``."""
    where = f"{cls.__name__}.output"
    if output is None:
        return
    if isinstance(output, str):
        if output not in keys:
            raise DefinitionError(f"{where} names {output!r}, which is not a step (or a save_as key)")
        return
    if isinstance(output, list | tuple):
        if not output:
            raise DefinitionError(f"{where}: a list of keys needs at least one key")
        for key in output:
            if not isinstance(key, str) or key not in keys:
                raise DefinitionError(f"{where} names {key!r}, which is not a step (or a save_as key)")
        return
    if callable(output):
        if not _accepts(output, 3):
            raise DefinitionError(f"{where}: a callable output must accept (input, state, context)")
        return
    raise DefinitionError(f"{where} must be a state key, a list of keys or a callable (input, state, context)")


def check_on_failure(cls: type) -> None:
    hook = getattr(cls, "on_failure", None)
    if hook is None:
        return
    if not callable(hook) or not _accepts(hook, 2):
        raise DefinitionError(f"{cls.__name__}.on_failure must be a method taking (self, error)")
