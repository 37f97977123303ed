"""Policy hooks: the workflow's say over what an agent may do, checked on every tool call.

A hook takes one input dataclass (fields can be added later without breaking anyone's signature) and returns
``True`` to allow or a string saying why it denies. Tools add their own check with ``Tool.permitted_for``.
"""

from __future__ import annotations

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
