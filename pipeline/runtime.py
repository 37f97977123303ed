"""The runtime: settings, database, Celery app and model provider of one deployment, passed around explicitly.

Celery tasks find it through their app (:func:`of_app`). The public helpers (``pipeline.run`` and friends)
use :func:`current`, which a process sets with :func:`install`; when nothing is installed, the first call
imports the module named by ``RUBOT_CELERY_APP`` (default ``tasks.app``), which builds and installs the
runtime from the environment.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Iterable
from functools import partial
from typing import Any

from celery import Celery

from pipeline.engine.hooks import HOOKS_KEY, HookChain, Hooks
from pipeline.errors import ConfigurationError
from pipeline.models.base import ModelProvider
from pipeline.notify import configure as notify_setup
from pipeline.notify.base import Directory, Notifier
from pipeline.notify.outbox import PLANNER_KEY
from pipeline.notify.planner import Planner
from pipeline.notify.sender import SEND_TASK
from pipeline.settings import Settings
from pipeline.store.db import Database

_current: Runtime | None = None
_lock = threading.Lock()


class Runtime:
    """One deployment: its settings, database, Celery app, model provider and lifecycle hooks."""

    def __init__(
        self,
        settings: Settings,
        app: Celery,
        *,
        model: ModelProvider | None = None,
        hooks: Iterable[Hooks] = (),
        notifiers: Iterable[Notifier] | None = None,
        directory: Directory | None = None,
    ) -> None:
        self.settings = settings
        self.app = app
        self.db = Database(settings.database_url)
        self.model: ModelProvider = model or _model_provider(settings)
        self.hooks = HookChain(hooks)
        # Every transaction can reach the hooks, so a state change queues its hook to run after the commit.
        self.db.session_info[HOOKS_KEY] = self.hooks
        self.notifications: Planner | None = None
        self.use_notifications(notifiers, directory=directory)
        app.rubot_runtime = self  # type: ignore[attr-defined]

    def use_notifications(
        self,
        notifiers: Iterable[Notifier] | None = None,
        *,
        directory: Directory | None = None,
        base_url: str | None = None,
        secret_key: str | None = None,
    ) -> Planner | None:
        """Set up approval notifications: ``notifiers`` (default: those the settings configure, e.g. SMTP and a
        webhook) and the ``directory`` of approvers (default: the settings' role → e-mail mapping). ``[]`` turns
        them off. ``base_url`` and ``secret_key`` (for signed links) default to ``RUBOT_WEB_BASE_URL`` and
        ``RUBOT_WEB_SECRET_KEY``. Approval changes write outbox rows in their own transaction; the rows are sent by
        ``rubot.send_notification``."""
        self.notifications = notify_setup.planner(
            self.settings,
            partial(self.send, SEND_TASK),
            notifiers=notifiers,
            directory=directory,
            base_url=base_url,
            secret_key=secret_key,
        )
        if self.notifications is None:
            self.db.session_info.pop(PLANNER_KEY, None)
        else:
            self.db.session_info[PLANNER_KEY] = self.notifications
        return self.notifications

    def send(self, task: str, *args: Any, **options: Any) -> None:
        """Send a task by its stable name (ids only in ``args``)."""
        self.app.send_task(task, args=args, queue=self.settings.queue, **options)


def _model_provider(settings: Settings) -> ModelProvider:
    """``auto`` (default): Anthropic when an API key is configured, else the offline model."""
    choice = settings.model_provider
    if choice == "auto":
        choice = "anthropic" if settings.anthropic_api_key else "offline"
    if choice == "offline":
        from pipeline.models.offline import OfflineModel

        return OfflineModel()
    if choice == "anthropic":
        if not settings.anthropic_api_key:
            raise ConfigurationError("RUBOT_MODEL_PROVIDER=anthropic needs ANTHROPIC_API_KEY")
        from pipeline.models.anthropic import AnthropicModel

        return AnthropicModel(settings.anthropic_api_key, base_url=settings.anthropic_base_url)
    raise ConfigurationError(
        f"unknown model provider {settings.model_provider!r} (RUBOT_MODEL_PROVIDER); use auto, offline or anthropic"
    )


def of_app(app: Celery) -> Runtime:
    runtime = getattr(app, "rubot_runtime", None)
    if runtime is None:
        raise ConfigurationError(f"Celery app {app.main!r} has no Rubot runtime; build it with tasks.make_app()")
    return runtime


def install(runtime: Runtime | None) -> Runtime | None:
    """Make ``runtime`` the one the public API uses in this process; returns the previous one."""
    global _current
    with _lock:
        previous, _current = _current, runtime
    return previous


def current() -> Runtime:
    if _current is None:
        module = os.environ.get("RUBOT_CELERY_APP", "tasks.app")
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigurationError(f"cannot import the Rubot Celery app module {module!r}: {exc}") from exc
        if _current is None:
            raise ConfigurationError(f"importing {module!r} did not install a Rubot runtime")
    return _current
