"""Starting, resuming and finishing runs: the tasks around the steps.

``resume`` is how every segment of a run gets onto the broker: at the start, after an approval and (later)
after recovery. It compiles the remaining plan from the ledger, so it needs nothing but the run id. The
``dispatch_seq`` compare-and-set makes a duplicated resume message a no-op instead of a second copy of
every remaining step.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pipeline.definitions.registry import workflow_of
from pipeline.engine import admission, compiler, transitions
from pipeline.store import queries
from pipeline.store.tables import QUEUED, RUNNING

if TYPE_CHECKING:
    from pipeline.runtime import Runtime

log = logging.getLogger("rubot.dispatch")


def resume(runtime: Runtime, run_id: str, expected_seq: int | None = None) -> list[str]:
    """Dispatch the next segment of ``run_id``; returns the step names sent (empty if nothing to do)."""
    with runtime.db.transaction() as s:
        run = queries.lock_run(s, run_id)
        if run.status not in (QUEUED, RUNNING):
            return []
        if expected_seq is not None and run.dispatch_seq != expected_seq:
            log.info("run %s: stale resume (seq %s, now %s) ignored", run_id, expected_seq, run.dispatch_seq)
            return []
        workflow = workflow_of(runtime, run.workflow)
        if run.status == QUEUED:
            reason = admission.refusal(s, runtime, run, workflow)
            if reason is not None:
                admission.note_waiting(s, run, reason)
                return []  # stays queued; admit_next asks again when a slot frees
        canvas, names = compiler.segment(
            runtime.app, workflow, run_id, queries.completed_ops(s, run_id), queue=runtime.settings.queue
        )
        run.dispatch_seq += 1
        if run.status == QUEUED:
            transitions.start(s, run)
        queries.add_event(s, run_id, "run.dispatched", steps=names, seq=run.dispatch_seq)
    # Sent after the commit: a worker that picks the first step up must see the run as running.
    canvas.apply_async()
    return names


def finish(runtime: Runtime, run_id: str) -> bool:
    """Complete the run if every step is recorded; ``run.output`` is the output step's state entry."""
    with runtime.db.transaction() as s:
        run = queries.lock_run(s, run_id)
        if run.status != RUNNING:
            return False
        workflow = workflow_of(runtime, run.workflow)
        missing = [n for n in workflow.step_names() if n not in queries.completed_ops(s, run_id)]
        if missing:
            transitions.fail(s, run, {"reason": "incomplete", "message": f"steps never recorded: {missing}"})
            return False
        transitions.complete(s, run, (run.state or {}).get(workflow.output_step()))
    admission.admit_next(runtime)
    return True


def forget_results(runtime: Runtime, results: list[Any]) -> None:
    """Drop the result keys of chord members (each returned its own task id): nothing lingers in the backend."""
    for task_id in results or []:
        if isinstance(task_id, str):
            runtime.app.AsyncResult(task_id).forget()


def join(runtime: Runtime, results: list[Any], run_id: str, group_name: str) -> bool:
    """Body of a parallel group's chord: drop the members' result keys; say whether the run goes on."""
    forget_results(runtime, results)
    with runtime.db.transaction() as s:
        run = queries.get_run(s, run_id)
        if run.status != RUNNING:
            return False
        queries.add_event(s, run_id, "parallel.joined", group_name)
    return True
