"""The runtime: settings, database, Celery app, model provider and hooks of one deployment, passed explicitly.

**How code finds the runtime — one seam.** Celery tasks get theirs from the app they are registered on
(:func:`of_app`; ``pipeline.install(celery_app)`` sets ``celery_app.rubot_runtime``). The public helpers of
``pipeline`` (``get_run``, ``list_runs``, ``Workflow.delay`` ...) use :func:`current`: the runtime that this
process installed with :func:`install` — which ``pipeline.install(celery_app)`` does for you, so importing the
module that builds your Celery app is enough. Nothing is ever imported by a module name: a process that
installed no runtime gets a :class:`ConfigurationError` saying how to install one.

Settings may be given as a callable, resolved on first use: a host's Celery module can call
``pipeline.install`` before Django's settings (or a Flask ``app.config``) are ready.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from celery import Celery

from pipeline import observe
from pipeline.engine.admission import AdmissionHooks
from pipeline.engine.children import ChildHooks
from pipeline.engine.hooks import HOOKS_KEY, HookChain, Hooks
from pipeline.engine.on_failure import FailureHooks
from pipeline.engine.spend import SpendAlerts
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
    """One deployment: its settings, database, Celery app, model provider and lifecycle hooks.

    ``settings`` is a :class:`Settings` or a callable returning one; the database and the model provider are
    built from them on first use.
    """

    def __init__(
        self,
        settings: Settings | Callable[[], Settings],
        app: Celery,
        *,
        model: ModelProvider | None = None,
        hooks: Iterable[Hooks] = (),
        notifiers: Iterable[Notifier] | None = None,
        directory: Directory | None = None,
    ) -> None:
        self._settings: Settings | None = settings if isinstance(settings, Settings) else None
        self._loader = None if isinstance(settings, Settings) else settings
        self.app = app
        self._db: Database | None = None
        self._model = model
        # Admission is the first hook: a run leaving "running" frees a slot for a waiting one. A failed run's
        # Workflow.on_failure is sent to a worker by the second. A child run coming to rest sends its parent's
        # routing on again. Spend alerts return at once unless RUBOT_SPEND_ALERT_USD / RUBOT_SPEND_ALERTS switch
        # them on.
        self.hooks = HookChain([AdmissionHooks(self), FailureHooks(self), ChildHooks(self), SpendAlerts(self), *hooks])
        self._resolve = threading.RLock()
        # Notifications are set up with the database (settings may be loaded lazily, e.g. from Django's).
        self._notify_args: dict[str, Any] = {"notifiers": notifiers, "directory": directory}
        self._notifications: Planner | None = None
        self._notifications_ready = False
        app.rubot_runtime = self

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            with self._resolve:
                if self._settings is None:
                    assert self._loader is not None
                    loaded = self._loader()
                    if not isinstance(loaded, Settings):
                        raise ConfigurationError(f"the settings loader returned {loaded!r}, not Settings")
                    self._settings = loaded
        return self._settings

    @settings.setter
    def settings(self, settings: Settings) -> None:
        """Replace the settings (tests tune leases and caps); the database already built is kept."""
        self._settings = settings

    @property
    def db(self) -> Database:
        if self._db is None:
            with self._resolve:
                if self._db is None:
                    db = Database(self.settings.database_url)
                    # Observability the settings switch on (logs; Sentry with SENTRY_DSN) runs as hooks, after the
                    # ones given explicitly; settings may be read lazily, so they are added here, once.
                    for hook in observe.hooks_for(self.settings):
                        self.hooks.add(hook)
                    # Every transaction can reach the hooks, so a state change queues its hook after the commit.
                    db.session_info[HOOKS_KEY] = self.hooks
                    self._db = db
                    if not self._notifications_ready:
                        self.use_notifications(**self._notify_args)
        return self._db

    @property
    def model(self) -> ModelProvider:
        if self._model is None:
            with self._resolve:
                if self._model is None:
                    self._model = _model_provider(self.settings)
        return self._model

    @model.setter
    def model(self, provider: ModelProvider) -> None:
        self._model = provider

    @property
    def notifications(self) -> Planner | None:
        """What approval changes notify, and how (``None``: notifications are off)."""
        self.db  # noqa: B018 - notifications are set up with the database
        return self._notifications

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
        self._notifications_ready = True
        self._notifications = notify_setup.planner(
            self.settings,
            partial(self.send, SEND_TASK),
            notifiers=notifiers,
            directory=directory,
            base_url=base_url,
            secret_key=secret_key,
        )
        if self._notifications is None:
            self.db.session_info.pop(PLANNER_KEY, None)
        else:
            self.db.session_info[PLANNER_KEY] = self._notifications
        return self._notifications

    def send(self, task: str, *args: Any, **options: Any) -> None:
        """Send a task by its stable name (ids only in ``args``), JSON-serialized whatever the app's default."""
        options.setdefault("serializer", "json")
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
    """The runtime installed on ``app`` (by ``pipeline.install(app)``)."""
    runtime = getattr(app, "rubot_runtime", None)
    if runtime is None:
        raise ConfigurationError(f"Celery app {app.main!r} has no Rubot runtime; call pipeline.install(app) first")
    return runtime


def install(runtime: Runtime | None) -> Runtime | None:
    """Make ``runtime`` the one the public API uses in this process; returns the previous one."""
    global _current
    with _lock:
        previous, _current = _current, runtime
    return previous


def current() -> Runtime:
    """The runtime this process installed (see the module docstring); never found by importing a module."""
    runtime = _current
    if runtime is None:
        raise ConfigurationError(
            "no Rubot runtime is installed in this process: call pipeline.install(celery_app) where your Celery "
            "app is built (or pipeline.runtime.install(runtime)), and import that module before using pipeline"
        )
    return runtime
