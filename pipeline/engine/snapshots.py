"""Read-only snapshots of a run's parts (events, approvals, ledger entries, token usage) and ``RunView``, what a
``@step`` method sees as ``self.run``. Plain data: no session, no behaviour beyond derived properties."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pipeline.redact import redact
from pipeline.store.tables import ApprovalRow


@dataclass(frozen=True)
class Event:
    id: int
    type: str
    step: str | None
    data: dict[str, Any]
    created_at: datetime
    #: Its place in the run's hash chain (1, 2, 3 ...) and its hash (see ``pipeline.verify``).
    seq: int | None = None
    hash: str | None = None


@dataclass(frozen=True)
class Approval:
    id: str
    step: str
    role: str
    reason: str
    assignee: str | None
    status: str
    decided_by: str | None
    decided_at: datetime | None
    comment: str | None
    decision_payload: Any
    expires_at: datetime | None
    created_at: datetime
    #: ``"step"`` (an approval_step) or ``"tool_call"`` (a model's tool call bound to ``args_hash``).
    kind: str = "step"
    #: The principal that decided: ``{"id", "display_name", "roles", "via"}``.
    principal: dict[str, Any] | None = None
    #: For a tool call: the tool's name, its arguments (secrets redacted) and the hash the decision is bound to.
    tool: str | None = None
    tool_input: Any = None
    args_hash: str | None = None
    #: The arguments as approvers see them: a sensitive field shows what it allows approvers (e.g. last four).
    approver_input: Any = None
    #: The short human summary the step or tool declared (``summary=`` / ``approval_summary``).
    summary: str | None = None
    #: What the approver was shown (redacted): the state (and changes since the last round) or the model's reason.
    evidence: dict[str, Any] | None = None
    #: When the SLA reminder went out, if it did.
    reminded_at: datetime | None = None

    @property
    def decision(self) -> str | None:
        return None if self.status == "pending" else self.status

    @property
    def round(self) -> int:
        """1 for the first round of an approval step, n for the n-th after ``request_changes`` sent it back."""
        return int((self.evidence or {}).get("round", 1))

    @classmethod
    def from_row(cls, row: ApprovalRow) -> Approval:
        return cls(
            id=row.id,
            step=row.step,
            role=row.role,
            reason=row.reason,
            assignee=row.assignee,
            status=row.status,
            decided_by=row.decided_by,
            decided_at=row.decided_at,
            comment=row.comment,
            decision_payload=row.decision_payload,
            expires_at=row.expires_at,
            created_at=row.created_at,
            kind=row.kind or "step",
            principal=row.principal,
            tool=row.tool,
            tool_input=redact(row.tool_input) if row.tool_input is not None else None,
            approver_input=redact(row.tool_input, for_approvers=True) if row.tool_input is not None else None,
            args_hash=row.args_hash,
            summary=row.summary,
            evidence=row.evidence,
            reminded_at=row.reminded_at,
        )


@dataclass(frozen=True)
class Effect:
    op_key: str
    kind: str
    result: Any
    created_at: datetime


@dataclass(frozen=True)
class Usage:
    input_tokens: int
    output_tokens: int
    cache_write_tokens: int
    cache_read_tokens: int

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens + self.cache_write_tokens + self.cache_read_tokens


class RunView:
    """What a ``@step`` method sees as ``self.run``: the run's data with a writable ``state``.

    ``approvals`` is either the list itself or a callable that loads it; it is loaded on first use, so steps
    that never look at approvals cost no query.
    """

    def __init__(
        self,
        *,
        id: str,
        workflow: str,
        input: Any,
        context: Any,
        subject: Any,
        state: dict[str, Any],
        approvals: list[Approval] | Callable[[], list[Approval]],
    ) -> None:
        self.id = id
        self.workflow = workflow
        self.input = input
        self.context = context if context is not None else {}
        self.subject = subject
        self.state = state
        self._approvals = approvals

    @classmethod
    def of(cls, run: Any, approvals: list[Approval] | Callable[[], list[Approval]]) -> RunView:
        """The view of a run row (or a row read with the same columns), with a copy of its state."""
        return cls(
            id=run.id,
            workflow=run.workflow,
            input=run.input,
            context=run.context,
            subject=run.subject,
            state=dict(run.state or {}),
            approvals=approvals,
        )

    @property
    def approvals(self) -> list[Approval]:
        if callable(self._approvals):
            self._approvals = self._approvals()
        return self._approvals
