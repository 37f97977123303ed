"""Where a step runs: the guard around every step body.

``execute_step`` is what the ``rubot.step`` task does. In order:

1. Read the run and this step's ledger row (one query, no lock, no commit). Stop if the run is no longer
   running (cancelled, failed, parked); do nothing but report success if the step is already recorded (a
   redelivered or re-sent message); report ``HOLD`` — never success — if another delivery holds the step's
   lease: inside a parallel group, success would let the group join without this step's result.
2. Branches and authorization, before anything is claimed (:mod:`pipeline.engine.branching`): a step whose
   ``if_``/``unless`` says no is recorded as skipped, in one transaction, and nothing else happens; a ``choice``
   decides, records and dispatches what follows in one transaction. A tool step is authorized against the run's
   user (``Tool.permitted_for`` and the workflow's policy hook, as a model's tool call is); a denial fails the
   run with reason ``tool_denied`` and the tool never runs.
3. A step with side effects (a tool with ``side_effects = True``) is *claimed* first: a ledger row with a
   lease (:mod:`pipeline.engine.leases`), committed before the effect, so no second delivery can run it.
   A step without side effects is not claimed up front: the unique ledger key already makes a concurrent
   duplicate lose when it records. If such a step runs longer than a third of a lease, the process's lease
   pulse claims it then, so a slow step is never run twice at once and a dead worker's step is taken over.
4. Run the body outside any transaction (tools may take long and call the network).
5. One transaction records the ledger row and applies the step's state delta
   (:func:`pipeline.engine.transitions.record_step`); if the step belongs to the last unit of the plan and
   every step is recorded, the same transaction completes the run.

So a step without side effects costs one commit, and one with side effects two (claim, record).

Failures of the body are recorded on the run (status ``failed``, ``error`` with the reason and field errors)
and never re-raised into Celery: a broken step is a run outcome, not an infrastructure error to retry.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from pipeline.definitions import registry
from pipeline.definitions.dsl import ApprovalStep, ChoiceStep, ToolStep
from pipeline.engine import approvals, bodies, branching, dispatch, leases, recovery, transitions
from pipeline.engine.hooks import StepInfo
from pipeline.engine.leases import Claim
from pipeline.engine.snapshots import Approval, RunView
from pipeline.engine.transitions import Outcome
from pipeline.errors import RubotError, RunNotFound, StepFailed, ToolDenied, ToolTimeout
from pipeline.redact import scrub_exception
from pipeline.store import queries
from pipeline.store.tables import DONE, QUEUED, RUNNING, EffectRow, RunRow, utcnow

if TYPE_CHECKING:
    from pipeline.runtime import Runtime

log = logging.getLogger("rubot.executor")


def execute_step(
    runtime: Runtime, run_id: str, step_name: str, *, task_id: str | None = None, redelivered: bool = False
) -> Outcome:
    """Run one step for the ``rubot.step`` task. ``redelivered``: the broker says an earlier delivery of this
    message was not acknowledged (its worker died, or a visibility timeout passed)."""
    with runtime.db.read() as conn:
        found = _read(conn, run_id, step_name)
    if found is None:
        raise RunNotFound(f"no run with id {run_id!r}")
    run, op_status, _ = found
    if op_status == DONE:  # a redelivered or re-sent message (rare): say so in the trail, run nothing
        with runtime.db.transaction() as s:
            queries.add_event(s, run_id, "step.duplicate_ignored", step_name, task_id=task_id)
        return Outcome.CONTINUE if run.status == RUNNING else Outcome.HALT
    if run.status not in (QUEUED, RUNNING):
        return Outcome.HALT
    workflow = registry.workflow_of(runtime, run.workflow)
    spec = workflow.step_named(step_name)
    view = RunView.of(run, lambda: _approvals(runtime, run_id))
    # A step with if_/unless decides here, before anything is claimed; a skip is recorded. A step another
    # delivery already claimed was decided to run then, and is not decided again.
    if spec is not None and spec.conditional and op_status is None:
        try:
            because = branching.skip_reason(workflow, spec, view)
        except RubotError as exc:
            return _fail(runtime, run_id, step_name, spec.kind, exc.as_dict(), task_id)
        if because is not None:
            return branching.skip(runtime, workflow, run_id, spec, because, task_id)
    if isinstance(spec, ChoiceStep):
        return branching.choose(runtime, workflow, run_id, spec, view, task_id)
    starter = None if spec is None else bodies.deferred_starter(spec)
    # A redelivered message whose step holds no claim: its earlier delivery died before the step was even
    # claimed lazily. That counts as a recovery (so a step that kills its worker every time ends up in the dead
    # letter state) and the step is claimed before it runs again.
    recovered = redelivered and op_status is None
    needs_lock = spec is None or isinstance(spec, ApprovalStep) or starter is not None or op_status is not None
    needs_lock = needs_lock or recovered
    claim_first = needs_lock or _has_side_effects(spec)
    tool_input = None
    if isinstance(spec, ToolStep):
        # A tool step is authorized like a model's tool call, before anything is claimed or run: the tool's
        # permitted_for and the workflow's policy hook, against the run's user and the exact input.
        try:
            tool_input = bodies.step_input(spec, view)
        except RubotError as exc:
            return _fail(runtime, run_id, step_name, spec.kind, exc.as_dict(), task_id)
        denied = bodies.tool_refusal(workflow, spec, view, tool_input)
        if denied is not None:
            return _deny(runtime, run_id, spec, denied, task_id)
    if claim_first:
        outcome = _prepare_under_lock(runtime, run_id, step_name, spec, starter, task_id, recovered=recovered)
        if outcome is not None:
            return outcome
    assert spec is not None, "an unknown step is failed under the lock above"
    started_at = utcnow()
    runtime.hooks.call(
        "step_started",
        StepInfo(
            run_id=run_id, workflow=run.workflow, step=step_name, kind=spec.kind, task_id=task_id, user_id=run.user_id
        ),
    )
    try:
        if starter is not None:
            # The kind's own tasks (an agent's turns) record the step and continue the run.
            starter(runtime, run_id, spec, bodies.step_input(spec, view), task_id=task_id)  # type: ignore[arg-type]
            return Outcome.PARK
        with leases.heartbeat(
            runtime,
            run_id,
            step_name,
            claimed=claim_first,
            lazy_kind=None if claim_first else spec.kind,
            task_id=task_id,
        ) as beat:
            delta = bodies.run_body(runtime, workflow, spec, view, task_id=task_id, tool_input=tool_input)
    except ToolTimeout as exc:
        if _has_side_effects(spec):
            return _timed_out(runtime, run_id, step_name, spec, exc)
        return _fail(runtime, run_id, step_name, spec.kind, exc.as_dict(), task_id)
    except RubotError as exc:
        return _fail(runtime, run_id, step_name, spec.kind, exc.as_dict(), task_id)
    except Exception as exc:  # a bug or failure in user code: record it with its type
        scrub_exception(exc, workflow.secrets_in_input(view.input))  # a message quoting a secret input
        log.exception("step %s of run %s raised", step_name, run_id)
        error = StepFailed(f"step {step_name!r} raised {type(exc).__name__}: {exc}")
        return _fail(
            runtime, run_id, step_name, spec.kind, {**error.as_dict(), "exception": type(exc).__name__}, task_id
        )
    return _record(
        runtime,
        workflow,
        run_id,
        step_name,
        spec.kind,
        delta,
        task_id=task_id,
        claimed=beat.finish(),
        started_at=started_at,
    )


def _read(conn: Any, run_id: str, step_name: str) -> tuple[Any, str | None, Any] | None:
    runs, effects = RunRow.__table__, EffectRow.__table__
    row = conn.execute(
        select(
            runs.c.id,
            runs.c.workflow,
            runs.c.status,
            runs.c.input,
            runs.c.context,
            runs.c.subject,
            runs.c.state,
            runs.c.user_id,
            effects.c.status.label("op_status"),
            effects.c.lease_expires_at,
        )
        .select_from(runs.outerjoin(effects, (effects.c.run_id == runs.c.id) & (effects.c.op_key == step_name)))
        .where(runs.c.id == run_id)
    ).one_or_none()
    return None if row is None else (row, row.op_status, row.lease_expires_at)


def _has_side_effects(spec: Any) -> bool:
    tool = getattr(spec, "tool", None)
    return bool(tool is not None and tool.side_effects)


def _approvals(runtime: Runtime, run_id: str) -> list[Approval]:
    with runtime.db.transaction() as s:
        return [Approval.from_row(a) for a in queries.approvals(s, run_id)]


def _prepare_under_lock(
    runtime: Runtime, run_id: str, step_name: str, spec: Any, starter: Any, task_id: str | None, *, recovered: bool
) -> Outcome | None:
    """The paths that need the run's lock: unknown steps, approvals, deferred kinds, claims. ``None``: go on."""
    with runtime.db.transaction() as s:
        run = queries.lock_run(s, run_id)
        recorded = queries.get_effect(s, run_id, step_name)
        if recorded is not None and recorded.status == DONE:
            queries.add_event(s, run_id, "step.duplicate_ignored", step_name, task_id=task_id)
            return Outcome.CONTINUE if run.status == RUNNING else Outcome.HALT
        if run.status not in (QUEUED, RUNNING):
            queries.add_event(s, run_id, "step.not_running", step_name, status=run.status, task_id=task_id)
            return Outcome.HALT
        if spec is None:
            message = f"{run.workflow} has no step {step_name!r} (was the workflow changed while the run was active?)"
            transitions.fail(s, run, {"reason": "unknown_step", "message": message})
            return Outcome.HALT
        if isinstance(spec, ApprovalStep):
            return approvals.park(s, run, spec)
        if (
            recovered
            and recorded is None
            and starter is None
            and not recovery.count_recovery(
                s, run, step_name, "redelivered after its worker died", runtime.settings.max_recoveries
            )
        ):
            return Outcome.HALT
        if starter is None:
            held = _claim(runtime, s, run, spec, task_id)
            if held is not None:
                return held
        transitions.step_started(s, run, step_name, spec.kind, task_id=task_id)
    return None


