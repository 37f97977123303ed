"""Sentry: the SDK set up for a Rubot process, and the lifecycle hooks that report what runs do.

:func:`init` starts sentry-sdk from ``SENTRY_DSN`` once per process (a worker when it starts, beat, the web app)
with its Celery integration: a transaction per task (so per step task and per model turn), trace propagation, and
cron monitors (check-ins) for the beat tasks. Every event, transaction and breadcrumb goes through the same
redactor as the event trail (``before_send``); frames' local variables are not sent (they hold tool arguments);
log records become breadcrumbs, never events — a failed run is reported by :class:`SentryHooks`, once.

:class:`SentryHooks`:

* ``step_started`` / ``model_turn_started``: tags ``run_id``, ``workflow``, ``step``, ``agent`` and the run's user
  on the task's scope, and the transaction named after the step;
* ``model_turn_recorded``: a ``gen_ai.chat`` span with OpenTelemetry's ``gen_ai.*`` attributes (model, token
  usage) and the turn's cost;
* ``tool_call_answered``: a breadcrumb (tool name and outcome; never the arguments);
* ``run_failed``: one error event with the reason — the run fails once, whatever retries came before.

Cron monitors: beat entries on a crontab or whole minutes through the Celery integration; Rubot's own sweeps,
which run every few seconds, through :mod:`pipeline.observe.crons`.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import sentry_sdk
from sentry_sdk.integrations.anthropic import AnthropicIntegration
from sentry_sdk.integrations.celery import CeleryIntegration
from sentry_sdk.integrations.logging import LoggingIntegration

from pipeline.engine.hooks import Hooks, ModelTurnInfo, RunInfo, StepInfo, ToolCallInfo
from pipeline.observe import crons
from pipeline.redact import redact
from pipeline.settings import Settings

log = logging.getLogger("rubot.sentry")

_started: set[int] = set()  # pids where init ran: a forked pool child starts its own client
_lock = threading.Lock()


def init(settings: Settings, *, where: str) -> bool:
    """Start sentry-sdk for this process from ``settings.sentry_dsn`` (once); False when there is no DSN."""
    import os

    if not settings.sentry_dsn:
        return False
    with _lock:
        if os.getpid() in _started:
            return True
        _started.add(os.getpid())
        sentry_sdk.init(**options(settings))
        sentry_sdk.set_tag("rubot.process", where)
        if where == "worker":
            crons.connect(settings)
    log.info("Rubot: Sentry reporting is on (%s)", where)
    return True


def options(settings: Settings) -> dict[str, Any]:
    """The keyword arguments of ``sentry_sdk.init`` (or ``sentry_sdk.Client``) for ``settings``."""
    return {
        "dsn": settings.sentry_dsn,
        "environment": settings.sentry_environment,
        "traces_sample_rate": settings.sentry_traces_sample_rate,
        # Frames' locals hold tool arguments and results as reprs, which no redactor can read reliably.
        "include_local_variables": False,
        "integrations": [
            CeleryIntegration(monitor_beat_tasks=True, exclude_beat_tasks=crons.excluded(settings)),
            # Log records are breadcrumbs, not events: a failed run is reported once, by SentryHooks.run_failed.
            LoggingIntegration(level=logging.INFO, event_level=None),
        ],
        # Rubot reports each model turn itself (with its cost, once per recorded turn); the SDK's own Anthropic
        # integration would add a second span per request, and could carry prompts.
        "disabled_integrations": [AnthropicIntegration()],
        "before_send": _redacted,
        "before_send_transaction": _redacted,
        "before_breadcrumb": _redacted,
    }


def _redacted(event: Any, _hint: Any = None) -> Any:
    return redact(event)


def _tag_scope(run_id: str, workflow: str, step: str, user_id: str | None, agent: str | None = None) -> None:
    scope = sentry_sdk.get_isolation_scope()
    scope.set_tag("run_id", run_id)
    scope.set_tag("workflow", workflow)
    scope.set_tag("step", step)
    if agent:
        scope.set_tag("agent", agent)
    if user_id:
        scope.set_user({"id": user_id})


class SentryHooks(Hooks):
    """Reports runs to Sentry (see the module docstring)."""

    def step_started(self, info: StepInfo) -> None:
        _tag_scope(info.run_id, info.workflow, info.step, info.user_id)
        sentry_sdk.get_current_scope().set_transaction_name(f"{info.workflow}.{info.step}")

    def model_turn_started(self, info: ModelTurnInfo) -> None:
        _tag_scope(info.run_id, info.workflow, info.step, None, info.agent)
        sentry_sdk.get_current_scope().set_transaction_name(f"{info.workflow}.{info.step} turn")

    def model_turn_recorded(self, info: ModelTurnInfo) -> None:
        usage = info.usage
        ended = datetime.now(UTC)
        started = ended - timedelta(seconds=info.duration_seconds or 0)
        span = sentry_sdk.start_span(op="gen_ai.chat", name=f"chat {info.model}", start_timestamp=started)
        data = {
            "gen_ai.system": info.provider or "anthropic",
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": info.model,
            "gen_ai.agent.name": info.agent,
            "gen_ai.response.finish_reasons": [info.stop_reason] if info.stop_reason else [],
            "gen_ai.usage.input_tokens": usage.get("input_tokens", 0),
            "gen_ai.usage.output_tokens": usage.get("output_tokens", 0),
            "gen_ai.usage.input_tokens.cached": usage.get("cache_read_tokens", 0),
            "gen_ai.usage.input_tokens.cache_write": usage.get("cache_write_tokens", 0),
            "gen_ai.usage.total_tokens": sum(usage.values()),
            "rubot.run_id": info.run_id,
            "rubot.turn": info.turn,
            "rubot.cost_usd": info.cost_micros / 1_000_000,
            "rubot.batch": info.batch,
            "rubot.estimated": info.estimated,
        }
        for key, value in data.items():
            span.set_data(key, value)
        span.finish(end_timestamp=ended)

    def tool_call_answered(self, info: ToolCallInfo) -> None:
        sentry_sdk.add_breadcrumb(
            category="rubot.tool",
            message=f"{info.tool}: {info.outcome}",
            level="warning" if info.is_error else "info",
            data={"tool": info.tool, "outcome": info.outcome, "op_key": info.op_key, "run_id": info.run_id},
        )

    def run_failed(self, info: RunInfo) -> None:
        error = info.error or {}
        reason = error.get("reason") or "failed"
        with sentry_sdk.new_scope() as scope:
            scope.set_tag("run_id", info.run_id)
            scope.set_tag("workflow", info.workflow)
            scope.set_tag("reason", reason)
            if info.step:
                scope.set_tag("step", info.step)
            if info.user_id:
                scope.set_user({"id": info.user_id})
            scope.set_context("rubot_run", {"run_id": info.run_id, "previous": info.previous, "error": error})
            # One issue per workflow and reason, however many runs fail that way.
            scope.fingerprint = ["rubot-run-failed", info.workflow, reason]
            sentry_sdk.capture_message(
                f"Run of {info.workflow} failed: {reason}: {error.get('message', '')}".rstrip(": "), level="error"
            )
