"""The ``rubot.*`` Celery tasks. Each takes ids, calls into the engine and decides only what Celery should do
next (go on with the chain, or stop it). :func:`register` binds them to any Celery app — Rubot's own or a
host's — under their stable names, with the delivery options Rubot relies on set on each task (JSON, late
acknowledgement, reject on worker loss), so a host app's own defaults do not change how Rubot's tasks behave.

Every task uses the runtime it was registered with (never a thread-local current app).
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from sqlalchemy.exc import InterfaceError, OperationalError

from pipeline import api, batches, handles
from pipeline.engine import compiler, dispatch, executor, expiry, failures, recovery, reminders
from pipeline.engine import on_failure as on_failure_hooks
from pipeline.engine.transitions import Outcome
from pipeline.errors import ModelError, ModelUnavailable, NotificationFailed, RunFailed
from pipeline.llm import agent_loop, batch_collect, tool_calls
from pipeline.notify import sender
from pipeline.runtime import Runtime

RECOVER_TASK = "rubot.recover"
SCHEDULED_TASK = "rubot.scheduled"

# How every Rubot task is delivered, whatever the app's defaults: JSON only; acknowledged after the work is
# recorded in SQL; a message of a worker that died comes back.
DELIVERY = {"serializer": "json", "acks_late": True, "reject_on_worker_lost": True, "shared": False}
# Infrastructure hiccups (database restarted, connection dropped) are retried; everything else is a run outcome.
RETRY = {
    **DELIVERY,
    "autoretry_for": (OperationalError, InterfaceError),
    "retry_backoff": True,
    "retry_backoff_max": 30,
    "max_retries": 20,
}
MODEL_RETRIES = 8


def register(app: Celery, runtime: Runtime) -> None:
    """Register the ``rubot.*`` tasks on ``app``; they use ``runtime`` (never a thread-local current app)."""
    _register_runs(app, runtime)
    _register_sweeps(app, runtime)
    _register_notifications(app, runtime)


def _register_runs(app: Celery, runtime: Runtime) -> None:

    # RunFailed is expected (throws): Celery logs it without a traceback and Sentry does not report it again (the
    # run_failed hook did, once); the task's state is FAILURE, which is what Flower shows.
    @app.task(name=compiler.STEP_TASK, bind=True, ignore_result=True, throws=(RunFailed,), **RETRY)
    def step(self: Any, run_id: str, step_name: str) -> str | dict[str, Any]:
        redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
        outcome = executor.execute_step(runtime, run_id, step_name, task_id=self.request.id, redelivered=redelivered)
        if outcome is Outcome.FAILED:
            self.request.chain = None
            report = executor.failure_report(runtime, run_id, step_name)
            if self.request.chord:
                # A chord member returns, so the group's join still runs (and forgets the result keys); its result
                # names the run's failure.
                return {**report, "task_id": self.request.id}
            raise RunFailed(
                f"run {run_id} failed at step {step_name!r}: {report['reason']}: {report['message']}", details=report
            )
        if outcome is Outcome.HOLD:
            if self.request.chord:
                # A chord counts this member as done when it returns: look again until the holder recorded the
                # step (or died and the step was taken over), so the group never joins without its result.
                raise self.retry(countdown=max(0.5, runtime.settings.lease_seconds / 3), max_retries=None)
            outcome = Outcome.HALT  # in a chain, the holder (or the sweeper, if it died) carries the run on
        if outcome is not Outcome.CONTINUE:
            self.request.chain = None  # the run is parked, failed, cancelled or complete: send nothing after this
        # Chord members return their own id so the join can forget their result keys.
        return self.request.id

    @app.task(name=compiler.JOIN_TASK, bind=True, ignore_result=True, **RETRY)
    def join(self: Any, results: list[Any], run_id: str, group_name: str) -> None:
        if not dispatch.join(runtime, results, run_id, group_name):
            self.request.chain = None

    @app.task(name=compiler.FINISH_TASK, ignore_result=True, **RETRY)
    def finish(run_id: str) -> None:
        dispatch.finish(runtime, run_id)

    @app.task(name=compiler.RESUME_TASK, ignore_result=True, **RETRY)
    def resume(run_id: str, expected_seq: int | None = None) -> None:
        dispatch.resume(runtime, run_id, expected_seq)

    @app.task(name=compiler.LAUNCH_TASK, bind=True, ignore_result=True, **RETRY)
    def launch(
        self: Any,
        workflow: str,
        input: Any = None,
        subject: Any = None,
        context: Any = None,
        run_id: str | None = None,
    ) -> str:
        """Entry point for host apps (``pipeline.client.launch``): the workflow's name and the run id as arguments,
        the input, subject and context in the ``rubot_launch`` header. Messages with the input in the arguments
        (``args=[name, input]``) are still accepted."""
        data = handles.launch_data(self.request)
        if data is not None:
            input, subject, context = data.get("input"), data.get("subject"), data.get("context")
        return api.create(
            runtime, workflow, input=input, subject=subject, context=context, run_id=run_id, record_invalid=True
        )

    @app.task(name=agent_loop.TURN_TASK, bind=True, ignore_result=True, throws=(RunFailed,), **RETRY)
    def agent_turn(self: Any, run_id: str, step: str, n: int) -> None:
        with failures.watching() as failed:
            try:
                agent_loop.run_turn(runtime, run_id, step, n, task_id=self.request.id)
            except ModelUnavailable as exc:
                # Rate limits, overload, 5xx and timeouts: retry this turn later. Nothing was recorded or billed.
                if self.request.retries < MODEL_RETRIES:
                    # The provider's retry-after when it gave one, else exponential backoff (1, 2, 4 ... 60 s).
                    delay = exc.retry_after if exc.retry_after is not None else min(2**self.request.retries, 60)
                    raise self.retry(countdown=delay, max_retries=MODEL_RETRIES) from None
                agent_loop.model_error_to_failure(runtime, run_id, step, exc)
            except ModelError as exc:
                agent_loop.model_error_to_failure(runtime, run_id, step, exc)
        if run_id in failed:  # this turn failed the run (budget, answer, model): Flower shows FAILURE
            report = executor.failure_report(runtime, run_id, step)
            raise RunFailed(
                f"run {run_id} failed at step {step!r}, turn {n}: {report['reason']}: {report['message']}",
                details=report,
            )

    @app.task(name=tool_calls.TOOL_TASK, bind=True, ignore_result=True, **RETRY)
    def agent_tool(self: Any, run_id: str, step: str, n: int, call_id: str) -> str:
        if not tool_calls.run_tool_call(runtime, run_id, step, n, call_id, task_id=self.request.id):
            self.request.chain = None  # parked for approval: the decision sends this call and the next turn
        return self.request.id  # lets the chord body forget this result key

    @app.task(name=compiler.ON_FAILURE_TASK, ignore_result=True, **RETRY)
    def on_failure(run_id: str) -> None:
        on_failure_hooks.call(runtime, run_id)

    @app.task(name=compiler.FORGET_TASK, ignore_result=True, **DELIVERY)
    def forget_results(results: list[Any]) -> None:
        dispatch.forget_results(runtime, results)


def _register_notifications(app: Celery, runtime: Runtime) -> None:
    # Retried with backoff (about 1 s to 5 min); the outbox row counts attempts and the sweep covers the rest.
    @app.task(
        name=sender.SEND_TASK,
        ignore_result=True,
        autoretry_for=(NotificationFailed,),
        retry_backoff=True,
        retry_backoff_max=300,
        max_retries=8,
        **DELIVERY,
    )
    def send_notification(outbox_id: str) -> str:
        """Send one outbox row (its id is the notification's stable id)."""
        planner = runtime.notifications
        if planner is None:
            return "not_configured"  # the row stays pending for a process that has notifiers
        return sender.send(runtime.db, planner, outbox_id)

    @app.task(name=sender.SWEEP_TASK, ignore_result=True, **DELIVERY)
    def sweep_notifications() -> int:
        """Send again the outbox rows whose send message was lost (beat)."""
        if runtime.notifications is None:
            return 0
        return len(sender.sweep(runtime.db, lambda outbox_id: runtime.send(sender.SEND_TASK, outbox_id)))

    @app.task(name=reminders.SWEEP_TASK, ignore_result=True, **DELIVERY)
    def remind_approvals() -> int:
        """Send the SLA reminders that are due (beat)."""
        return len(reminders.send_reminders(runtime))


def _register_sweeps(app: Celery, runtime: Runtime) -> None:
    # No autoretry: the sweeps are idempotent and beat sends the next one within a sweep interval anyway.
    @app.task(name=RECOVER_TASK, ignore_result=True, **DELIVERY)
    def recover() -> int:
        """Take over the work of dead workers (beat, every half lease)."""
        return len(recovery.sweep(runtime))

    @app.task(name=expiry.SWEEP_TASK, ignore_result=True, **DELIVERY)
    def expire_approvals() -> int:
        """Resolve the approvals past their deadline (reject or escalate); returns how many it resolved."""
        return len(expiry.expire_approvals(runtime))

    # No autoretry: collecting is idempotent (settled requests are skipped) and beat sends the next one anyway.
    @app.task(name=batch_collect.COLLECT_TASK, ignore_result=True, **DELIVERY)
    def collect_batches() -> dict[str, int]:
        """Record the turns of ended Message Batches and resume their runs; returns what it did."""
        return batch_collect.collect(runtime)

    @app.task(name=SCHEDULED_TASK, ignore_result=True, **RETRY)
    def scheduled(name: str, tick: str | None = None) -> str:
        """A beat tick of schedule ``name``: launch its run (or batch) once, whichever beat sent it."""
        return batches.fire(runtime, name, tick)