def _record(
    runtime: Runtime,
    workflow: Any,
    run_id: str,
    step_name: str,
    kind: str,
    delta: dict[str, Any],
    *,
    task_id: str | None,
    claimed: bool,
    started_at: Any,
) -> Outcome:
    try:
        if runtime.db.dialect == "postgresql" and not claimed and not workflow.in_last_unit(step_name):
            with runtime.db.autocommit() as conn:
                recorded = transitions.record_step_at_once(
                    conn, run_id, step_name, kind, delta, task_id=task_id, started_at=started_at
                )
            runtime.hooks.call(
                "step_completed",
                StepInfo(
                    run_id=run_id,
                    workflow=recorded.workflow,
                    step=step_name,
                    kind=kind,
                    task_id=task_id,
                    user_id=recorded.user_id,
                ),
            )
            return Outcome.CONTINUE if recorded.status == RUNNING else Outcome.HALT
        with runtime.db.transaction() as s:
            recorded = transitions.record_step(
                s, run_id, step_name, kind, delta, task_id=task_id, claimed=claimed, started_at=started_at
            )
            if recorded.status == RUNNING and workflow.in_last_unit(step_name):
                return dispatch.finish_after(s, runtime, run_id, workflow, step_name)
            return Outcome.CONTINUE if recorded.status == RUNNING else Outcome.HALT
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


