"""Notification tasks: ``rubot.send_notification`` (one outbox row), ``rubot.sweep_notifications`` and
``rubot.remind_approvals`` (beat, scheduled in ``config/celery.py``)."""

from __future__ import annotations

from celery import Celery

from pipeline.engine import reminders
from pipeline.errors import NotificationFailed
from pipeline.notify import sender
from pipeline.runtime import Runtime


def register(app: Celery, runtime: Runtime) -> None:
    """Register the notification tasks on ``app``; they use ``runtime`` (never a thread-local current app)."""

    # Retried with backoff (about 1 s to 5 min); the row counts attempts and the sweep covers the rest.
    @app.task(
        name=sender.SEND_TASK,
        shared=False,
        ignore_result=True,
        autoretry_for=(NotificationFailed,),
        retry_backoff=True,
        retry_backoff_max=300,
        max_retries=8,
    )
    def send_notification(outbox_id: str) -> str:
        planner = runtime.notifications
        if planner is None:
            return "not_configured"  # the row stays pending for a process that has notifiers
        return sender.send(runtime.db, planner, outbox_id)

    @app.task(name=sender.SWEEP_TASK, shared=False, ignore_result=True)
    def sweep_notifications() -> int:
        if runtime.notifications is None:
            return 0
        return len(sender.sweep(runtime.db, lambda outbox_id: runtime.send(sender.SEND_TASK, outbox_id)))

    @app.task(name=reminders.SWEEP_TASK, shared=False, ignore_result=True)
    def remind_approvals() -> int:
        return len(reminders.send_reminders(runtime))
