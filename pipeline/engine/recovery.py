"""Recovery from dead workers: the beat sweeper, take-overs, the dead letter and reconciliation states.

``sweep`` (task ``rubot.recover``, run by beat every half lease) finds runs whose claimed work has an expired
lease (the worker holding it died) or that made no progress for 1.5 leases with nothing claimed (a message
was lost between a commit and its send), and re-dispatches each from its last recorded point. Every take-over
of expired work counts as a recovery (a stalled run dispatched again does not: it may only be waiting behind
a long queue); a run that needs more than ``max_recoveries`` goes to ``dead_letter`` with its reason,
and a side effect that may already have happened (a tool with ``side_effects`` that is not ``idempotent``)
moves the run to ``needs_reconciliation`` instead of running again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import and_, exists, select
from sqlalchemy.orm import Session

from pipeline.definitions.dsl import ToolStep
from pipeline.definitions.registry import workflow_of
from pipeline.engine import admission, dispatch, on_failure, transitions
from pipeline.store import queries
from pipeline.store.tables import (
    CLAIMED,
    DEAD_LETTER,
    NEEDS_RECONCILIATION,
    QUEUED,
    RUNNING,
    EffectRow,
    RunRow,
    as_utc,
    utcnow,
)

if TYPE_CHECKING:
    from pipeline.definitions.workflow import Workflow
    from pipeline.runtime import Runtime

log = logging.getLogger("rubot.recovery")

#: Leases without progress (and with nothing claimed) after which a run counts as stalled and is dispatched again.
#: A step without side effects is claimed only once it has run for a third of a lease, so a worker that dies in
#: that first third leaves nothing claimed: the stall is how its run is taken over, and 1.5 leases plus the sweep
#: interval (half a lease) keeps that within two leases of the death. A step in a long queue may be dispatched a
#: second time meanwhile; the ledger records it once.
STALLED = 1.5


#: ``handler(runtime, session, run, workflow, row)`` per ledger kind, called (with the run locked) for a dead claim of
#: that kind before it is dropped. The agent loop registers one for model turns: a request may have been billed
#: although its response died with the worker, and that charge must be recorded (see pipeline.llm.charges).
DeadClaimHandler = Callable[["Runtime", Session, RunRow, type, EffectRow], None]
_dead_claim_handlers: dict[str, DeadClaimHandler] = {}


def register_dead_claim(kind: str, handler: DeadClaimHandler) -> None:
    """Let ``handler`` look at every dead claim of ``kind`` the sweeper drops."""
    _dead_claim_handlers[kind] = handler


def needs_reconciliation(
    session: Session, run: RunRow, op_key: str, what: str, *, happened: str = "was interrupted"
) -> None:
    """Set the run aside for a person: ``op_key``'s outcome is unknown (its claim stays, for ``run.reconcile``)."""
    transitions.set_aside(
        session,
        run,
        NEEDS_RECONCILIATION,
        {
            "reason": "needs_reconciliation",
            "op_key": op_key,
            "message": f"{what} {happened} and may already have taken effect; a person must check it "
            "before the run goes on",
        },
    )


def count_recovery(session: Session, run: RunRow, op_key: str | None, why: str, max_recoveries: int) -> bool:
    """Record a take-over; False (and the run set aside as dead letter) when there were too many."""
    run.recoveries = (run.recoveries or 0) + 1
    queries.add_event(session, run.id, "run.recovered", op_key, why=why, recoveries=run.recoveries)
    if run.recoveries > max_recoveries:
        transitions.set_aside(
            session,
            run,
            DEAD_LETTER,
            {
                "reason": "dead_letter",
                "op_key": op_key,
                "recoveries": run.recoveries,
                "message": f"gave up after {run.recoveries} recoveries; last: {why}",
            },
        )
        return False
    return True


def stuck_runs(session: Session, runtime: Runtime, now: datetime) -> dict[str, str]:
    """Active runs that need a take-over, with why."""
    lease = timedelta(seconds=runtime.settings.lease_seconds)
    expired = session.execute(
        select(EffectRow.run_id, EffectRow.op_key)
        .join(RunRow, RunRow.id == EffectRow.run_id)
        .where(EffectRow.status == CLAIMED, EffectRow.lease_expires_at < now, RunRow.status.in_((QUEUED, RUNNING)))
    ).all()
    found = {run_id: f"lease on {op_key} expired" for run_id, op_key in expired}
    live_claim = exists().where(
        and_(EffectRow.run_id == RunRow.id, EffectRow.status == CLAIMED, EffectRow.lease_expires_at >= now)
    )
    started = ~((RunRow.status == QUEUED) & (RunRow.dispatch_seq == 0))  # never-started runs wait for a slot
    stalled = session.execute(
        select(RunRow.id).where(
            RunRow.status.in_((QUEUED, RUNNING)), RunRow.updated_at < now - STALLED * lease, ~live_claim, started
        )
    ).scalars()
    for run_id in stalled:
        found.setdefault(run_id, f"no progress for {STALLED} leases")
    return found