def _timed_out(runtime: Runtime, run_id: str, step_name: str, spec: Any, exc: ToolTimeout) -> Outcome:
    """A side-effecting tool ran out of time: it may still act, so a person settles it (the claim stays)."""
    with runtime.db.transaction() as s:
        run = queries.lock_run(s, run_id)
        queries.add_event(s, run_id, "step.timed_out", step_name, **exc.as_dict())
        recovery.needs_reconciliation(
            s,
            run,
            step_name,
            f"step {step_name} (tool {spec.tool.name})",
            happened=f"timed out after {exc.details['timeout_seconds']:g}s",
        )
    return Outcome.HALT


def failure_report(runtime: Runtime, run_id: str, step_name: str) -> dict[str, Any]:
    """What the task whose step failed the run tells Celery (and so Flower): ids and the reason, no data."""
    error = runtime.db.reading(lambda s: queries.get_run(s, run_id)).error or {}
    return {
        "run_id": run_id,
        "status": "failed",
        "step": step_name,
        "reason": error.get("reason", "failed"),
        "message": error.get("message", ""),
    }


def _deny(runtime: Runtime, run_id: str, spec: ToolStep, reason: str, task_id: str | None) -> Outcome:
    """A tool step its run's user may not use: the run fails with the reason; the tool never ran."""
    error = ToolDenied(f"step {spec.name!r} may not call {spec.tool.name}: {reason}", details={"tool": spec.tool.name})
    with runtime.db.transaction() as s:
        run = queries.lock_run(s, run_id)
        if run.status not in (QUEUED, RUNNING):
            return Outcome.HALT
        queries.add_event(s, run_id, "tool.denied", spec.name, tool=spec.tool.name, reason=reason)
        queries.bump_counter(run, "tool_denied")
        transitions.fail_step(s, run, spec.name, spec.kind, error.as_dict(), task_id=task_id)
    return Outcome.HALT


def _fail(runtime: Runtime, run_id: str, step_name: str, kind: str, error: dict, task_id: str | None) -> Outcome:
    with runtime.db.transaction() as s:
        run = queries.lock_run(s, run_id)
        failed = transitions.fail_step(s, run, step_name, kind, error, task_id=task_id)
    return Outcome.FAILED if failed else Outcome.HALT
