"""What each kind of step does, given a snapshot of the run. No transactions here.

A body returns a *state delta* ``{"set": {...}, "unset": [...]}``: the executor applies it to the run row
under a lock, so parallel steps writing different keys never lose each other's results.

Step kinds whose work goes on in tasks of their own (an agent step's model turns) register a *starter* with
:func:`register_deferred`; the executor calls it instead of a body and the kind's own tasks record the step.
This keeps the executor free of the agent loop (which imports the engine, not the other way round).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pipeline.definitions import schemas
from pipeline.definitions.dsl import AgentStep, ComputeStep, FunctionStep, StepSpec, ToolStep
from pipeline.definitions.tool import ToolContext
from pipeline.engine.snapshots import RunView
from pipeline.engine.transitions import diff
from pipeline.errors import RubotError, StepInputError
from pipeline.llm import policy as policies

if TYPE_CHECKING:
    from pipeline.definitions.workflow import Workflow
    from pipeline.runtime import Runtime

#: ``starter(runtime, run_id, spec, step_input, task_id=...)`` per step class whose work continues elsewhere.
Starter = Callable[..., None]
_deferred: dict[type[StepSpec], Starter] = {}


def register_deferred(kind: type[StepSpec], starter: Starter) -> None:
    """Let steps of class ``kind`` start with ``starter`` instead of running a body in the step task."""
    _deferred[kind] = starter


def deferred_starter(spec: StepSpec) -> Starter | None:
    """The starter of ``spec``'s kind, or ``None`` for a kind whose body runs in the step task."""
    for kind, starter in _deferred.items():
        if isinstance(spec, kind):
            return starter
    if spec.ends_segment and spec.kind not in ("approval", "choice"):
        raise TypeError(f"no starter is registered for {spec.kind} steps (is pipeline.llm imported?)")
    return None


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


def evaluate(workflow: type[Workflow], fn: Any, view: RunView) -> Any:
    """Call a condition or ``compute`` function with copies of the run's input, state and context; a string names a
    workflow method ``(self, input, state, context)``, called on a workflow bound to ``view``."""
    args = (copy.deepcopy(view.input), copy.deepcopy(view.state), copy.deepcopy(view.context))
    if isinstance(fn, str):
        return getattr(workflow(view), fn)(*args)
    return fn(*args)


def run_user(view: RunView) -> Any:
    """The user a run acts for (``context["user"]``), whom every tool call is authorized against."""
    return (view.context or {}).get("user") if isinstance(view.context, dict) else None


def tool_refusal(workflow: type[Workflow], spec: ToolStep, view: RunView, data: Any) -> str | None:
    """Why the run's user may not call ``spec``'s tool with ``data`` (``None``: allowed), as for a model's call."""
    user = run_user(view)
    check = policies.ToolCallCheck(
        run_id=view.id,
        workflow=view.workflow,
        step=spec.name,
        tool=spec.tool.name,
        input=data if isinstance(data, dict) else {},
        user=user,
    )
    return policies.refusal(spec.tool(ToolContext(run_id=view.id, op_key=spec.name, user=user)), check, (workflow,))


def run_body(
    runtime: Runtime,
    workflow: type[Workflow],
    spec: StepSpec,
    view: RunView,
    *,
    task_id: str | None,
    tool_input: Any = None,
) -> dict:
    """Run ``spec``'s body; ``tool_input`` is a tool step's input when the caller evaluated it already."""
    if isinstance(spec, ToolStep):
        data = step_input(spec, view) if tool_input is None else tool_input
        tool = spec.tool(ToolContext(run_id=view.id, op_key=spec.name, user=run_user(view)))
        return {"set": {spec.state_key: tool.invoke(data)}, "unset": []}
    if isinstance(spec, FunctionStep):
        before = copy.deepcopy(view.state)
        returned = spec(workflow(view))
        if returned is not None:
            view.state[spec.state_key] = returned
        return diff(before, view.state, what=f"state written by step {spec.name!r}")
    if isinstance(spec, ComputeStep):
        value = schemas.to_json(evaluate(workflow, spec.fn, view), what=f"result of compute step {spec.name!r}")
        return {"set": {spec.state_key: value}, "unset": []}
    raise TypeError(f"no body for {spec!r}")
