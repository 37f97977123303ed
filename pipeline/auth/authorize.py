"""Who may decide an approval: the role or assignee rule, narrowed by ``approvers`` policy hooks.

A principal may decide an approval when it **holds the approval's role or is its assignee** (its id or e-mail
equals ``assignee``). Policy hooks can then narrow that further, never widen it: the Workflow's ``approvers``, the
approval step's ``approval_step(approvers=...)`` and, for a model's tool call, the Tool's ``approvers``. A hook is
a callable taking one :class:`ApproverCheck` and returning ``True`` (allowed), or a string saying why not (``False``
means "denied by policy"). :func:`four_eyes` is one: nobody approves a run they launched.

A *trusted caller* (Python code calling ``run.approve(approved_by="...")`` with a plain string, or the CLI without
``--role``) vouches for the decider itself: the role check does not apply, an assignee still does.

The engine runs :func:`refusal` inside the transaction that records the decision, under the run's row lock
(:func:`pipeline.engine.approvals.decide`); the web inbox uses the same function to list only what a principal may
decide.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pipeline.auth.principal import Principal

ApproversHook = Callable[["ApproverCheck"], "bool | str | None"]


@dataclass(frozen=True)
class ApproverCheck:
    """Everything a policy hook may need to decide whether ``principal`` may decide this approval."""

    principal: Principal
    run_id: str
    workflow: str
    step: str
    kind: str  # "step" (an approval_step) or "tool_call" (a model's tool call)
    role: str
    assignee: str | None = None
    #: ``context["user"]["id"]`` of the run (who launched it), when known.
    launched_by: str | None = None
    context: dict[str, Any] = field(default_factory=dict)
    tool: str | None = None
    tool_input: Any = None


def is_assignee(principal: Principal, assignee: str | None) -> bool:
    return bool(assignee) and assignee in {principal.id, principal.email}


def refusal(check: ApproverCheck, hooks: Iterable[ApproversHook] = (), *, trusted: bool = False) -> str | None:
    """Why ``check.principal`` may not decide, or ``None`` when it may."""
    principal = check.principal
    if trusted:
        if check.assignee and not is_assignee(principal, check.assignee):
            return f"the approval is assigned to {check.assignee}, not {principal.id}"
    elif not (principal.has_role(check.role) or is_assignee(principal, check.assignee)):
        assignee = f" and is not its assignee ({check.assignee})" if check.assignee else ""
        return f"{principal.id} does not hold the role {check.role!r}{assignee}"
    for hook in hooks:
        reason = _deny_reason(hook(check))
        if reason is not None:
            return reason
    return None


def _deny_reason(verdict: Any) -> str | None:
    if verdict is True or verdict is None:
        return None
    if isinstance(verdict, str) and verdict.strip():
        return verdict.strip()
    return "denied by the approvers policy"


def four_eyes(check: ApproverCheck) -> bool | str:
    """An ``approvers`` hook: whoever launched the run may not decide its approvals."""
    if check.launched_by and check.launched_by in {check.principal.id, check.principal.email}:
        return "four eyes: the person who launched the run may not decide its approvals"
    return True


def check_hook(value: Any, *, where: str) -> ApproversHook | None:
    """``value`` as an approvers hook (a callable of one argument) or ``None``; raises ``TypeError`` otherwise."""
    if value is None:
        return None
    if not callable(value):
        raise TypeError(f"{where}: approvers must be a callable taking an ApproverCheck, got {value!r}")
    return value
