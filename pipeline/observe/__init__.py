"""Observability as lifecycle hooks (:mod:`pipeline.engine.hooks`), switched on by settings: structured logs
(:mod:`pipeline.observe.logs`, always) and Sentry (:mod:`pipeline.observe.sentry`, with ``SENTRY_DSN``). Nothing
here is called from the engine: the runtime adds these hooks, and processes call :func:`start` when they start.
"""

from __future__ import annotations

from pipeline.engine.hooks import Hooks
from pipeline.settings import Settings


def hooks_for(settings: Settings) -> list[Hooks]:
    """The observability hooks ``settings`` switch on, in the order they run."""
    from pipeline.observe.logs import LogHooks

    hooks: list[Hooks] = [LogHooks()]
    if settings.sentry_dsn:
        from pipeline.observe.sentry import SentryHooks

        hooks.append(SentryHooks())
    return hooks


def start(settings: Settings, *, where: str) -> None:
    """What a process does once when it starts (a worker, beat, the web app): Sentry, when configured."""
    if settings.sentry_dsn:
        from pipeline.observe import sentry

        sentry.init(settings, where=where)
