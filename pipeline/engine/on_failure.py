"""``Workflow.on_failure``: called once, in a worker, when a run of the workflow fails.

When a run moves to ``failed`` (whichever process committed it: a worker, the web process that recorded a
rejection, the sweeper), :class:`FailureHooks` sends task ``rubot.on_failure`` with the run id after the commit.
That task claims the run's ``@on_failure`` ledger row (unique per run) before calling the workflow's
``on_failure(self, error)`` with ``self.run`` a :class:`~pipeline.engine.snapshots.RunView` of the failed run, so a
duplicated message or a second failure report never calls it twice: at most once per run, and once in practice
(a worker killed in the middle of the call does not call it again). Its outcome is an event on the run
(``run.on_failure_called`` or ``run.on_failure_raised``); it never changes the run's status.

A process that dies between committing the failure and sending the task would leave the hook uncalled, so the
recovery sweeper (:func:`resend_missed`) sends it again for a failed run that has no ``@on_failure`` row two leases
after it failed (looking back :data:`HORIZON`); an extra message is only a duplicate, ignored as above.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import exists, select
from sqlalchemy.exc import IntegrityError

from pipeline.definitions import registry
from pipeline.definitions.registry import workflow_of
from pipeline.engine import compiler, transitions
from pipeline.engine.hooks import Hooks, RunInfo
from pipeline.engine.snapshots import RunView
from pipeline.store import queries
from pipeline.store.tables import FAILED, EffectRow, RunRow

if TYPE_CHECKING:
    from pipeline.runtime import Runtime

log = logging.getLogger("rubot.on_failure")

OP_KEY = "@on_failure"  # not an identifier, so never a step's name
#: How far back (by creation time) the sweeper looks for failed runs whose ``on_failure`` was never sent.
HORIZON = timedelta(days=1)
#: At most this many are sent again per sweep.
BATCH = 100


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
            view = RunView.of(run, [])
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


def resend_missed(runtime: Runtime, *, now: datetime) -> list[str]:
    """Send ``rubot.on_failure`` again for failed runs whose hook was never called (its message lost to a crash).

    Only workflows that define ``on_failure`` are looked at (none: no query at all); a run counts as missed once
    two leases have passed since it failed without its ``@on_failure`` ledger row. Returns the run ids sent.
    """
    names = [name for name in registry.workflows.names() if _has_hook(registry.workflows.get(name))]
    if not names:
        return []
    called = exists().where(EffectRow.run_id == RunRow.id, EffectRow.op_key == OP_KEY)
    quiet_since = now - timedelta(seconds=2 * runtime.settings.lease_seconds)
    with runtime.db.transaction() as s:
        missed = list(
            s.execute(
                select(RunRow.id)
                .where(
                    RunRow.status == FAILED,
                    RunRow.created_at > now - HORIZON,
                    RunRow.workflow.in_(names),
                    RunRow.updated_at < quiet_since,
                    ~called,
                )
                .limit(BATCH)
            ).scalars()
        )
    for run_id in missed:
        log.warning("on_failure of failed run %s was never called; sending it again", run_id)
        runtime.app.send_task(compiler.ON_FAILURE_TASK, args=(run_id,), queue=runtime.settings.queue)
    return missed


def _has_hook(workflow: object) -> bool:
    return getattr(workflow, "on_failure", None) is not None
