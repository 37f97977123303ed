"""Operator actions on a run that are not approvals: cancel."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline import admission
from pipeline.errors import InvalidRunState
from pipeline.store import queries
from pipeline.store.tables import CANCELLED, PENDING, TERMINAL, utcnow

if TYPE_CHECKING:
    from pipeline.runtime import Runtime


def cancel(runtime: Runtime, run_id: str, *, by: str | None = None, reason: str | None = None) -> None:
    """Flip the run to ``cancelled``. Every step task checks the status first, so no step starts after this;
    a step already running finishes its body, its result is recorded, and the chain stops there."""
    with runtime.db.transaction() as s:
        run = queries.lock_run(s, run_id)
        if run.status in TERMINAL:
            raise InvalidRunState(f"run {run_id} is already {run.status}")
        previous = run.status
        for approval in queries.approvals(s, run_id):
            if approval.status == PENDING:  # nobody can decide it any more
                approval.status = CANCELLED
        run.status, run.finished_at = CANCELLED, utcnow()
        run.error = {"reason": "cancelled", "message": reason or "cancelled", "by": by}
        queries.add_event(s, run_id, "run.cancelled", by=by, reason=reason, previous_status=previous)
    admission.admit_next(runtime)
