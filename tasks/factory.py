"""Build a Celery app wired to a Rubot runtime, for any settings (the default app, tests, the demo)."""

from __future__ import annotations

from celery import Celery

from config import celery as celery_config
from pipeline.models.base import ModelProvider
from pipeline.runtime import Runtime
from pipeline.settings import Settings
from tasks import expiry, notify, recovery, runs


def make_app(settings: Settings, *, name: str = "rubot", model: ModelProvider | None = None) -> Celery:
    app = Celery(name)
    app.config_from_object(celery_config.build(settings))
    runtime = Runtime(settings, app, model=model)
    runs.register(app, runtime)
    recovery.register(app, runtime)
    expiry.register(app, runtime)
    notify.register(app, runtime)
    return app
