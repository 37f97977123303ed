"""What the web pages read, always through an explicit runtime (the app's, or ``pipeline.runtime.current()``)."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app
from sqlalchemy import select, text

from pipeline import runtime as rubot_runtime
from pipeline.runs import Approval, Run
from pipeline.runtime import Runtime
from pipeline.store import queries
from pipeline.store.tables import PENDING, WAITING, ApprovalRow, RunRow

EXTENSION = "rubot_web"


def runtime() -> Runtime:
    """The runtime given to ``create_app``; without one, the process's current runtime, looked up per request."""
    configured = current_app.extensions.get(EXTENSION, {}).get("runtime")
    return configured if configured is not None else rubot_runtime.current()


def get_run(run_id: str) -> Run:
    """Load one run; ``RunNotFound`` if there is none."""
    rt = runtime()
    with rt.db.transaction() as s:
        return Run(rt, queries.get_run(s, run_id))


def list_runs(*, statuses: list[str] | None = None, workflow: str | None = None, limit: int = 50) -> list[Run]:
    """The newest runs first, optionally filtered by status and workflow."""
    rt = runtime()
    with rt.db.transaction() as s:
        rows = queries.list_runs(s, statuses=statuses, workflow=workflow, limit=limit)
        return [Run(rt, row) for row in rows]


@dataclass(frozen=True)
class PendingItem:
    """A pending approval with the run it belongs to."""

    approval: Approval
    run_id: str
    workflow: str
    run_status: str


def pending_approvals(*, limit: int = 200) -> list[PendingItem]:
    """Every pending approval, oldest first (the ones waiting longest come first)."""
    rt = runtime()
    query = (
        select(ApprovalRow, RunRow.workflow, RunRow.status)
        .join(RunRow, RunRow.id == ApprovalRow.run_id)
        # A cancelled run keeps its approval row "pending"; only runs that can still resume are listed.
        .where(ApprovalRow.status == PENDING, RunRow.status == WAITING)
        .order_by(ApprovalRow.created_at, ApprovalRow.id)
        .limit(limit)
    )
    with rt.db.transaction() as s:
        return [
            PendingItem(Approval.from_row(row), row.run_id, workflow, status)
            for row, workflow, status in s.execute(query)
        ]


def open_approval(run: Run) -> Approval | None:
    """The approval a decision would apply to: pending, on a run that is still waiting for it."""
    return run.pending_approval if run.waiting_for_approval else None


def ping() -> None:
    """Raise if the database is unreachable or not migrated to the current schema."""
    rt = runtime()
    with rt.db.transaction() as s:
        s.execute(text("SELECT 1"))
    rt.db.check_migrated()
