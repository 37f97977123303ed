"""Sending a turn of a ``batch=True`` agent step through the Message Batches API, and parking the run.

Each submitted request has its own ledger row, ``<step>/turn-<n>/batch-<k>`` (kind ``batch_request``), whose key
also gives the request's ``custom_id``. In order:

1. In the turn task's transaction: a live submission row for the turn means it was submitted already (or is being
   submitted by another delivery) — nothing to do. A dead one (its worker died while submitting) is settled as
   ``lost`` and charged at an estimate, since the batch may have been created. Otherwise a new row is claimed.
2. Outside it: earlier lost attempts are charged, then the batch is created (one request, the turn's).
3. In a new transaction: the batch id goes on the row and the row's claim is stretched until the results must have
   been read (the batch's 24-hour deadline plus :data:`RESULTS_GRACE`). The task ends: the run now waits with no
   worker, no broker message and no result key, and the sweeper sees a live claim, not a stalled run.

``rubot.collect_batches`` (:mod:`pipeline.llm.batch_collect`) later records the response at the batch price and
continues the run, or submits the turn again (``k + 1``) after an errored, expired or cancelled request.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from pipeline.engine import leases, transitions
from pipeline.engine.leases import Claim
from pipeline.errors import BatchFailed, ModelError
from pipeline.llm import charges, requests
from pipeline.models.base import ModelRequest
from pipeline.models.batches import CANCELED, ERRORED, EXPIRED, custom_id
from pipeline.store import queries
from pipeline.store.tables import CLAIMED, EffectRow, RunRow, utcnow

if TYPE_CHECKING:
    from pipeline.definitions.agent import Agent
    from pipeline.runtime import Runtime

KIND = "batch_request"
#: How long after a batch's deadline its results are still looked for before the sweeper presumes them lost
#: (Anthropic keeps results for 29 days).
RESULTS_GRACE = timedelta(days=7)
#: Outcomes that use up one of ``RUBOT_BATCH_MAX_ATTEMPTS``; "unsent" (the API refused the submission) does not.
FAILED_OUTCOMES = (ERRORED, EXPIRED, CANCELED, "lost")


def submission_op(step: str, n: int, k: int) -> str:
    return f"{requests.turn_op(step, n)}/batch-{k}"


def submissions(ledger: dict[str, EffectRow], step: str, n: int) -> list[EffectRow]:
    """The turn's submission rows, oldest first."""
    prefix = f"{requests.turn_op(step, n)}/batch-"
    rows = [row for key, row in ledger.items() if key.startswith(prefix) and key[len(prefix) :].isdigit()]
    return sorted(rows, key=lambda row: int(row.op_key[len(prefix) :]))


def failures(rows: list[EffectRow]) -> int:
    return sum(1 for row in rows if (row.result or {}).get("outcome") in FAILED_OUTCOMES)


@dataclass(frozen=True)
class Submission:
    """A claimed submission about to be sent."""

    op: str
    custom_id: str
    request: ModelRequest
    step: str
    n: int
    agent: type[Agent]
    lost: list[str]


def prepare(
    runtime: Runtime,
    s: Session,
    run: RunRow,
    agent: type[Agent],
    ledger: dict[str, EffectRow],
    step: str,
    n: int,
    *,
    task_id: str | None,
) -> Submission | None:
    """Claim the turn's next submission (in the caller's transaction), or ``None`` when there is nothing to send."""
    rows = submissions(ledger, step, n)
    lost: list[str] = []
    for row in rows:
        if row.status != CLAIMED:
            continue
        claim, _ = leases.claim(s, run.id, row.op_key, KIND, task_id=task_id, lease_seconds=1)
        if claim is Claim.HELD:
            return None  # in a batch (or being submitted by another delivery): the collector carries on
        # The worker submitting it died: the batch may exist and be billed; charge it and submit anew.
        lost.append(str((row.result or {}).get("custom_id")))
        transitions.settle_batch_request(s, run, row, "lost", step=step)
    if failures(rows) + len(lost) >= runtime.settings.batch_max_attempts:
        error = BatchFailed(f"turn {n} of {step!r} could not be completed through the Message Batches API")
        transitions.fail(s, run, {**error.as_dict(), "step": step, "attempts": len(rows)}, step=step)
        return None
    op = submission_op(step, n, len(rows) + 1)
    _, row = leases.claim(s, run.id, op, KIND, task_id=task_id, lease_seconds=runtime.settings.lease_seconds)
    cid = custom_id(run.id, op)
    row.result = {"custom_id": cid}
    request = requests.build_request(runtime, agent, ledger, step, n)
    return Submission(op, cid, request, step, n, agent, [c for c in lost if c != "None"])


def send(runtime: Runtime, run_id: str, sub: Submission) -> None:
    """Create the batch and park the run on it."""
    try:
        with leases.heartbeat(runtime, run_id, sub.op):
            if sub.lost:
                charges.record_lost(
                    runtime, run_id, sub.step, sub.n, sub.agent, sub.request, sub.lost, batch=True, why="worker lost"
                )
            info = runtime.model.submit_batch([(sub.custom_id, sub.request)])  # type: ignore[attr-defined]
    except ModelError as exc:
        _not_submitted(runtime, run_id, sub, exc)
        raise
    lease_until = (info.expires_at or utcnow() + timedelta(hours=24)) + RESULTS_GRACE
    with runtime.db.transaction() as s:
        run = queries.lock_run(s, run_id)
        row = queries.get_effect(s, run_id, sub.op)
        if row is not None and row.status == CLAIMED:
            transitions.note_batch_submitted(
                s, run, row, step=sub.step, turn=sub.n, batch_id=info.id, lease_until=lease_until
            )


def _not_submitted(runtime: Runtime, run_id: str, sub: Submission, exc: ModelError) -> None:
    """Settle a submission that failed, so the next attempt gets a key (and a ``custom_id``) of its own."""
    if exc.maybe_billed:  # the request timed out on the wire: the batch may exist
        charges.record_lost(
            runtime, run_id, sub.step, sub.n, sub.agent, sub.request, [sub.custom_id], batch=True, why="submit lost"
        )
    outcome = "lost" if exc.maybe_billed else "unsent"
    with runtime.db.transaction() as s:
        run = queries.lock_run(s, run_id)
        row = queries.get_effect(s, run_id, sub.op)
        if row is not None and row.status == CLAIMED:
            details: dict[str, Any] = {"error": exc.message[:300]}
            transitions.settle_batch_request(s, run, row, outcome, step=sub.step, **details)
