"""What the web pages read, always through an explicit runtime (the app's, or ``pipeline.runtime.current()``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from flask import current_app
from sqlalchemy import select, text

from pipeline import observe, replays
from pipeline import runtime as rubot_runtime
from pipeline.auth.principal import Principal
from pipeline.definitions import registry
from pipeline.engine import approvals, forks
from pipeline.errors import RubotError, RunNotFound
from pipeline.llm import requests
from pipeline.redact import redact
from pipeline.runs import Approval, Run
from pipeline.runtime import Runtime
from pipeline.store import queries
from pipeline.store.tables import PENDING, WAITING, ApprovalRow, RunRow

EXTENSION = "rubot_web"


def runtime() -> Runtime:
    """The runtime given to ``create_app``; without one, the process's current runtime, looked up per request."""
    configured = current_app.extensions.get(EXTENSION, {}).get("runtime")
    rt = configured if configured is not None else rubot_runtime.current()
    registry.ensure_imported(rt.settings.workflow_modules)  # which fields are sensitive, to redact them
    observe.start(rt.settings, where="web")  # Sentry in the web process, when SENTRY_DSN is set (once)
    return rt


def get_run(run_id: str) -> Run:
    """Load one run; ``RunNotFound`` if there is none."""
    rt = runtime()
    with rt.db.transaction() as s:
        return Run(rt, queries.get_run(s, run_id))


def departure(run: Run) -> forks.Departure | None:
    """Where a replay departed from the run it replays (``None``: not a replay, its source is gone, or nothing
    differs yet)."""
    if run.replay_of is None:
        return None
    try:
        return replays.diff(run.replay_of, run.id, rt=runtime())
    except RunNotFound:
        return None


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


def pending_approvals(principal: Principal | None, *, limit: int = 200) -> list[PendingItem]:
    """The pending approvals ``principal`` may decide, oldest first (the ones waiting longest come first).

    Nobody signed in sees none: the inbox lists only what its reader may decide.
    """
    if principal is None:
        return []
    rt = runtime()
    query = (
        select(ApprovalRow, RunRow)
        .join(RunRow, RunRow.id == ApprovalRow.run_id)
        # A cancelled run keeps its approval row "pending"; only runs that can still resume are listed.
        .where(ApprovalRow.status == PENDING, RunRow.status == WAITING)
        .order_by(ApprovalRow.created_at, ApprovalRow.id)
        .limit(limit)
    )
    items = []
    with rt.db.transaction() as s:
        for row, run in s.execute(query):
            try:
                allowed = approvals.refusal_for(rt, run, row, principal) is None
            except RubotError:  # a run of a workflow this process cannot load is nobody's to decide here
                allowed = False
            if allowed:
                items.append(PendingItem(Approval.from_row(row), row.run_id, run.workflow, run.status))
    return items


def refusal(run_id: str, approval_id: str, principal: Principal) -> str | None:
    """Why ``principal`` may not decide this approval (shown on the approval page), or ``None``."""
    rt = runtime()
    with rt.db.transaction() as s:
        run = queries.get_run(s, run_id)
        row = s.get(ApprovalRow, approval_id)
        if row is None:
            return "no such approval"
        return approvals.refusal_for(rt, run, row, principal)


_TOOL_OP = re.compile(r"^(?P<step>[^/]+)/turn-(?P<n>\d+)/tool-(?P<call>.+)$")


def evidence(run: Run, approval: Approval) -> dict[str, Any]:
    """What the approval page shows about what is being decided (secrets redacted).

    A tool call: the tool, its arguments as ``(name, value)`` pairs, the hash the decision is bound to, the model's
    stated reason and the transcript up to the call (rebuilt from the ledger). An approval step: the run's input,
    the state the next steps act on and, in a later round, what changed since the last one.
    """
    shown = approval.evidence or {}
    if approval.kind == "tool_call":
        shown_input = approval.approver_input
        arguments = shown_input if isinstance(shown_input, dict) else {"input": shown_input}
        return {
            "kind": "tool_call",
            "tool": approval.tool,
            "arguments": sorted(arguments.items()),
            "args_hash": approval.args_hash,
            "model_reason": shown.get("model_reason"),
            "transcript": transcript(run.id, approval.step),
        }
    return {
        "kind": "step",
        "input": redact(run.input, for_approvers=True),
        "state": shown.get("state", redact(run.state)),
        "round": int(shown.get("round", 1)),
        "changes": shown.get("changes") or [],
        "previous_comment": shown.get("previous_comment"),
    }


def transcript(run_id: str, op_key: str) -> list[dict[str, Any]]:
    """The agent's conversation up to the turn that made the tool call ``op_key``, as blocks (redacted)."""
    match = _TOOL_OP.match(op_key)
    if match is None:
        return []
    rt = runtime()
    with rt.db.transaction() as s:
        ledger = queries.effects_under(s, run_id, f"{match['step']}/")
        try:
            messages = requests.transcript_through(ledger, match["step"], int(match["n"]))
        except (KeyError, TypeError):  # a ledger row missing (archived round): show what there is, not a 500
            return []
    shown = []
    for message in redact(messages):
        content = message["content"]
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        shown.append({"role": message["role"], "blocks": blocks})
    return shown


def open_approval(run: Run) -> Approval | None:
    """The approval a decision would apply to: pending, on a run that is still waiting for it."""
    return run.pending_approval if run.waiting_for_approval else None


def ping() -> None:
    """Raise if the database is unreachable or not migrated to the current schema."""
    rt = runtime()
    with rt.db.transaction() as s:
        s.execute(text("SELECT 1"))
    rt.db.check_migrated()
