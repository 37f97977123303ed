"""Metrics from SQL: ``rubot stats`` and ``/metrics`` over a seeded database equal counts taken directly in SQL;
daily spend alerts are raised once.

The expected numbers are computed here from raw rows (plain SQL text, JSON decoded and percentiles taken in
Python), independently of :mod:`pipeline.store.metrics`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

import pipeline
from pipeline import runtime as rubot_runtime
from pipeline.engine.hooks import ModelTurnInfo
from pipeline.engine.spend import SpendAlerts
from pipeline.store.tables import utcnow
from pipeline.web import create_app
from rubot_app.scripts import cli
from rubot_app.scripts.seed import seed
from tests import agent_workflows as aw
from tests import stacks
from tests.conftest import _production
from tests.test_agent_loop import final

SINCE = "2000-01-01"  # every seeded run


@pytest.fixture(params=["embedded", "postgres"])
def seeded(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[stacks.Stack]:
    """Given a fresh, migrated database (no worker) holding 400 seeded runs."""
    database = f"rubot_test_{uuid.uuid4().hex[:8]}"
    current = stacks.embedded_stack(tmp_path) if request.param == "embedded" else _production(tmp_path, database)
    current.migrate()
    current.runtime.settings = dataclasses.replace(current.settings, metrics_window_seconds=400 * 86400.0)
    previous = rubot_runtime.install(current.runtime)
    done = seed(current.runtime, 400, days=7, seed=11)
    assert done.runs == 400
    yield current
    rubot_runtime.install(previous)
    current.runtime.db.dispose()
    if request.param == "postgres":
        stacks.drop_postgres_database(database)


def rank(values: list[float], p: int) -> float | None:
    """Nearest rank: the value at position ceil(p/100 * n) of the sorted values."""
    if not values:
        return None
    ordered = sorted(values)
    return float(ordered[max(math.ceil(p * len(ordered) / 100), 1) - 1])


def as_dict(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def as_time(value: Any) -> datetime:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def direct_counts(stack: stacks.Stack) -> dict[str, Any]:
    """Everything the metrics report, straight from the tables."""
    with stack.runtime.db.engine.connect() as c:
        runs = c.execute(
            text(
                "SELECT id, workflow, status, error, input_tokens + output_tokens + cache_write_tokens "
                "+ cache_read_tokens, cost_micros FROM rubot_runs"
            )
        ).all()
        turns = dict(
            c.execute(
                text(
                    "SELECT run_id, count(*) FROM rubot_effects WHERE kind = 'model_turn' AND status = 'done' "
                    "GROUP BY run_id"
                )
            ).all()
        )
        tools = c.execute(
            text("SELECT run_id, op_key, result FROM rubot_effects WHERE kind = 'tool_call' AND status = 'done'")
        ).all()
        approvals = c.execute(text("SELECT run_id, status, created_at, decided_at FROM rubot_approvals")).all()
        turn_events = c.execute(
            text("SELECT run_id, step, data, created_at FROM rubot_events WHERE type = 'model.turn'")
        ).all()
    workflow_of = {r[0]: r[1] for r in runs}
    out: dict[str, Any] = defaultdict(lambda: defaultdict(dict))
    for run_id, workflow, status, error, tokens, cost in runs:
        w = out["workflows"][workflow]
        w.setdefault("by_status", Counter())[status] += 1
        w["runs"] = w.get("runs", 0) + 1
        w["tokens"] = w.get("tokens", 0) + tokens
        w["cost_micros"] = w.get("cost_micros", 0) + cost
        w.setdefault("turns", []).append(turns.get(run_id, 0))
        w.setdefault("costs", []).append(cost)
        if status in ("failed", "dead_letter"):
            w.setdefault("failures", Counter())[(as_dict(error) or {}).get("reason", "unknown")] += 1
    for run_id, _op, result in tools:
        w = out["workflows"][workflow_of[run_id]]
        w["tool_calls"] = w.get("tool_calls", 0) + 1
        w["tool_errors"] = w.get("tool_errors", 0) + int(bool(as_dict(result).get("is_error")))
    for run_id, status, created, decided in approvals:
        w = out["workflows"][workflow_of[run_id]]
        w["pending"] = w.get("pending", 0) + int(status == "pending")
        if decided is not None:
            w.setdefault("waits", []).append((as_time(decided) - as_time(created)).total_seconds())
    per_step: dict[tuple[str, str, str], int] = Counter()
    midnight = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
    spend: Counter[str] = Counter()
    for run_id, step, data, created in turn_events:
        data = as_dict(data)
        per_step[(run_id, step, data["agent"])] += 1
        a = out["agents"][data["agent"]]
        a["turns"] = a.get("turns", 0) + 1
        a["cost_micros"] = a.get("cost_micros", 0) + data["cost_micros"]
        a["tokens"] = a.get("tokens", 0) + sum(data["usage"].values())
        if as_time(created) >= midnight:
            spend[workflow_of[run_id]] += data["cost_micros"]
    for (run_id, step, agent), n in per_step.items():
        out["agents"][agent].setdefault("per_step", []).append(n)
        calls = [r for r in tools if r[0] == run_id and r[1].startswith(f"{step}/turn-")]
        a = out["agents"][agent]
        a["tool_calls"] = a.get("tool_calls", 0) + len(calls)
        a["tool_errors"] = a.get("tool_errors", 0) + sum(bool(as_dict(r[2]).get("is_error")) for r in calls)
    out["spend_today"] = dict(spend)
    return out


def test_rubot_stats_and_a_metrics_scrape_over_seeded_runs_equal_direct_sql_counts(seeded):
    # Given 400 seeded runs and the counts taken straight from the tables
    expected = direct_counts(seeded)
    assert sum(w["runs"] for w in expected["workflows"].values()) == 400
    assert len(expected["agents"]) == 2

    # When `rubot stats --json` reads them
    result = CliRunner().invoke(cli.main, ["stats", "--since", SINCE, "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)

    # Then every workflow's numbers are the direct counts
    assert {w["workflow"] for w in stats["workflows"]} == set(expected["workflows"])
    for w in stats["workflows"]:
        want = expected["workflows"][w["workflow"]]
        assert w["runs"] == want["runs"]
        assert w["by_status"] == dict(want["by_status"])
        assert w["tokens"] == want["tokens"]
        assert w["cost_micros"] == want["cost_micros"]
        assert w["turns_per_run"] == {"p50": rank(want["turns"], 50), "p95": rank(want["turns"], 95)}
        assert w["cost_per_run_micros"] == {"p50": rank(want["costs"], 50), "p95": rank(want["costs"], 95)}
        assert (w["tool_calls"], w["tool_errors"]) == (want.get("tool_calls", 0), want.get("tool_errors", 0))
        assert w["failures"] == dict(want.get("failures", {}))
        assert w["approvals_pending"] == want.get("pending", 0)
        waits = want.get("waits", [])
        assert w["approvals_decided"] == len(waits)
        for p in ("p50", "p95"):
            expected_wait = rank(waits, int(p[1:]))
            assert w["approval_wait_seconds"][p] == (
                None if expected_wait is None else pytest.approx(expected_wait, abs=0.01)
            )
    assert {a["agent"] for a in stats["agents"]} == set(expected["agents"])
    for a in stats["agents"]:
        want = expected["agents"][a["agent"]]
        assert (a["turns"], a["tokens"], a["cost_micros"]) == (want["turns"], want["tokens"], want["cost_micros"])
        assert a["runs"] == len(want["per_step"])
        assert a["turns_per_run"] == {"p50": rank(want["per_step"], 50), "p95": rank(want["per_step"], 95)}
        assert (a["tool_calls"], a["tool_errors"]) == (want["tool_calls"], want["tool_errors"])

    # And a Prometheus scrape of /metrics says the same
    page = create_app(seeded.runtime, secret_key="k").test_client().get("/metrics")
    assert page.status_code == 200
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(page.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value

    def metric(name: str, **labels: str) -> float | None:
        return samples.get((name, tuple(sorted(labels.items()))))

    for name, want in expected["workflows"].items():
        for status, count in want["by_status"].items():
            assert metric("rubot_runs", workflow=name, status=status) == count
            assert metric("rubot_window_runs", workflow=name, status=status) == count
        assert metric("rubot_tokens", workflow=name) == want["tokens"]
        assert metric("rubot_cost_usd", workflow=name) == pytest.approx(want["cost_micros"] / 1e6)
        assert metric("rubot_turns_per_run", workflow=name, quantile="0.95") == rank(want["turns"], 95)
        assert metric("rubot_tool_errors", workflow=name) == want.get("tool_errors", 0)
        for reason, count in want.get("failures", {}).items():
            assert metric("rubot_failures", workflow=name, reason=reason) == count
        if want.get("pending"):
            assert metric("rubot_approvals_pending", workflow=name) == want["pending"]
        if want.get("waits"):
            assert metric("rubot_approval_wait_seconds", workflow=name, quantile="0.5") == pytest.approx(
                rank(want["waits"], 50), abs=0.01
            )
        spent = expected["spend_today"].get(name)
        if spent:
            assert metric("rubot_spend_today_usd", workflow=name) == pytest.approx(spent / 1e6)
    for agent, want in expected["agents"].items():
        assert metric("rubot_agent_turns", agent=agent) == want["turns"]
        assert metric("rubot_agent_cost_usd", agent=agent) == pytest.approx(want["cost_micros"] / 1e6)
        assert metric("rubot_agent_tool_errors", agent=agent) == want["tool_errors"]

    # And the text form names each workflow with its run count
    text_out = CliRunner().invoke(cli.main, ["stats", "--since", SINCE]).stdout
    for name, want in expected["workflows"].items():
        assert f"{name}: {want['runs']} runs" in text_out


def test_stats_with_a_workflow_and_a_span_only_counts_those_runs(seeded):
    # Given the seeded runs / When stats are asked for one workflow over the last day
    since = utcnow() - timedelta(days=1)
    result = CliRunner().invoke(cli.main, ["stats", "--workflow", "SupportDesk", "--since", "24h", "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    # Then only that workflow's runs of that day are counted
    with seeded.runtime.db.engine.connect() as c:
        rows = c.execute(text("SELECT created_at FROM rubot_runs WHERE workflow = 'SupportDesk'")).scalars().all()
    recent = sum(as_time(t) >= since for t in rows)
    assert [w["workflow"] for w in stats["workflows"]] == (["SupportDesk"] if recent else [])
    if recent:
        # a run created within the seconds between the two clocks could differ: none is, seeded runs are older
        assert abs(stats["workflows"][0]["runs"] - recent) <= 1


@pytest.mark.parametrize("since", ["yesterday", "0h", "-5d", "2999-01-01", "24 parsecs"])
def test_a_bad_since_is_a_clear_error_without_a_traceback(seeded, since):
    result = CliRunner().invoke(cli.main, ["stats", "--since", since])
    assert result.exit_code == 2
    assert "--since" in result.stderr
    assert "Traceback" not in result.output


def test_a_daily_spend_threshold_raises_one_alert_per_workflow_and_agent(stack, model, caplog):
    # Given a spend threshold any model turn crosses, for the workflow and for its agent
    settings = stack.runtime.settings
    stack.runtime.settings = dataclasses.replace(
        settings, spend_alerts={"SupportWorkflow": 0.000001, "support_agent": 0.000001}
    )
    try:
        # one answer per run, so the three concurrent runs may take them in any order
        model.add(final("delivered"), final("delivered"), final("delivered"))
        # When three runs each spend money the same day
        with caplog.at_level(logging.WARNING, logger="rubot.spend"):
            runs = [pipeline.enqueue(aw.SupportWorkflow, {"order_id": 7, "message": "where?"}) for _ in range(3)]
            runs = [pipeline.wait(r, timeout=60) for r in runs]
    finally:
        stack.runtime.settings = settings
    assert all(r.status == "completed" for r in runs), [r.error for r in runs]
    assert all(r.cost_micros > 0 for r in runs)

    # Then one alert per (scope, name, day) is recorded, as one run event each, and logged once each
    day = utcnow().date().isoformat()
    with stack.runtime.db.engine.connect() as c:
        rows = c.execute(
            text("SELECT scope, name FROM rubot_spend_alerts WHERE day = :day ORDER BY scope"), {"day": day}
        ).all()
    assert [tuple(r) for r in rows] == [("agent", "support_agent"), ("workflow", "SupportWorkflow")]
    alerts = [e for r in runs for e in r.events if e.type == "spend.alert"]
    assert sorted((e.data["scope"], e.data["name"]) for e in alerts) == [
        ("agent", "support_agent"),
        ("workflow", "SupportWorkflow"),
    ]
    assert all(e.data["spent_usd"] >= e.data["threshold_usd"] for e in alerts)
    # And another process crossing the same thresholds later the same day raises nothing again (SQL decides)
    with caplog.at_level(logging.WARNING, logger="rubot.spend"):
        stack.runtime.settings = dataclasses.replace(
            settings, spend_alerts={"SupportWorkflow": 0.000001, "support_agent": 0.000001}
        )
        try:
            late = ModelTurnInfo(runs[0].id, "SupportWorkflow", "desk", 9, "support_agent", "m", cost_micros=5)
            SpendAlerts(stack.runtime).model_turn_recorded(late)
        finally:
            stack.runtime.settings = settings
    with stack.runtime.db.engine.connect() as c:
        assert c.execute(text("SELECT count(*) FROM rubot_spend_alerts WHERE day = :day"), {"day": day}).scalar() == 2
    assert len([e for e in pipeline.get_run(runs[0].id).events if e.type == "spend.alert"]) == len(
        [e for e in runs[0].events if e.type == "spend.alert"]
    )
    warnings = [r.getMessage() for r in caplog.records if r.name == "rubot.spend"]
    assert len(warnings) == 2, warnings
    assert any("workflow SupportWorkflow spent $" in w for w in warnings)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RUBOT_SPEND_ALERT_USD", "lots"),
        ("RUBOT_SPEND_ALERT_USD", "-1"),
        ("RUBOT_SPEND_ALERTS", "{not json"),
        ("RUBOT_SPEND_ALERTS", '{"SupportWorkflow": "ten"}'),
        ("RUBOT_SPEND_ALERTS", '{"SupportWorkflow": 0}'),
        ("RUBOT_METRICS_WINDOW_SECONDS", "0"),
    ],
)
def test_bad_spend_and_metrics_settings_are_clear_errors_naming_the_variable(tmp_path, name, value):
    from pipeline.errors import ConfigurationError
    from pipeline.settings import load

    with pytest.raises(ConfigurationError, match=name):
        load({"RUBOT_HOME": str(tmp_path), name: value})


def test_spend_settings_are_read_from_the_environment(tmp_path):
    from pipeline.settings import load

    settings = load({"RUBOT_SPEND_ALERT_USD": "2.5", "RUBOT_SPEND_ALERTS": '{"RefundDesk": 20}'})
    assert (settings.spend_alert_usd, dict(settings.spend_alerts)) == (2.5, {"RefundDesk": 20.0})
    assert load({"RUBOT_HOME": str(tmp_path)}).spend_alert_usd is None


class EnvelopeSink:
    """A local HTTP server standing in for Sentry: it keeps every envelope POSTed to ``/api/42/envelope/``."""

    def __init__(self) -> None:
        import http.server
        import threading

        self.envelopes: list[bytes] = []
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    import gzip

                    body = gzip.decompress(body)
                sink.envelopes.append(body)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.dsn = f"http://public@127.0.0.1:{self.server.server_port}/42"

    def close(self) -> None:
        self.server.shutdown()
        self.thread.join(10)


def test_a_spend_alert_reaches_sentry_once_when_the_process_initialised_it(tmp_path):
    import sentry_sdk

    # Given a process with Sentry initialised (pointing at a local envelope sink) and a run that spent today
    stack = stacks.embedded_stack(tmp_path)
    stack.migrate()
    seed(stack.runtime, 1, days=0.0001, seed=5, prefix="sentry")
    with stack.runtime.db.engine.connect() as c:
        run_id, workflow = c.execute(text("SELECT id, workflow FROM rubot_runs")).one()
    stack.runtime.settings = dataclasses.replace(stack.settings, spend_alerts={workflow: 0.000001})
    sink = EnvelopeSink()
    sentry_sdk.init(dsn=sink.dsn, default_integrations=False)
    try:
        # When its next model turn crosses the threshold, twice over
        hook = SpendAlerts(stack.runtime)
        for turn in (1, 2):
            hook.model_turn_recorded(ModelTurnInfo(run_id, workflow, "step", turn, "some_agent", "m", cost_micros=9))
        sentry_sdk.flush(timeout=10)
    finally:
        sentry_sdk.get_client().close()  # switched off again for the other tests of this process
        sentry_sdk.get_global_scope().set_client(None)
        sink.close()
        stack.runtime.db.dispose()

    # Then Sentry got exactly one message, naming the workflow, with the run as a tag
    messages = [e for e in sink.envelopes if b"Rubot spend alert" in e]
    assert len(messages) == 1, sink.envelopes
    assert f"workflow {workflow} spent".encode() in messages[0]
    assert run_id.encode() in messages[0]
    assert not sentry_sdk.is_initialized()
