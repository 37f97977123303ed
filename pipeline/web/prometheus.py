"""``GET /metrics``: Prometheus text exposition of :mod:`pipeline.store.metrics`, queried at scrape time.

A custom collector runs the SQL when Prometheus scrapes, so every web process answers with the same numbers and
no worker has to push anything (in-process counters would each see one process's share). The metrics are
gauges over the window ``RUBOT_METRICS_WINDOW_SECONDS`` (24 h by default), plus the runs in each status now.
Each app has its own registry, so several apps in one process (tests, a host) never collide.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from flask import Flask, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from pipeline.store import metrics
from pipeline.store.tables import PENDING, WAITING, ApprovalRow, RunRow, utcnow
from pipeline.web import reads

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class SqlCollector(Collector):
    """Yields Rubot's metrics from SQL on every ``collect()`` (every scrape)."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        with self.app.app_context():
            rt = reads.runtime()
            window = rt.settings.metrics_window_seconds
            until = utcnow()
            since = until - timedelta(seconds=window)
            now, stats, spend = rt.db.reading(
                lambda s: (_now(s), metrics.collect(s, since=since, until=until), metrics.spend_today(s))
            )
        yield from families(now, stats, spend, window)


def _now(s: Any) -> dict[str, Any]:
    by_status = s.execute(select(RunRow.workflow, RunRow.status, func.count()).group_by(RunRow.workflow, RunRow.status))
    pending = s.execute(
        select(RunRow.workflow, func.count())
        .join(ApprovalRow, ApprovalRow.run_id == RunRow.id)
        .where(ApprovalRow.status == PENDING, RunRow.status == WAITING)
        .group_by(RunRow.workflow)
    )
    return {"runs": list(by_status), "pending": list(pending)}


def families(now: dict[str, Any], stats: metrics.Stats, spend: dict[str, int], window: float) -> Iterator[Metric]:
    w = f" (runs created in the last {window:g} s)"
    runs = GaugeMetricFamily("rubot_runs", "Runs in each status now", labels=["workflow", "status"])
    for workflow, status, count in now["runs"]:
        runs.add_metric([workflow, status], count)
    pending = GaugeMetricFamily("rubot_approvals_pending", "Approvals waiting for a decision now", labels=["workflow"])
    for workflow, count in now["pending"]:
        pending.add_metric([workflow], count)
    today = GaugeMetricFamily("rubot_spend_today_usd", "USD charged since midnight UTC", labels=["workflow"])
    for workflow, micros in spend.items():
        today.add_metric([workflow], micros / 1_000_000)
    yield from (runs, pending, today)

    def gauge(name: str, doc: str, extra: tuple[str, ...] = ()) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, doc + w, labels=["workflow", *extra])

    window_runs = gauge("rubot_window_runs", "Runs by status", ("status",))
    turns = gauge("rubot_turns_per_run", "Model turns per run, nearest rank", ("quantile",))
    tokens = gauge("rubot_tokens", "Tokens (input, output, cache write and read)")
    cost = gauge("rubot_cost_usd", "Cost in USD")
    cost_q = gauge("rubot_cost_per_run_usd", "Cost per run in USD, nearest rank", ("quantile",))
    calls = gauge("rubot_tool_calls", "Tool calls answered")
    errors = gauge("rubot_tool_errors", "Tool calls answered with an error")
    failures = gauge("rubot_failures", "Failed and dead-lettered runs by reason", ("reason",))
    wait = gauge("rubot_approval_wait_seconds", "Seconds approvals waited for a decision, nearest rank", ("quantile",))
    for s in stats.workflows:
        for status, count in s.by_status.items():
            window_runs.add_metric([s.workflow, status], count)
        _quantiles(turns, s.workflow, s.turns_per_run)
        tokens.add_metric([s.workflow], s.tokens)
        cost.add_metric([s.workflow], s.cost_micros / 1_000_000)
        _quantiles(cost_q, s.workflow, s.cost_per_run_micros, scale=1 / 1_000_000)
        calls.add_metric([s.workflow], s.tool_calls)
        errors.add_metric([s.workflow], s.tool_errors)
        for reason, count in s.failures.items():
            failures.add_metric([s.workflow, reason], count)
        _quantiles(wait, s.workflow, s.approval_wait_seconds)
    yield from (window_runs, turns, tokens, cost, cost_q, calls, errors, failures, wait)

    def agent_gauge(name: str, doc: str, extra: tuple[str, ...] = ()) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, doc + w, labels=["agent", *extra])

    a_turns = agent_gauge("rubot_agent_turns", "Model turns")
    a_q = agent_gauge("rubot_agent_turns_per_step", "Model turns per agent step of a run, nearest rank", ("quantile",))
    a_tokens = agent_gauge("rubot_agent_tokens", "Tokens")
    a_cost = agent_gauge("rubot_agent_cost_usd", "Cost in USD")
    a_calls = agent_gauge("rubot_agent_tool_calls", "Tool calls answered")
    a_errors = agent_gauge("rubot_agent_tool_errors", "Tool calls answered with an error")
    for a in stats.agents:
        a_turns.add_metric([a.agent], a.turns)
        _quantiles(a_q, a.agent, a.turns_per_run)
        a_tokens.add_metric([a.agent], a.tokens)
        a_cost.add_metric([a.agent], a.cost_micros / 1_000_000)
        a_calls.add_metric([a.agent], a.tool_calls)
        a_errors.add_metric([a.agent], a.tool_errors)
    yield from (a_turns, a_q, a_tokens, a_cost, a_calls, a_errors)


def _quantiles(family: GaugeMetricFamily, label: str, q: metrics.Quantiles, *, scale: float = 1.0) -> None:
    for name, value in (("0.5", q.p50), ("0.95", q.p95)):
        if value is not None:
            family.add_metric([label, name], value * scale)


def register(app: Flask) -> None:
    """Serve ``GET /metrics`` on ``app`` from a registry of its own."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SqlCollector(app))

    def scrape() -> Response:
        return Response(generate_latest(registry), content_type=CONTENT_TYPE)

    app.add_url_rule("/metrics", "metrics", scrape, methods=["GET"])
