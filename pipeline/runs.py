"""``Run``: a read snapshot of one run from SQL, with the decisions a caller can make on it.

A ``Run`` never holds a database session; every property reflects the moment it was loaded, and
``refresh()`` reloads. The event trail, approvals and ledger are loaded on first access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeline.auth.principal import Principal
from pipeline.engine.snapshots import Approval, Effect, Event, Usage
from pipeline.errors import ApprovalError
from pipeline.store import queries
from pipeline.store.tables import CANCELLED, COMPLETED, FAILED, TERMINAL, WAITING, RunRow

if TYPE_CHECKING:
    from pipeline.runtime import Runtime

__all__ = ["Approval", "Effect", "Event", "Run", "Usage"]


class Run:
    """One workflow run. Statuses: queued, running, waiting_for_approval, waiting_for_child, completed, failed,
    cancelled (and needs_reconciliation, dead_letter)."""

    def __init__(self, runtime: Runtime, row: RunRow) -> None:
        self._runtime = runtime
        self._load(row)

    def _load(self, row: RunRow) -> None:
        self.id: str = row.id
        self.workflow: str = row.workflow
        self.status: str = row.status
        self.input: Any = row.input
        self.context: Any = row.context
        self.subject: Any = row.subject
        #: Who launched the run (``context["user"]["id"]``), when known.
        self.user_id: str | None = row.user_id
        self.state: dict[str, Any] = dict(row.state or {})
        self.output: Any = row.output
        self.error: dict[str, Any] | None = row.error
        self.tokens = Usage(row.input_tokens, row.output_tokens, row.cache_write_tokens, row.cache_read_tokens)
        self.cost_micros: int = row.cost_micros
        #: The part of ``cost_micros`` that is estimated: requests that may have been billed but whose response was
        #: lost (see the ``model.turn_estimated`` events). An upper bound, so the total is never below the bill.
        self.estimated_cost_micros: int = row.estimated_cost_micros or 0
        self.counters: dict[str, int] = dict(row.counters or {})
        self.recoveries: int = row.recoveries or 0
        #: The operation's run whose routing launched this run, if any (its ``children`` include this one).
        self.parent_run_id: str | None = row.parent_run_id
        #: The run this one replays (``pipeline.replay``), if any.
        self.replay_of: str | None = row.replay_of
        self.created_at, self.started_at, self.finished_at = row.created_at, row.started_at, row.finished_at
        self._events: list[Event] | None = None
        self._approvals: list[Approval] | None = None
        self._effects: list[Effect] | None = None

    def __repr__(self) -> str:
        return f"<Run {self.id} {self.workflow} {self.status}>"

    # --- status ------------------------------------------------------------------------------------------

    @property
    def waiting_for_approval(self) -> bool:
        return self.status == WAITING

    @property
    def completed(self) -> bool:
        return self.status == COMPLETED

    @property
    def failed(self) -> bool:
        return self.status == FAILED

    @property
    def cancelled(self) -> bool:
        return self.status == CANCELLED

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    @property
    def cost_usd(self) -> float:
        """Cost in US dollars (stored exactly as integer micro-dollars in ``cost_micros``)."""
        return self.cost_micros / 1_000_000

    @property
    def estimated_cost_usd(self) -> float:
        """The estimated part of :attr:`cost_usd`."""
        return self.estimated_cost_micros / 1_000_000

    # --- lazily loaded trail -------------------------------------------------------------------------------

    @property
    def events(self) -> list[Event]:
        if self._events is None:
            self._events = self._runtime.db.reading(
                lambda s: [
                    Event(e.id, e.type, e.step, e.data or {}, e.created_at, e.seq, e.hash)
                    for e in queries.events(s, self.id)
                ]
            )
        return self._events

    @property
    def approvals(self) -> list[Approval]:
        if self._approvals is None:
            self._approvals = self._runtime.db.reading(
                lambda s: [Approval.from_row(a) for a in queries.approvals(s, self.id)]
            )
        return self._approvals

    @property
    def children(self) -> list[Run]:
        """The runs this run (an Operation's run) launched from its routing, oldest first; loaded on each access."""
        rt = self._runtime
        return rt.db.reading(lambda s: [Run(rt, row) for row in queries.children(s, self.id)])

    @property
    def pending_approval(self) -> Approval | None:
        return next((a for a in self.approvals if a.status == "pending"), None)

    @property
    def effects(self) -> list[Effect]:
        if self._effects is None:
            self._effects = self._runtime.db.reading(
                lambda s: [Effect(e.op_key, e.kind, e.result, e.created_at) for e in queries.effects(s, self.id)]
            )
        return self._effects

    # --- actions -------------------------------------------------------------------------------------------

    def refresh(self) -> Run:
        self._load(self._runtime.db.reading(lambda s: queries.get_run(s, self.id)))
        return self

    def approve(
        self,
        approved_by: str | Principal,
        payload: Any = None,
        *,
        comment: str | None = None,
        approval_id: str | None = None,
        via: str = "python",
    ) -> Approval:
        """Approve the pending approval; the run is re-enqueued from SQL.

        ``approved_by`` is a :class:`~pipeline.auth.Principal` (its roles are checked against the approval's role
        or assignee and the ``approvers`` hooks; :class:`~pipeline.errors.ApprovalForbidden` if it may not) or a
        plain string, which makes this a *trusted-caller* call: your code vouches for the decider, only an
        assignee is checked, and the trail records ``via`` (``"python"``). Without ``payload`` the decision's
        payload is ``{"approved_by": <id>}``.
        """
        return self._decide("approved", approved_by, payload, comment, approval_id, via)

    def reject(
        self,
        rejected_by: str | Principal,
        payload: Any = None,
        *,
        comment: str | None = None,
        approval_id: str | None = None,
        via: str = "python",
    ) -> Approval:
        """Reject the pending approval; the run fails with reason ``rejected`` unless the step continues."""
        return self._decide("rejected", rejected_by, payload, comment, approval_id, via)

    def request_changes(
        self,
        requested_by: str | Principal,
        payload: Any = None,
        *,
        comment: str | None = None,
        approval_id: str | None = None,
        via: str = "python",
    ) -> Approval:
        """Send the approval back with requested changes: the run fails with reason ``changes_requested``,
        continues, or (``on_changes_requested="revise"``) runs again from an earlier step."""
        return self._decide("changes_requested", requested_by, payload, comment, approval_id, via)

    def _decide(
        self,
        decision: str,
        by: str | Principal,
        payload: Any,
        comment: str | None,
        approval_id: str | None,
        via: str,
        *,
        link_id: str | None = None,
    ) -> Approval:
        from pipeline.engine import approvals

        if isinstance(by, Principal):
            principal, trusted = by, False
        elif isinstance(by, str) and by.strip():
            principal, trusted = Principal.of(by.strip(), via=via), True
        else:
            raise ApprovalError("a decision needs the identity of who made it (a non-empty string or a Principal)")
        approval = approvals.decide(
            self._runtime,
            self.id,
            decision,
            by=principal,
            trusted=trusted,
            payload=payload,
            comment=comment,
            approval_id=approval_id,
            link_id=link_id,
        )
        self.refresh()
        return approval

    def cancel(self, *, by: str | None = None, reason: str | None = None) -> Run:
        """Cancel the run: no step starts after this returns."""
        from pipeline.engine import control

        control.cancel(self._runtime, self.id, by=by, reason=reason)
        return self.refresh()

    def reconcile(self, *, by: str, happened: bool, result: Any = None, comment: str | None = None) -> Run:
        """Settle an interrupted side effect (``needs_reconciliation``): it happened, with ``result``, or not."""
        from pipeline.engine import control

        control.reconcile(self._runtime, self.id, by=by, happened=happened, result=result, comment=comment)
        return self.refresh()

    def retry(self, *, by: str) -> Run:
        """Run a ``dead_letter`` run again from its last recorded point."""
        from pipeline.engine import control

        control.retry(self._runtime, self.id, by=by)
        return self.refresh()