def sweep(runtime: Runtime, *, now: datetime | None = None) -> dict[str, str]:
    """Find stuck runs and recover each; returns ``{run_id: why}`` for the runs touched."""
    now = now or utcnow()
    with runtime.db.transaction() as s:
        stuck = stuck_runs(s, runtime, now)
    for run_id, why in stuck.items():
        try:
            recover(runtime, run_id, why, now=now)
        except Exception:  # one bad run must not stop the others from being recovered
            log.exception("recovering run %s failed", run_id)
    try:
        settle_dead_claims(runtime, now=now)
    except Exception:
        log.exception("settling dead claims of ended runs failed")
    try:
        on_failure.resend_missed(runtime, now=now)
    except Exception:
        log.exception("sending missed on_failure calls failed")
    admission.admit_next(runtime)  # queued runs whose slot freed without a nudge (or whose message was lost)
    return stuck


def recover(runtime: Runtime, run_id: str, why: str, *, now: datetime | None = None) -> bool:
    """Take a stuck run over: release dead claims and dispatch the rest of its plan again."""

    now = now or utcnow()
    with runtime.db.transaction() as s:
        run = queries.lock_run(s, run_id)
        if run.status not in (QUEUED, RUNNING):
            return False
        workflow = workflow_of(runtime, run.workflow)
        dead = [
            r
            for r in queries.effects(s, run_id)
            if r.status == CLAIMED and (expires := as_utc(r.lease_expires_at)) is not None and expires < now
        ]
        if not dead and queries.live_claims(s, run_id, now):
            return False  # someone is working on it after all
        run.updated_at = now  # a stalled run is looked at again only after another STALLED leases
        for row in dead:  # before the run may be set aside below: what the dead worker may have spent is recorded
            handler = _dead_claim_handlers.get(row.kind)
            if handler is not None:
                handler(runtime, s, run, workflow, row)
        if not dead:
            # No worker is known to have died: the run may just wait behind a long queue, or a message was lost.
            # Dispatching again is harmless (the ledger and leases absorb duplicates) and is not a recovery.
            queries.add_event(s, run_id, "run.redispatched", None, why=why)
        elif not count_recovery(s, run, dead[0].op_key, why, runtime.settings.max_recoveries):
            return False
        for row in dead:
            if _uncertain(workflow, row):
                needs_reconciliation(s, run, row.op_key, f"{row.op_key} ({row.kind})")
                return False
            s.delete(row)
        seq = run.dispatch_seq
    dispatch.resume(runtime, run_id, seq)
    return True


def settle_dead_claims(runtime: Runtime, *, now: datetime) -> int:
    """Dead claims (of kinds with a handler) on runs that ended or wait meanwhile — a run cancelled while its model
    request was in flight on a worker that then died: the handler records what that request may have cost, and the
    claim is dropped. The run is not dispatched again."""
    if not _dead_claim_handlers:
        return 0
    with runtime.db.transaction() as s:
        found = s.execute(
            select(EffectRow.run_id, EffectRow.op_key)
            .join(RunRow, RunRow.id == EffectRow.run_id)
            .where(
                EffectRow.status == CLAIMED,
                EffectRow.lease_expires_at < now,
                EffectRow.kind.in_(tuple(_dead_claim_handlers)),
                RunRow.status.notin_((QUEUED, RUNNING)),
            )
        ).all()
    for run_id, op_key in found:
        with runtime.db.transaction() as s:
            run = queries.lock_run(s, run_id)
            row = queries.get_effect(s, run_id, op_key)
            if run.status in (QUEUED, RUNNING) or row is None or row.status != CLAIMED:
                continue
            _dead_claim_handlers[row.kind](runtime, s, run, workflow_of(runtime, run.workflow), row)
            s.delete(row)
    return len(found)


def _uncertain(workflow: type[Workflow], row: EffectRow) -> bool:
    """Whether re-running ``row``'s work could repeat a side effect that may have happened."""
    if row.kind == "tool":
        spec = workflow.step_named(row.op_key)
        tool = spec.tool if isinstance(spec, ToolStep) else None
    elif row.kind == "tool_call":
        step = workflow.step_named(row.op_key.split("/")[0])
        name = (row.result or {}).get("tool") if row.result else None
        agent = getattr(step, "agent", None)
        tool = agent.tool_named(name) if agent is not None and name else None
        if tool is None:
            return True  # cannot tell which tool it was: do not guess
    else:
        return False
    return bool(tool is not None and tool.side_effects and not getattr(tool, "idempotent", False))
