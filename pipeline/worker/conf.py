"""Celery settings of a Celery app that runs only Rubot, derived from :class:`pipeline.settings.Settings`.

Delivery: JSON only, late acknowledgement, reject on worker loss and a prefetch of one, so a message is
acknowledged only after its step is recorded in SQL, and a killed worker's message comes back. (A host's own
Celery app keeps its configuration: ``pipeline.install`` sets the delivery options on Rubot's tasks instead,
see :mod:`pipeline.worker.tasks`.)
"""

from __future__ import annotations

from typing import Any

from pipeline.settings import Settings


def build(settings: Settings) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "broker_url": settings.broker_url,
        "result_backend": settings.result_backend,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "event_serializer": "json",
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": settings.queue,
        "task_ignore_result": True,
        "result_expires": settings.result_expires,
        # Non-Redis result backends join chords by polling with celery.chord_unlock; poll briskly.
        "result_chord_retry_interval": 0.2,
        "broker_connection_retry_on_startup": True,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "imports": list(settings.workflow_modules),
        "enable_utc": True,
        # Periodic sweeps. Scheduled workflows are added when beat starts (pipeline.worker.signals).
        "beat_schedule": sweeps(settings),
    }
    if settings.embedded:
        folder = settings.broker_folder
        for sub in ("queue", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        conf["broker_transport"] = "pipeline.embedded.fsbroker:Transport"  # atomic hand-over; see its docstring
        conf["broker_transport_options"] = {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "control_folder": str(folder / "control"),
            "polling_interval": settings.broker_polling_interval,
        }
        if settings.result_backend.startswith("file://"):
            (settings.home / "results").mkdir(parents=True, exist_ok=True)
    elif settings.broker_url.startswith(("redis://", "rediss://")):
        # A killed worker's unacknowledged messages come back after the visibility timeout; sweep for them at
        # a third of it (at most every 10 s), scanning Redis on every sweep rather than every tenth.
        conf["broker_transport_options"] = {
            "visibility_timeout": settings.visibility_timeout,
            "unacked_restore_interval": max(1, min(10, settings.visibility_timeout // 3)),
            "unacked_restore_throttle": 1,
        }
        conf["result_backend_transport_options"] = {"retry_policy": {"timeout": 5.0}}
        if settings.redis_key_prefix:
            conf["broker_transport_options"]["global_keyprefix"] = settings.redis_key_prefix
    if settings.redis_key_prefix and settings.result_backend.startswith(("redis://", "rediss://")):
        conf.setdefault("result_backend_transport_options", {})["global_keyprefix"] = settings.redis_key_prefix
    return conf


def sweeps(settings: Settings) -> dict[str, dict[str, Any]]:
    """Rubot's periodic sweeps as ``beat_schedule`` entries (the same on Rubot's own app and a host's)."""
    return {
        "rubot-recover": {
            "task": "rubot.recover",
            "schedule": max(1.0, settings.lease_seconds / 2),
            "options": {"queue": settings.queue},
        },
        # Approvals past their deadline are rejected or escalated (pipeline/engine/expiry.py). A tick that no
        # worker took before the next one is due is dropped rather than piling up.
        "rubot-expire-approvals": {
            "task": "rubot.expire_approvals",
            "schedule": settings.approval_sweep_seconds,
            "options": {"expires": settings.approval_sweep_seconds, "queue": settings.queue},
        },
        # SLA reminders before the deadline (pipeline/engine/reminders.py), on the same clock as expiry.
        "rubot-remind-approvals": {
            "task": "rubot.remind_approvals",
            "schedule": settings.approval_sweep_seconds,
            "options": {"expires": settings.approval_sweep_seconds, "queue": settings.queue},
        },
        # Notifications whose send message was lost (pipeline/notify/sender.py): sent again, never lost.
        "rubot-sweep-notifications": {
            "task": "rubot.sweep_notifications",
            "schedule": settings.notify_sweep_seconds,
            "options": {"expires": settings.notify_sweep_seconds, "queue": settings.queue},
        },
        # Ended Message Batches: record their turns and resume the parked runs (pipeline/llm/batch_collect.py).
        "rubot-collect-batches": {
            "task": "rubot.collect_batches",
            "schedule": settings.batch_poll_seconds,
            "options": {"expires": settings.batch_poll_seconds, "queue": settings.queue},
        },
    }
