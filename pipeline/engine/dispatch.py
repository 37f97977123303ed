"""Dispatching runs: compiling the next segment from SQL and sending it; joining parallel groups; finishing.

Every segment of a run reaches the broker through :func:`plan_next`, called with the run row locked by whoever
moves the run on: the caller that enqueues it, the decision that resumes it, the agent step that finished, the
sweeper that recovers it, or the ``rubot.resume`` task. It compiles the rest of the plan from the ledger, so it
needs nothing but the run id, and bumps ``dispatch_seq``: a duplicated ``rubot.resume`` message carries the seq
it expected and becomes a no-op instead of a second copy of every remaining step. When nothing is left to run,
the run completes right there, and the last step of a plan completes its run in the transaction that records it
(:func:`finish_if_complete`), so finishing costs no task of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from pipeline.definitions import schemas
from pipeline.definitions.dsl import ParallelGroup
from pipeline.definitions.registry import workflow_of
from pipeline.engine import admission, compiler, transitions
from pipeline.engine.transitions import Outcome
from pipeline.errors import OutputError, RubotError
from pipeline.store import queries
from pipeline.store.tables import QUEUED, RUNNING, RunRow

if TYPE_CHECKING:
    from pipeline.runtime import Runtime

log = logging.getLogger("rubot.dispatch")

Send = Callable[[], None]


def _nothing() -> None:
    return None


def plan_next(s: Session, runtime: Runtime, run: RunRow, workflow: Any) -> Send:
    """Decide the next segment of ``run`` (locked, queued or running) in the caller's transaction.

    Returns what to do once that transaction commits: send the segment (a worker that picks its first step up
    must see the run as it was committed), or nothing (the run waits for a slot, or just completed).
    """
    if run.status == QUEUED:
        reason = admission.refusal(s, runtime, run, workflow)
        if reason is not None:
            admission.note_waiting(s, run, reason)
            return _nothing  # stays queued; admit_next asks again when a slot frees
    # Nothing is in the ledger of a run never dispatched (steps only run after a dispatch): skip the read. A
    # replay is the exception: its ledger is seeded with the source's recorded results before its first dispatch.
    fresh = run.dispatch_seq == 0 and run.replay_of is None
    done = set() if fresh else queries.completed_ops(s, run.id)
    canvas, names = compiler.segment(runtime.app, workflow, run.id, done, queue=runtime.settings.queue)
    if run.status == QUEUED:
        transitions.start(s, run)
    if canvas is None:  # every step is recorded (the plan ended with an approval or an agent step)
        finish_if_complete(s, runtime, run, workflow)
        return _nothing
    run.dispatch_seq += 1
    queries.add_event(s, run.id, "run.dispatched", steps=names, seq=run.dispatch_seq)
    return canvas.apply_async


def resume(runtime: Runtime, run_id: str, expected_seq: int | None = None) -> bool:
    """Dispatch the next segment of ``run_id`` unless ``expected_seq`` is stale; True when something was decided."""
    with runtime.db.transaction() as s:
        run = queries.lock_run(s, run_id)
        if run.status not in (QUEUED, RUNNING):
            return False
        if expected_seq is not None and run.dispatch_seq != expected_seq:
            log.info("run %s: stale resume (seq %s, now %s) ignored", run_id, expected_seq, run.dispatch_seq)
            return False
        send = plan_next(s, runtime, run, workflow_of(runtime, run.workflow))
    send()
    return True


def finish_if_complete(s: Session, runtime: Runtime, run: RunRow, workflow: Any) -> bool:
    """Complete ``run`` (locked, running) if every step is recorded, with ``run.output`` shaped by the workflow's
    ``output`` (a key, a list of keys or a callable; a callable that raises fails the run with ``output_error``).

    A plan whose last unit was recorded while an earlier step is missing from the ledger cannot complete: the
    run fails with reason ``incomplete`` rather than pretend.
    """
    if run.status != RUNNING:
        return False
    done = queries.completed_ops(s, run.id)
    missing = [n for n in workflow.step_names() if n not in done]
    if missing:
        transitions.fail(s, run, {"reason": "incomplete", "message": f"steps never recorded: {missing}"})
        return False
    try:
        output = workflow.output_of(run.input, run.state, run.context)
        output = schemas.to_json(output, what=f"output of workflow {workflow.name!r}")
    except RubotError as exc:
        transitions.fail(s, run, exc.as_dict())
        return False
    except Exception as exc:  # the workflow's output callable raised: the run fails, it does not complete without
        error = OutputError(f"{workflow.name}.output raised {type(exc).__name__}: {exc}")
        transitions.fail(s, run, {**error.as_dict(), "exception": type(exc).__name__})
        return False
    transitions.complete(s, run, output)
    return True


def finish_after(s: Session, runtime: Runtime, run_id: str, workflow: Any, step: str) -> Outcome:
    """``step`` of the plan's last unit was just recorded in this transaction: what its task tells Celery.

    The plan's last step completes the run (or fails it as ``incomplete``). A member of a last parallel group
    completes it only once every step is recorded: before that, the chord's join (or the last member to record,
    when it was dispatched alone) does. A member does not take ``FOR UPDATE`` on the run: the transaction already
    holds the run row's lock from recording the step, and upgrading it while a sibling member's ledger insert
    holds its key-share lock (and waits for ours) would deadlock.
    """
    if workflow.plan()[-1].name == step:
        run = queries.lock_run(s, run_id)
    else:
        done = queries.completed_ops(s, run_id)
        if any(name not in done for name in workflow.step_names()):
            return Outcome.CONTINUE
        run = queries.get_run(s, run_id)
    finish_if_complete(s, runtime, run, workflow)
    return Outcome.HALT  # nothing follows the last unit


def finish(runtime: Runtime, run_id: str) -> bool:
    """The ``rubot.finish`` task of earlier releases (segments no longer end with it): complete if all recorded."""
    with runtime.db.transaction() as s:
        run = queries.lock_run(s, run_id)
        return finish_if_complete(s, runtime, run, workflow_of(runtime, run.workflow))


def forget_results(runtime: Runtime, results: list[Any]) -> None:
    """Drop the result keys of chord members (each returned its own task id, or a report of the run's failure
    holding it): nothing lingers in the backend."""
    for result in results or []:
        task_id = result.get("task_id") if isinstance(result, dict) else result
        if isinstance(task_id, str):
            runtime.app.AsyncResult(task_id).forget()


def join(runtime: Runtime, results: list[Any], run_id: str, group_name: str) -> bool:
    """Body of a parallel group's chord: say whether the chain after the group may go on.

    Every member must be in the ledger: a group never joins without a member's result. (A member whose step
    another delivery holds retries instead of returning, so this only trips on a lost member; the sweeper then
    re-dispatches the run from its ledger.)
    """
    forget_results(runtime, results)
    with runtime.db.transaction() as s:
        run = queries.lock_run(s, run_id)
        if run.status != RUNNING:
            return False
        workflow = workflow_of(runtime, run.workflow)
        group = next(u for u in workflow.plan() if isinstance(u, ParallelGroup) and u.name == group_name)
        done = queries.completed_ops(s, run_id)
        missing = [m.name for m in group.steps if m.name not in done]
        if missing:
            queries.add_event(s, run_id, "parallel.join_refused", group_name, missing=missing)
            return False
        queries.add_event(s, run_id, "parallel.joined", group_name)
        if workflow.plan()[-1] is group:
            finish_if_complete(s, runtime, run, workflow)
            return False
    return True
