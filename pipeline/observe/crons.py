"""Sentry cron monitors (check-ins) for Rubot's own beat sweeps.

Sentry's Celery integration monitors beat entries whose schedule is a crontab or a whole number of minutes
(Rubot's scheduled workflows, usually). Rubot's sweeps run every few seconds (``rubot.recover`` every half lease),
which that integration cannot monitor, so this module checks them in itself: an ``in_progress`` check-in when a
sweep task starts on a worker and ``ok``/``error`` when it ends, each sweep a monitor named after its beat entry
(``rubot-recover`` ...) with a one-minute interval (or its own, when longer). A monitor then says "missed" when no
beat or no worker has run the sweep for a while — the failure it exists to catch.
"""

from __future__ import annotations

import math
import time
from typing import Any

from celery import signals
from sentry_sdk.crons import capture_checkin
from sentry_sdk.crons.consts import MonitorStatus

from pipeline.settings import Settings
from pipeline.worker.conf import sweeps


def monitored(settings: Settings) -> dict[str, tuple[str, float]]:
    """Task name -> (monitor slug, seconds between runs) for each of Rubot's sweeps."""
    return {entry["task"]: (name, float(entry["schedule"])) for name, entry in sweeps(settings).items()}


def monitor_config(seconds: float) -> Any:  # sentry_sdk's MonitorConfig (a TypedDict)
    minutes = max(1, math.ceil(seconds / 60))
    return {
        "schedule": {"type": "interval", "value": minutes, "unit": "minute"},
        "checkin_margin": minutes,  # a sweep that is late by a whole interval is missed
        "max_runtime": max(5, 2 * minutes),
    }


def connect(settings: Settings) -> None:
    """Check Rubot's sweep tasks in with Sentry from this worker (idempotent)."""
    tasks = monitored(settings)
    started: dict[str, tuple[str, str | None, float]] = {}  # Celery task id -> (slug, check-in id, start)

    def on_start(task_id: str | None = None, task: Any = None, **_: Any) -> None:
        found = tasks.get(getattr(task, "name", ""))
        if found is None or task_id is None:
            return
        slug, seconds = found
        check_in = capture_checkin(
            monitor_slug=slug, status=MonitorStatus.IN_PROGRESS, monitor_config=monitor_config(seconds)
        )
        started[task_id] = (slug, check_in, time.monotonic())

    def on_end(task_id: str | None = None, state: str | None = None, **_: Any) -> None:
        entry = started.pop(task_id or "", None)
        if entry is None:
            return
        slug, check_in, began = entry
        capture_checkin(
            monitor_slug=slug,
            check_in_id=check_in,
            status=MonitorStatus.OK if state == "SUCCESS" else MonitorStatus.ERROR,
            duration=time.monotonic() - began,
        )

    signals.task_prerun.connect(on_start, weak=False, dispatch_uid="rubot-crons-start")
    signals.task_postrun.connect(on_end, weak=False, dispatch_uid="rubot-crons-end")


def excluded(settings: Settings) -> list[str]:
    """The beat entry names Sentry's Celery integration must leave to this module (exact-match patterns)."""
    return [f"^{name}$" for name in sweeps(settings)]
