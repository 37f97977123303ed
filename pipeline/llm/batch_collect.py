"""``rubot.collect_batches``, run by beat: read ended Message Batches, record their turns, resume their runs.

In order, for every batch that submitted turns are waiting on (``batch_request`` rows still claimed):

1. Ask the provider for the batch. Still in progress: if the run it serves has ended meanwhile (cancelled,
   failed), cancel the batch once; otherwise wait for the next tick.
2. Ended: read its results. For each waiting request, in one transaction with the run locked: a ``succeeded``
   result is recorded as the turn (``<step>/turn-<n>``, priced at the batch rate) and the submission row is
   settled; an ``errored``, ``expired`` or ``canceled`` one settles the row and, while the run is running, either
   sends the turn again (a new submission) or — after ``RUBOT_BATCH_MAX_ATTEMPTS`` failed ones — fails the run
   with reason ``batch_failed``.
3. After the commit: the run continues exactly as after a synchronous turn (tool calls, next turn, or the answer).

A redelivered or overlapping collect finds the submission row settled and does nothing: a turn is recorded once,
and submitted once per failed attempt. A succeeded request is recorded (its cost counted) even when its run was
cancelled meanwhile: it was billed.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from pipeline.engine import transitions
from pipeline.errors import BatchFailed, ModelError
from pipeline.llm import agent_loop, batch_submit, charges, requests
from pipeline.models.base import ModelResponse
from pipeline.models.batches import ERRORED, SUCCEEDED, BatchItem, supports_batches
from pipeline.store import queries
from pipeline.store.tables import ACTIVE, CLAIMED, RUNNING, EffectRow

if TYPE_CHECKING:
    from pipeline.runtime import Runtime

log = logging.getLogger("rubot.batches")
COLLECT_TASK = "rubot.collect_batches"
_SUBMISSION = re.compile(r"^(?P<step>[^/]+)/turn-(?P<n>\d+)/batch-\d+$")


def collect(runtime: Runtime) -> dict[str, int]:
    """One collection round; returns counts (``waiting``, ``recorded``, ``failed``, ``cancelled``)."""
    summary = {"waiting": 0, "recorded": 0, "failed": 0, "cancelled": 0}
    if not supports_batches(runtime.model):
        return summary
    with runtime.db.transaction() as s:
        rows = s.execute(
            select(EffectRow.run_id, EffectRow.op_key, EffectRow.result).where(
                EffectRow.kind == batch_submit.KIND, EffectRow.status == CLAIMED
            )
        ).all()
    by_batch: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for run_id, op_key, result in rows:
        batch_id = (result or {}).get("batch_id")
        if batch_id:  # rows without one are still being submitted
            by_batch[batch_id].append((run_id, op_key))
    for batch_id, waiting in by_batch.items():
        try:
            _collect_batch(runtime, batch_id, waiting, summary)
        except ModelError as exc:  # the provider is unreachable: the next tick tries again
            log.warning("collecting batch %s failed: %s", batch_id, exc)
        except Exception:  # one bad batch must not keep the others waiting
            log.exception("collecting batch %s failed", batch_id)
    return summary


def _collect_batch(runtime: Runtime, batch_id: str, waiting: list[tuple[str, str]], summary: dict[str, int]) -> None:
    model: Any = runtime.model
    info = model.batch_info(batch_id)
    if not info.ended:
        summary["waiting"] += len(waiting)
        if _abandoned(runtime, waiting) and info.status != "canceling":
            model.cancel_batch(batch_id)  # nobody will use its answers; what it already did is still recorded
            summary["cancelled"] += 1
        return
    results = {item.custom_id: item for item in model.batch_results(batch_id)}
    for run_id, op_key in waiting:
        outcome = _settle(runtime, run_id, op_key, results)
        if outcome is not None:
            summary["recorded" if outcome == SUCCEEDED else "failed"] += 1


def _abandoned(runtime: Runtime, waiting: list[tuple[str, str]]) -> bool:
    with runtime.db.transaction() as s:
        return all(queries.get_run(s, run_id).status not in ACTIVE for run_id, _ in waiting)


def _settle(runtime: Runtime, run_id: str, op_key: str, results: dict[str, BatchItem]) -> str | None:
    """Record one ended request; then continue its run. Returns the outcome, or None if settled before."""
    from pipeline.definitions.registry import workflow_of

    match = _SUBMISSION.match(op_key)
    if match is None:
        return None
    step, n = match["step"], int(match["n"])
    follow: tuple[str, ModelResponse | None] | None = None
    with runtime.db.transaction() as s:
        run = queries.lock_run(s, run_id)
        row = queries.get_effect(s, run_id, op_key)
        if row is None or row.status != CLAIMED:
            return None  # settled by an earlier (or concurrent) collect
        spec = workflow_of(runtime, run.workflow).agent_step(step)
        item = results.get(str((row.result or {}).get("custom_id")))
        if item is None:
            item = BatchItem("", ERRORED, error={"type": "api_error", "message": "no result for this request"})
        outcome = item.outcome
        if outcome == SUCCEEDED and item.response is not None:
            turn = requests.turn_op(step, n)
            if queries.get_effect(s, run_id, turn) is None:
                cost = charges.turn_cost(runtime, requests.model_of(runtime, spec.agent), item.response, batch=True)
                charges.record_response(
                    s, run, None, turn, step=step, n=n, agent=spec.agent, response=item.response, cost=cost, batch=True
                )
            transitions.settle_batch_request(s, run, row, SUCCEEDED, step=step)
            if run.status == RUNNING:
                follow = ("continue", item.response)
        else:
            transitions.settle_batch_request(s, run, row, outcome, step=step, error=item.error)
            if run.status == RUNNING:
                ledger = queries.effects_under(s, run_id, f"{step}/")
                failed = batch_submit.failures(batch_submit.submissions(ledger, step, n))
                if failed >= runtime.settings.batch_max_attempts:
                    error = BatchFailed(
                        f"turn {n} of {step!r} was {outcome} in the Message Batches API {failed} time(s); giving up"
                    )
                    transitions.fail(s, run, {**error.as_dict(), "step": step, "last": item.error}, step=step)
                else:
                    follow = ("resend", None)
    if follow is not None and follow[0] == "continue" and follow[1] is not None:
        agent_loop.after_turn(runtime, run_id, spec, n, follow[1], task_id=None)
    elif follow is not None:
        agent_loop.send_turn(runtime, run_id, step, n)  # submits the turn again, as batch-<k+1>
    return outcome
