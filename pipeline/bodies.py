"""What each kind of step does, given a snapshot of the run. No transactions here.

A body returns a *state delta* ``{"set": {...}, "unset": [...]}``: the executor applies it to the run row
under a lock, so parallel steps writing different keys never lose each other's results.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from pipeline import schemas
from pipeline.dsl import AgentStep, FunctionStep, StepSpec, ToolStep
from pipeline.errors import RubotError, StepInputError
from pipeline.runs import RunView
from pipeline.tool import ToolContext

if TYPE_CHECKING:
    from pipeline.runtime import Runtime


def step_input(spec: ToolStep | AgentStep, view: RunView) -> Any:
    """Evaluate ``input=(input, state, context)``; without one the step gets the run's input."""
    if spec.input is None:
        return copy.deepcopy(view.input)
    try:
        return spec.input(copy.deepcopy(view.input), copy.deepcopy(view.state), copy.deepcopy(view.context))
    except RubotError:
        raise
    except Exception as exc:
        detail = f"missing key {exc}" if isinstance(exc, KeyError) else f"{type(exc).__name__}: {exc}"
        raise StepInputError(f"input= of step {spec.name!r} failed before the step ran: {detail}") from exc


def run_body(runtime: Runtime, workflow: type, spec: StepSpec, view: RunView, *, task_id: str | None) -> dict:
    if isinstance(spec, ToolStep):
        data = step_input(spec, view)
        user = (view.context or {}).get("user") if isinstance(view.context, dict) else None
        tool = spec.tool(ToolContext(run_id=view.id, op_key=spec.name, user=user))
        return {"set": {spec.name: tool.invoke(data)}, "unset": []}
    if isinstance(spec, FunctionStep):
        before = copy.deepcopy(view.state)
        returned = spec(workflow(view))
        if returned is not None:
            view.state[spec.name] = returned  # type: ignore[index]
        return diff(before, view.state, what=f"state written by step {spec.name!r}")
    raise TypeError(f"no body for {spec!r}")


def diff(before: dict[str, Any], after: dict[str, Any], *, what: str) -> dict[str, Any]:
    changed = {k: v for k, v in after.items() if k not in before or before[k] != v}
    return {"set": schemas.to_json(changed, what=what), "unset": [k for k in before if k not in after]}


def apply(state: dict[str, Any], delta: dict[str, Any]) -> dict[str, Any]:
    merged = {k: v for k, v in (state or {}).items() if k not in set(delta.get("unset", []))}
    merged.update(delta.get("set", {}))
    return merged
