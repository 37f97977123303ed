"""Operator actions on a run that are not approvals: cancel, reconcile, retry."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from pipeline.definitions import schemas
from pipeline.definitions.registry import workflow_of
from pipeline.engine import dispatch, recovery, transitions
from pipeline.errors import InvalidRunState
from pipeline.store import queries
from pipeline.store.tables import (
    CLAIMED,
    DEAD_LETTER,
    NEEDS_RECONCILIATION,
)

if TYPE_CHECKING:
    from pipeline.runtime import Runtime


def cancel(runtime: Runtime, run_id: str, *, by: str | None = None, reason: str | None = None) -> None:
    """Flip the run to ``cancelled``. Every step task checks the status first, so no step starts after this;
    a step already running finishes its body, its result is recorded, and the chain stops there."""
    with runtime.db.transaction() as s:
        run = queries.lock_run(s, run_id)
        transitions.cancel(s, run, by=by, reason=reason)


def reconcile(
    runtime: Runtime, run_id: str, *, by: str, happened: bool, result: Any = None, comment: str | None = None
) -> None:
    """A person settles a side effect whose outcome was unknown (status ``needs_reconciliation``).

    ``happened=True`` records ``result`` as the operation's outcome (a tool step's output, validated against the
    tool's ``output_schema``, or what a model's tool call returned); ``happened=False`` runs the operation again.
    Either way the run continues from there.
    """
    if not isinstance(by, str) or not by.strip():
        raise InvalidRunState("reconciling needs the identity of who checked (by=...)")
    with runtime.db.transaction() as s:
        run = queries.lock_run(s, run_id)
        if run.status != NEEDS_RECONCILIATION:
            raise InvalidRunState(f"run {run_id} is {run.status}, not needs_reconciliation")
        op_key = str((run.error or {}).get("op_key") or "")
        row = queries.get_effect(s, run_id, op_key) if op_key else None
        if row is None or row.status != CLAIMED:
            raise InvalidRunState(f"run {run_id} has no interrupted operation {op_key!r} to reconcile")
        if not happened:
            s.delete(row)
        elif row.kind == "tool_call":
            content = schemas.to_json(result, what="reconciled result")
            transitions.record(
                s, run, op_key, row.kind, {"content": json.dumps(content, sort_keys=True), "is_error": False}, row=row
            )
        else:
            spec = workflow_of(runtime, run.workflow).step(op_key)
            tool = getattr(spec, "tool", None)
            if tool is None:
                raise InvalidRunState(f"{op_key!r} is not a tool step; nothing to reconcile")
            output = tool.validate_output(result, what=f"reconciled output of step {op_key!r}")
            delta = {"set": {spec.state_key: output}, "unset": []}
            transitions.complete_step(s, run, op_key, row.kind, delta, row=row)
        transitions.reopen(s, run, "run.reconciled", op_key, by=by, happened=happened, comment=comment)
        seq = run.dispatch_seq
    dispatch.resume(runtime, run_id, seq)


def retry(runtime: Runtime, run_id: str, *, by: str) -> None:
    """Give a ``dead_letter`` run another go from its last recorded point, with its recovery count reset."""
    with runtime.db.transaction() as s:
        run = queries.lock_run(s, run_id)
        if run.status != DEAD_LETTER:
            raise InvalidRunState(f"run {run_id} is {run.status}, not dead_letter")
        workflow = workflow_of(runtime, run.workflow)
        run.recoveries = 0
        transitions.reopen(s, run, "run.retried", None, by=by)
        for row in queries.effects(s, run_id):
            if row.status != CLAIMED:
                continue
            if recovery._uncertain(workflow, row):
                recovery.needs_reconciliation(s, run, row.op_key, f"{row.op_key} ({row.kind})")
                return
            s.delete(row)
        seq = run.dispatch_seq
    dispatch.resume(runtime, run_id, seq)
