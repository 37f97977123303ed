"""Put Rubot into a Celery app: :func:`install` for a host's own app, :func:`make_app` for an app of its own.

``pipeline.install(celery_app)`` registers the ``rubot.*`` tasks on the app, the beat entries (Rubot's sweeps
and the scheduled workflows, added when that app's beat starts) and the worker signal handlers, builds the
:class:`~pipeline.runtime.Runtime` whose settings come from the host (Django settings, a Flask ``app.config``
passed as ``config``, or the environment; read on first use) and makes it this process's current runtime,
so ``pipeline.get_run`` and ``Workflow.delay`` work in every process that imports the module building the app.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from celery import Celery

from pipeline import runtime as rubot_runtime
from pipeline.engine.hooks import Hooks
from pipeline.hostconfig import loader
from pipeline.models.base import ModelProvider
from pipeline.runtime import Runtime
from pipeline.settings import Settings
from pipeline.worker import conf, signals, tasks

log = logging.getLogger("rubot.install")


def install(
    celery_app: Celery,
    *,
    settings: Settings | None = None,
    config: Any = None,
    hooks: Iterable[Hooks] = (),
    model: ModelProvider | None = None,
    make_current: bool = True,
) -> Runtime:
    """Install Rubot on ``celery_app`` and return its runtime.

    ``settings`` (explicit) wins; otherwise they are read on first use from ``config`` (a mapping such as
    Flask's ``app.config`` or an object such as Django's settings, holding ``RUBOT_*`` names), from Django's
    settings in a Django process, and from the environment. ``hooks`` are lifecycle hooks
    (:class:`pipeline.engine.hooks.Hooks`). With ``make_current`` (default) the runtime becomes the one the
    public API of this process uses. Installing twice on the same app returns the first runtime.
    """
    existing = getattr(celery_app, "rubot_runtime", None)
    if existing is not None:
        log.debug("Rubot is already installed on Celery app %r", celery_app.main)
        runtime = existing
    else:
        runtime = Runtime(
            settings if settings is not None else loader(celery_app, config), celery_app, model=model, hooks=hooks
        )
        tasks.register(celery_app, runtime)
        signals.connect(celery_app)
    if make_current:
        rubot_runtime.install(runtime)
    return runtime


def make_app(
    settings: Settings,
    *,
    name: str = "rubot",
    model: ModelProvider | None = None,
    hooks: Iterable[Hooks] = (),
) -> Celery:
    """A Celery app that runs only Rubot, configured from ``settings`` (this repository's deployment, tests,
    the demo). Its runtime is ``pipeline.runtime.of_app(app)``; it is not made current."""
    app = Celery(name)
    app.config_from_object(conf.build(settings))
    install(app, settings=settings, model=model, hooks=hooks, make_current=False)
    return app
