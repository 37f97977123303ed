"""``Workflow.on_failure``: called once, in a worker, when a run of the workflow fails.

When a run moves to ``failed`` (whichever process committed it: a worker, the web process that recorded a
rejection, the sweeper), :class:`FailureHooks` sends task ``rubot.on_failure`` with the run id after the commit.
That task claims the run's ``@on_failure`` ledger row (unique per run) before calling the workflow's
``on_failure(self, error)`` with ``self.run`` a :class:`~pipeline.engine.snapshots.RunView` of the failed run, so a
duplicated message or a second failure report never calls it twice: at most once per run, and once in practice
(a worker killed in the middle of the call does not call it again). Its outcome is an event on the run
(``run.on_failure_called`` or ``run.on_failure_raised``); it never changes the run's status.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sqlalchemy.exc import IntegrityError

from pipeline.definitions.registry import workflow_of
from pipeline.engine import compiler, transitions
from pipeline.engine.hooks import Hooks, RunInfo
from pipeline.engine.snapshots import RunView
from pipeline.store import queries
from pipeline.store.tables import FAILED

if TYPE_CHECKING:
    from pipeline.runtime import Runtime

log = logging.getLogger("rubot.on_failure")

OP_KEY = "@on_failure"  # not an identifier, so never a step's name


class FailureHooks(Hooks):
    """Sends ``rubot.on_failure`` for a failed run whose workflow defines ``on_failure``."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def run_failed(self, info: RunInfo) -> None:
        try:
            hook = getattr(workflow_of(self.runtime, info.workflow), "on_failure", None)
        except Exception:  # an unknown workflow has no hook to call
            return
        if hook is not None:
            self.runtime.app.send_task(compiler.ON_FAILURE_TASK, args=(info.run_id,), queue=self.runtime.settings.queue)


def call(runtime: Runtime, run_id: str) -> bool:
    """The ``rubot.on_failure`` task: call the failed run's ``on_failure`` unless it was called; True if called."""
    try:
        with runtime.db.transaction() as s:
            run = queries.lock_run(s, run_id)
            workflow = workflow_of(runtime, run.workflow)
            if run.status != FAILED or getattr(workflow, "on_failure", None) is None:
                return False
            if queries.get_effect(s, run_id, OP_KEY) is not None:
                queries.add_event(s, run_id, "run.on_failure_duplicate_ignored", None)
                return False
            transitions.record(s, run, OP_KEY, "on_failure", {"error": run.error})
            view = RunView(
                id=run.id,
                workflow=run.workflow,
                input=run.input,
                context=run.context,
                subject=run.subject,
                state=dict(run.state or {}),
                approvals=[],
            )
            error = dict(run.error or {})
    except IntegrityError:  # a concurrent delivery claimed it first
        return False
    try:
        workflow(view).on_failure(error)
    except Exception as exc:
        log.exception("on_failure of run %s raised", run_id)
        _note(runtime, run_id, "run.on_failure_raised", exception=type(exc).__name__, message=str(exc)[:500])
        return True
    _note(runtime, run_id, "run.on_failure_called")
    return True


def _note(runtime: Runtime, run_id: str, event: str, **data: object) -> None:
    with runtime.db.transaction() as s:
        queries.add_event(s, run_id, event, None, **data)
