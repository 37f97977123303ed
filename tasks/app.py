"""The deployment's Celery app, configured from the environment: ``celery -A rubot_app.tasks.app worker``.

Importing it installs its runtime as this process's current one (what ``rubot runs`` and friends read).
"""

from __future__ import annotations

from pipeline import runtime
from pipeline.hosting import make_app
from rubot_app.config import logging as rubot_logging
from rubot_app.config.settings import load

settings = load()
rubot_logging.configure(settings.log_level, settings.log_format)
app = make_app(settings)
runtime.install(runtime.of_app(app))
