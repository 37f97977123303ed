"""Policy hooks: the workflow's say over what a run may do, checked on every tool call.

Every path that runs a tool for a run asks :func:`refusal` first: a model's tool call
(:mod:`pipeline.llm.tool_calls`) and a workflow's ``tool_step`` (:mod:`pipeline.engine.executor`), so a
workflow launched for a user can never run a tool that user may not use.

A hook takes one input dataclass (fields can be added later without breaking anyone's signature) and returns
``True`` to allow or a string saying why it denies. Tools add their own check with ``Tool.permitted_for``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ToolCallCheck:
    run_id: str
    workflow: str
    step: str
    tool: str
    input: dict[str, Any]
    user: Any


class Policy:
    """Subclass and set ``policy = MyPolicy()`` on a Workflow (or an Agent) to add checks."""

    def authorize_tool(self, check: ToolCallCheck) -> bool | str:
        return True


def deny_reason(verdict: bool | str | None) -> str | None:
    """``None`` when the verdict allows, else the reason to show the model and record."""
    if verdict is True:
        return None
    if isinstance(verdict, str) and verdict:
        return verdict
    return "denied by policy"


def refusal(tool: Any, check: ToolCallCheck, owners: Iterable[Any]) -> str | None:
    """Why the run's user may not make this call (``None``: allowed).

    ``tool`` is an instance of the tool; ``owners`` are the classes whose ``policy`` hooks have a say (the
    workflow, and for a model's tool call its agent). The tool's own ``permitted_for`` is asked first.
    """
    if not tool.permitted_for(check.user):
        return f"the user of this run may not call {check.tool}"
    for owner in owners:
        hook = getattr(owner, "policy", None)
        # A workflow may have a *step* called "policy" (the travel review of DESIGN §3 does): not a hook.
        if hook is not None and callable(getattr(hook, "authorize_tool", None)):
            reason = deny_reason(hook.authorize_tool(check))
            if reason is not None:
                return reason
    return None
