"""The WSGI app of ``rubot web``: Rubot's web pages on this deployment's runtime.

``gunicorn "rubot_app.scripts.web:create()"`` builds the deployment's Celery app from the environment (which
installs its runtime) and serves :func:`pipeline.web.create_app` on it.
"""

from __future__ import annotations

from flask import Flask


def create() -> Flask:
    from pipeline import observe, runtime
    from pipeline.web import create_app
    from rubot_app.tasks.app import app

    rt = runtime.of_app(app)
    observe.start(rt.settings, where="web")  # Sentry from SENTRY_DSN, before the first request
    return create_app(rt)
