"""Celery signal handlers ``pipeline.install`` connects for an app: what Rubot needs when a worker or beat starts.

* ``import_modules`` (a worker starting, after Django's set-up in a Django project): import the workflow modules
  (``RUBOT_WORKFLOW_MODULES``) so runs find their workflow classes by name and a broken module is reported at
  start, in the worker's log, rather than when its first run fails.
* ``beat_init`` (beat starting): add Rubot's entries to the schedule — the recovery and approval-expiry sweeps
  and every scheduled workflow (:mod:`pipeline.schedules`) — unless the app's ``beat_schedule`` already has an
  entry of that name. They are added here, not at install, because the workflow modules may only be importable
  once the host framework is set up.

* ``celeryd_init`` (a worker starting) and ``worker_process_init`` (each pool child): start what observability the
  settings switch on (Sentry with ``SENTRY_DSN``, :mod:`pipeline.observe`), in the process that runs the tasks.
* ``after_setup_logger`` / ``after_setup_task_logger`` (Celery configured its logging): with
  ``RUBOT_LOG_FORMAT=json`` the worker's and beat's records become JSON lines with the run's fields;
  ``task_postrun`` clears the run context a task's hooks set, so the next task's records start clean.

Handlers are connected once per app and only act for the app they were connected for.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, signals

from pipeline.errors import RubotError

log = logging.getLogger("rubot.worker")


def _same_app(a: Any, b: Any) -> bool:
    unwrap = getattr(a, "_get_current_object", None)
    a = unwrap() if unwrap else a
    unwrap = getattr(b, "_get_current_object", None)
    b = unwrap() if unwrap else b
    return a is b


def connect(app: Celery) -> None:
    """Connect the handlers for ``app`` (idempotent)."""
    uid = f"rubot-{id(app)}"

    def on_import_modules(sender: Any = None, **_: Any) -> None:
        if not _same_app(sender, app):
            return
        from pipeline.definitions import registry
        from pipeline.runtime import of_app

        try:
            registry.import_modules(of_app(app).settings.workflow_modules)
        except RubotError as exc:
            log.error("Rubot: %s", exc.message)

    def on_worker_start(sender: Any = None, instance: Any = None, **_: Any) -> None:
        if not _same_app(getattr(instance, "app", None), app):
            return
        from pipeline import observe
        from pipeline.runtime import of_app

        observe.start(of_app(app).settings, where="worker")

    def on_pool_child(**_: Any) -> None:
        from celery import current_app

        if not _same_app(current_app, app):
            return
        from pipeline import observe
        from pipeline.runtime import of_app

        observe.start(of_app(app).settings, where="worker")

    def on_logging(logger: Any = None, **_: Any) -> None:
        from celery import current_app

        if logger is None or not _same_app(current_app, app):
            return
        from pipeline.observe import logs
        from pipeline.runtime import of_app

        kind = of_app(app).settings.log_format
        for handler in logger.handlers:
            if kind == "json":
                handler.setFormatter(logs.formatter(kind))
            handler.addFilter(logs.RunContext())

    def on_task_end(**_: Any) -> None:
        from pipeline.observe import logs

        logs.bind()  # the run context of a finished task must not label the next task's records

    def on_beat_init(sender: Any = None, **_: Any) -> None:
        if not _same_app(getattr(sender, "app", None), app):
            return
        from pipeline import observe
        from pipeline.runtime import of_app
        from pipeline.schedules import beat_entries

        observe.start(of_app(app).settings, where="beat")

        scheduler = sender.scheduler
        configured = set(app.conf.beat_schedule or {})
        entries = {name: entry for name, entry in beat_entries(of_app(app)).items() if name not in configured}
        scheduler.update_from_dict(entries)
        log.info("Rubot: beat schedules %s", ", ".join(sorted(entries)) or "none")

    signals.import_modules.connect(on_import_modules, weak=False, dispatch_uid=f"{uid}-import")
    signals.beat_init.connect(on_beat_init, weak=False, dispatch_uid=f"{uid}-beat")
    signals.celeryd_init.connect(on_worker_start, weak=False, dispatch_uid=f"{uid}-observe")
    signals.worker_process_init.connect(on_pool_child, weak=False, dispatch_uid=f"{uid}-observe-child")
    signals.after_setup_logger.connect(on_logging, weak=False, dispatch_uid=f"{uid}-logs")
    signals.after_setup_task_logger.connect(on_logging, weak=False, dispatch_uid=f"{uid}-task-logs")
    signals.task_postrun.connect(on_task_end, weak=False, dispatch_uid=f"{uid}-log-context")
