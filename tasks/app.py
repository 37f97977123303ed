"""The default Celery app, configured from the environment: ``celery -A tasks.app worker``."""

from __future__ import annotations

from config import logging as rubot_logging
from config.settings import load
from pipeline import runtime
from tasks.factory import make_app

settings = load()
rubot_logging.configure(settings.log_level)
app = make_app(settings)
runtime.install(runtime.of_app(app))
