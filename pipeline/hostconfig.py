"""Rubot's settings from a host application's configuration: Django settings, a Flask ``app.config``, or the
environment.

The names are the environment variables of the README (``RUBOT_DATABASE_URL``, ``RUBOT_QUEUE``,
``RUBOT_WORKFLOW_MODULES``, ``RUBOT_SCHEDULES`` ...), set as settings of the host; a name the host does not set
falls back to the environment, then to Rubot's default. Two things come from the host itself:

* the broker and result backend are those of the host's Celery app (Rubot's tasks live on it), so
  ``RUBOT_BROKER_URL`` / ``RUBOT_RESULT_BACKEND`` only configure Rubot's own app;
* in Django, without ``RUBOT_DATABASE_URL``, Rubot's tables go into the ``default`` database of ``DATABASES``
  (PostgreSQL or SQLite), reached through SQLAlchemy with the same credentials.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from pipeline.errors import ConfigurationError
from pipeline.settings import Settings, load

EXTRA_NAMES = ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL")


def rubot_names(config: Any) -> dict[str, Any]:
    """The ``RUBOT_*`` (and Anthropic) entries of a mapping (Flask config) or an object (Django settings)."""
    if config is None:
        return {}
    if isinstance(config, Mapping):
        keys = list(config)
        get: Callable[[str], Any] = config.__getitem__
    else:
        keys = dir(config)
        get = lambda name: getattr(config, name)  # noqa: E731
    return {k: get(k) for k in keys if isinstance(k, str) and (k.startswith("RUBOT_") or k in EXTRA_NAMES)}


def django_settings() -> Any | None:
    """Django's settings when this process is a Django project (``DJANGO_SETTINGS_MODULE`` set), else ``None``."""
    if not os.environ.get("DJANGO_SETTINGS_MODULE"):
        return None
    try:
        from django.conf import settings
    except ImportError:
        return None
    return settings


def django_database_url(settings: Any) -> str | None:
    """A SQLAlchemy URL for Django's ``default`` database (PostgreSQL or SQLite), or ``None``."""
    from sqlalchemy.engine import URL

    database = (getattr(settings, "DATABASES", None) or {}).get("default") or {}
    engine = str(database.get("ENGINE", ""))
    if engine.endswith("sqlite3"):
        return f"sqlite:///{database.get('NAME')}"
    if engine.endswith(("postgresql", "postgresql_psycopg2")):
        return URL.create(
            "postgresql+psycopg",
            username=database.get("USER") or None,
            password=database.get("PASSWORD") or None,
            host=database.get("HOST") or None,
            port=int(database["PORT"]) if database.get("PORT") else None,
            database=database.get("NAME") or None,
        ).render_as_string(hide_password=False)
    return None


def loader(celery_app: Any, config: Any = None) -> Callable[[], Settings]:
    """A function that reads the settings when first needed (Django's settings may not be ready at install)."""

    def load_settings() -> Settings:
        source = config if config is not None else django_settings()
        values: dict[str, Any] = {**os.environ, **rubot_names(source)}
        conf = celery_app.conf
        if conf.broker_url:
            values["RUBOT_BROKER_URL"] = conf.broker_url
        if conf.result_backend:
            values["RUBOT_RESULT_BACKEND"] = conf.result_backend
        prefix = (conf.broker_transport_options or {}).get("global_keyprefix")
        if prefix and not values.get("RUBOT_REDIS_KEY_PREFIX"):
            values["RUBOT_REDIS_KEY_PREFIX"] = prefix
        if not values.get("RUBOT_DATABASE_URL") and source is not None and config is None:
            url = django_database_url(source)
            if url:
                values["RUBOT_DATABASE_URL"] = url
        if not values.get("RUBOT_DATABASE_URL"):
            raise ConfigurationError(
                "set RUBOT_DATABASE_URL in your settings or environment (where Rubot keeps its runs)"
            )
        return load(values)

    return load_settings
