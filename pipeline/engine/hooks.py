"""Lifecycle hooks: how observability and user extensions see what the engine does, without living in it.

Subclass :class:`Hooks`, override the methods you need (each is a no-op here and receives one frozen input
object, so fields can be added without breaking anyone's signature) and pass instances to the runtime
(``Runtime(..., hooks=[...])`` or ``pipeline.install(app, hooks=[...])``). Hooks run in order.

When they run, and why then:

* Hooks about a change of state (a run completed, a step recorded, an approval requested) are queued by
  :mod:`pipeline.engine.transitions` in the transaction that makes the change and called **after it commits**:
  a rolled-back change never reaches a hook, and a hook never holds the run's row lock.
* Hooks about work in flight (``step_started``, ``model_turn_started``) run in the worker thread doing that
  work, just before it starts, so a hook may open a tracing span or set tags for what follows.

A hook that raises is logged and skipped; it never fails a run or a task.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from sqlalchemy.orm import Session

from pipeline.store.aftercommit import on_commit

log = logging.getLogger("rubot.hooks")

#: Where a session finds its runtime's hooks (``Database.session_info`` puts them into every session).
HOOKS_KEY = "rubot_hooks"


@dataclass(frozen=True)
class RunInfo:
    """A run entering a status: ``status`` is the new one, ``previous`` the one it left."""

    run_id: str
    workflow: str
    status: str
    previous: str | None = None
    step: str | None = None
    user_id: str | None = None
    error: dict[str, Any] | None = None
    cost_micros: int = 0


@dataclass(frozen=True)
class StepInfo:
    run_id: str
    workflow: str
    step: str
    kind: str
    task_id: str | None = None
    user_id: str | None = None
    error: dict[str, Any] | None = None


@dataclass(frozen=True)
class ModelTurnInfo:
    """One model turn of an agent step. ``usage`` and ``cost_micros`` are set once the turn is recorded."""

    run_id: str
    workflow: str
    step: str
    turn: int
    agent: str
    model: str
    provider: str | None = None
    usage: dict[str, int] = field(default_factory=dict)
    cost_micros: int = 0
    stop_reason: str | None = None
    tool_calls: tuple[str, ...] = ()
    duration_seconds: float | None = None
    #: Sent through the Message Batches API (priced at half).
    batch: bool = False
    #: An estimated charge: the request may have been billed but its response was lost.
    estimated: bool = False


@dataclass(frozen=True)
class ToolCallInfo:
    """A model's tool call answered: ``outcome`` is the event type (``tool.completed``, ``tool.denied`` ...)."""

    run_id: str
    workflow: str
    step: str
    op_key: str
    tool: str
    outcome: str
    is_error: bool


@dataclass(frozen=True)
class ApprovalInfo:
    """An approval requested, decided, escalated, reminded or expired (``action``)."""

    run_id: str
    workflow: str
    approval_id: str
    step: str
    role: str
    action: str
    decided_by: str | None = None
    assignee: str | None = None
    #: Who decided (or, for ``refused``, who tried): ``{"id", "display_name", "roles", "via"}``.
    principal: dict[str, Any] | None = None
    kind: str = "step"
    summary: str | None = None
    #: Why a decision was refused (``approval_refused`` only).
    why: str | None = None


class Hooks:
    """Named no-op lifecycle methods; override any of them."""

    # --- runs -----------------------------------------------------------------------------------------------
    def run_started(self, info: RunInfo) -> None: ...

    def run_waiting(self, info: RunInfo) -> None:
        """The run parked: ``info.status`` is ``waiting_for_approval`` or ``waiting_for_child`` (an operation)."""

    def run_resumed(self, info: RunInfo) -> None: ...

    def run_completed(self, info: RunInfo) -> None: ...

    def run_failed(self, info: RunInfo) -> None: ...

    def run_cancelled(self, info: RunInfo) -> None: ...

    def run_set_aside(self, info: RunInfo) -> None:
        """The run went to ``needs_reconciliation`` or ``dead_letter`` and waits for a person."""

    def run_reopened(self, info: RunInfo) -> None:
        """A person reconciled or retried a set-aside run; it runs again."""

    # --- steps ------------------------------------------------------------------------------------------------
    def step_started(self, info: StepInfo) -> None: ...

    def step_completed(self, info: StepInfo) -> None: ...

    def step_failed(self, info: StepInfo) -> None: ...

    # --- agents -----------------------------------------------------------------------------------------------
    def model_turn_started(self, info: ModelTurnInfo) -> None: ...

    def model_turn_recorded(self, info: ModelTurnInfo) -> None: ...

    def model_turn_estimated(self, info: ModelTurnInfo) -> None:
        """A request whose response was lost was charged at an estimate (``info.cost_micros``, an upper bound)."""

    def tool_call_answered(self, info: ToolCallInfo) -> None: ...

    # --- approvals --------------------------------------------------------------------------------------------
    def approval_requested(self, info: ApprovalInfo) -> None: ...

    def approval_decided(self, info: ApprovalInfo) -> None: ...

    def approval_escalated(self, info: ApprovalInfo) -> None: ...

    def approval_expired(self, info: ApprovalInfo) -> None: ...

    def approval_reminded(self, info: ApprovalInfo) -> None:
        """The approval's ``sla`` passed without a decision; its approvers were reminded."""

    def approval_refused(self, info: ApprovalInfo) -> None:
        """Someone who may not decide the approval tried to (``info.principal``, ``info.why``)."""


class HookChain:
    """The hooks of one runtime, called in order; a failing hook is logged and the rest still run."""

    def __init__(self, hooks: Iterable[Hooks] = ()) -> None:
        self.hooks: list[Hooks] = list(hooks)

    def add(self, hook: Hooks) -> None:
        self.hooks.append(hook)

    def call(self, name: str, info: Any) -> None:
        for hook in self.hooks:
            try:
                getattr(hook, name)(info)
            except Exception:
                log.exception("hook %s.%s failed", type(hook).__name__, name)


def after_commit(session: Session, name: str, info: Any) -> None:
    """Call hook ``name`` with ``info`` once ``session``'s transaction has committed (never if it rolls back)."""
    chain = session.info.get(HOOKS_KEY)
    if chain is not None and chain.hooks:  # no hooks: the common case costs one dict lookup
        on_commit(session, partial(chain.call, name, info))
