"""Where a step runs: the guard around every step body.

``execute_step`` is what the ``rubot.step`` task does. In order:

1. In one transaction: stop if the run is no longer running (cancelled, failed, parked); return the
   recorded result if the ledger already has this step (a redelivered or re-sent message); otherwise mark
   the step started.
2. Run the body outside any transaction (tools may take long and call the network).
3. In one transaction with the run row locked: insert the ledger row ``(run_id, step)`` and apply the
   step's state delta. The unique key makes a concurrent duplicate lose cleanly.

Failures of the body are recorded on the run (status ``failed``, ``error`` with the reason and field errors)
and never re-raised into Celery: a broken step is a run outcome, not an infrastructure error to retry.
"""

from __future__ import annotations

import enum
import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import IntegrityError

from pipeline import admission, agent_loop, approvals, bodies, leases, recovery, registry
from pipeline.dsl import AgentStep, ApprovalStep
from pipeline.errors import RubotError, StepFailed
from pipeline.leases import Claim
from pipeline.runs import Approval, RunView
from pipeline.store import queries
from pipeline.store.tables import DONE, QUEUED, RUNNING, utcnow

if TYPE_CHECKING:
    from pipeline.runtime import Runtime

log = logging.getLogger("rubot.executor")


class Outcome(enum.Enum):
    CONTINUE = "continue"  # the step is recorded; the chain may go on
    HALT = "halt"  # the run is not running (failed, cancelled): stop the chain
    PARK = "park"  # the segment ends here: the run waits for a person, or an agent's turns carry on


def workflow_of(runtime: Runtime, name: str) -> type:
    return registry.workflow(name, modules=runtime.settings.workflow_modules)


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
        workflow = workflow_of(runtime, run.workflow)
        spec = workflow._steps.get(step_name)
        if spec is None:
            queries.fail_run(
                s,
                run,
                {
                    "reason": "unknown_step",
                    "message": f"{run.workflow} has no step "
                    f"{step_name!r} (was the workflow changed while the run was active?)",
                },
            )
            return Outcome.HALT
        if isinstance(spec, ApprovalStep):
            return approvals.park(s, run, spec)
        if not isinstance(spec, AgentStep) and not _claim(runtime, s, run, spec, task_id):
            return Outcome.HALT
        run.updated_at = utcnow()
        if run.status == QUEUED:
            run.status, run.started_at = RUNNING, utcnow()
        queries.add_event(s, run_id, "step.started", step_name, kind=spec.kind, task_id=task_id)
        view = RunView(
            id=run.id,
            workflow=run.workflow,
            input=run.input,
            context=run.context,
            subject=run.subject,
            state=dict(run.state or {}),
            approvals=[Approval.from_row(a) for a in queries.approvals(s, run_id)],
        )

    try:
        if isinstance(spec, AgentStep):
            # The agent's turns are tasks of their own; the last one records the step and continues the run.
            agent_loop.begin(runtime, run_id, spec, bodies.step_input(spec, view), task_id=task_id)
            return Outcome.PARK
        with leases.heartbeat(runtime, run_id, step_name):
            delta = bodies.run_body(runtime, workflow, spec, view, task_id=task_id)
    except RubotError as exc:
        return _fail(runtime, run_id, step_name, exc.as_dict())
    except Exception as exc:  # a bug or failure in user code: record it with its type
        log.exception("step %s of run %s raised", step_name, run_id)
        error = StepFailed(f"step {step_name!r} raised {type(exc).__name__}: {exc}")
        return _fail(runtime, run_id, step_name, {**error.as_dict(), "exception": type(exc).__name__})

    try:
        with runtime.db.transaction() as s:
            run = queries.lock_run(s, run_id)
            row = queries.get_effect(s, run_id, step_name)
            if row is not None and row.status == DONE:
                queries.add_event(s, run_id, "step.duplicate_ignored", step_name, task_id=task_id)
                return Outcome.CONTINUE
            if row is None:  # our claim was released or taken over and given up: record all the same
                queries.add_effect(s, run_id, step_name, spec.kind, delta, task_id)
            else:
                row.result, row.status, row.lease_expires_at = delta, DONE, None
            run.state = bodies.apply(run.state, delta)
            queries.add_event(s, run_id, "step.completed", step_name, keys=sorted(delta["set"]))
            return Outcome.CONTINUE if run.status == RUNNING else Outcome.HALT
    except IntegrityError:
        # A concurrent delivery of the same step committed first; its result stands.
        return Outcome.CONTINUE


def _claim(runtime: Runtime, s: Any, run: Any, spec: Any, task_id: str | None) -> bool:
    """Claim the step for this delivery; False when it must not run here (see :mod:`pipeline.leases`)."""
    name = spec.name
    claim, row = leases.claim(s, run.id, name, spec.kind, task_id=task_id, lease_seconds=runtime.settings.lease_seconds)
    if claim is Claim.ACQUIRED:
        return True
    if claim is Claim.HELD:
        queries.add_event(s, run.id, "step.held_elsewhere", name, task_id=task_id, holder=row.task_id)
        return False
    # The previous holder died mid-step.
    tool = getattr(spec, "tool", None)
    if tool is not None and tool.side_effects and not tool.idempotent:
        recovery.needs_reconciliation(s, run, name, f"step {name} (tool {tool.name})")
        return False
    if not recovery.count_recovery(s, run, name, "lease expired", runtime.settings.max_recoveries):
        return False
    leases.take_over(row, task_id=task_id, lease_seconds=runtime.settings.lease_seconds)
    return True


def _fail(runtime: Runtime, run_id: str, step_name: str, error: dict) -> Outcome:
    with runtime.db.transaction() as s:
        run = queries.lock_run(s, run_id)
        leases.drop(s, run_id, step_name)
        queries.add_event(s, run_id, "step.failed", step_name, **error)
        queries.fail_run(s, run, {**error, "step": step_name}, step=step_name)
    admission.admit_next(runtime)
    return Outcome.HALT
