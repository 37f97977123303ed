"""Where a step runs: the guard around every step body.

``execute_step`` is what the ``rubot.step`` task does. In order:

1. In one transaction: stop if the run is no longer running (cancelled, failed, parked); return the
   recorded result if the ledger already has this step (a redelivered or re-sent message); otherwise claim
   the step (a ledger row with a lease, see :mod:`pipeline.engine.leases`) and mark it started. A claim that
   another delivery still holds is reported as ``HOLD``, never as done: inside a parallel group that would
   let the group join without this step's result.
2. Run the body outside any transaction (tools may take long and call the network), renewing the lease.
3. In one transaction with the run row locked: record the ledger row ``(run_id, step)`` as done and apply
   the step's state delta (:func:`pipeline.engine.transitions.complete_step`). The unique key makes a
   concurrent duplicate lose cleanly.

Failures of the body are recorded on the run (status ``failed``, ``error`` with the reason and field errors)
and never re-raised into Celery: a broken step is a run outcome, not an infrastructure error to retry.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import IntegrityError

from pipeline.definitions import registry
from pipeline.definitions.dsl import ApprovalStep
from pipeline.engine import admission, approvals, bodies, leases, recovery, transitions
from pipeline.engine.leases import Claim
from pipeline.engine.snapshots import Approval, RunView
from pipeline.engine.transitions import Outcome
from pipeline.errors import RubotError, StepFailed
from pipeline.store import queries
from pipeline.store.tables import DONE, QUEUED, RUNNING

if TYPE_CHECKING:
    from pipeline.runtime import Runtime

log = logging.getLogger("rubot.executor")


def execute_step(runtime: Runtime, run_id: str, step_name: str, *, task_id: str | None = None) -> Outcome:
    with runtime.db.transaction() as s:
        run = queries.lock_run(s, run_id)
        recorded = queries.get_effect(s, run_id, step_name)
        if recorded is not None and recorded.status == DONE:
            queries.add_event(s, run_id, "step.duplicate_ignored", step_name, task_id=task_id)
            return Outcome.CONTINUE if run.status == RUNNING else Outcome.HALT
        if run.status not in (QUEUED, RUNNING):
            queries.add_event(s, run_id, "step.skipped", step_name, status=run.status, task_id=task_id)
            return Outcome.HALT
        workflow = registry.workflow_of(runtime, run.workflow)
        spec = workflow.step_named(step_name)
        if spec is None:
            message = f"{run.workflow} has no step {step_name!r} (was the workflow changed while the run was active?)"
            transitions.fail(s, run, {"reason": "unknown_step", "message": message})
            return Outcome.HALT
        if isinstance(spec, ApprovalStep):
            return approvals.park(s, run, spec)
        starter = bodies.deferred_starter(spec)
        if starter is None:
            held = _claim(runtime, s, run, spec, task_id)
            if held is not None:
                return held
        transitions.step_started(s, run, step_name, spec.kind, task_id=task_id)
        view = RunView(
            id=run.id,
            workflow=run.workflow,
            input=run.input,
            context=run.context,
            subject=run.subject,
            state=dict(run.state or {}),
            approvals=[Approval.from_row(a) for a in queries.approvals(s, run_id)],
        )
        info = transitions.step_info(run, step_name, spec.kind, task_id=task_id)

    runtime.hooks.call("step_started", info)
    try:
        if starter is not None:
            # The kind's own tasks (an agent's turns) record the step and continue the run.
            starter(runtime, run_id, spec, bodies.step_input(spec, view), task_id=task_id)  # type: ignore[arg-type]
            return Outcome.PARK
        with leases.heartbeat(runtime, run_id, step_name):
            delta = bodies.run_body(runtime, workflow, spec, view, task_id=task_id)
    except RubotError as exc:
        return _fail(runtime, run_id, step_name, spec.kind, exc.as_dict(), task_id)
    except Exception as exc:  # a bug or failure in user code: record it with its type
        log.exception("step %s of run %s raised", step_name, run_id)
        error = StepFailed(f"step {step_name!r} raised {type(exc).__name__}: {exc}")
        return _fail(
            runtime, run_id, step_name, spec.kind, {**error.as_dict(), "exception": type(exc).__name__}, task_id
        )

    try:
        with runtime.db.transaction() as s:
            run = queries.lock_run(s, run_id)
            row = queries.get_effect(s, run_id, step_name)
            if row is not None and row.status == DONE:
                queries.add_event(s, run_id, "step.duplicate_ignored", step_name, task_id=task_id)
                return Outcome.CONTINUE
            # row is None: our claim was released or taken over and given up; record all the same
            transitions.complete_step(s, run, step_name, spec.kind, delta, task_id=task_id, row=row)
            return Outcome.CONTINUE if run.status == RUNNING else Outcome.HALT
    except IntegrityError:
        # A concurrent delivery of the same step committed first; its result stands.
        return Outcome.CONTINUE


def _claim(runtime: Runtime, s: Any, run: Any, spec: Any, task_id: str | None) -> Outcome | None:
    """Claim the step for this delivery: ``None`` when it may run here, else what the task should report."""
    name = spec.name
    claim, row = leases.claim(s, run.id, name, spec.kind, task_id=task_id, lease_seconds=runtime.settings.lease_seconds)
    if claim is Claim.ACQUIRED:
        return None
    if claim is Claim.HELD:
        # Another delivery (perhaps an earlier delivery of this very message, on a worker that has just died)
        # holds the lease. This one must not report the step as done: it waits and looks again.
        queries.add_event(s, run.id, "step.held_elsewhere", name, task_id=task_id, holder=row.task_id)
        return Outcome.HOLD
    # The previous holder died mid-step.
    tool = getattr(spec, "tool", None)
    if tool is not None and tool.side_effects and not tool.idempotent:
        recovery.needs_reconciliation(s, run, name, f"step {name} (tool {tool.name})")
        return Outcome.HALT
    if not recovery.count_recovery(s, run, name, "lease expired", runtime.settings.max_recoveries):
        return Outcome.HALT
    leases.take_over(row, task_id=task_id, lease_seconds=runtime.settings.lease_seconds)
    return None


def _fail(runtime: Runtime, run_id: str, step_name: str, kind: str, error: dict, task_id: str | None) -> Outcome:
    with runtime.db.transaction() as s:
        run = queries.lock_run(s, run_id)
        transitions.fail_step(s, run, step_name, kind, error, task_id=task_id)
    admission.admit_next(runtime)
    return Outcome.HALT
