"""Sentry and structured logs from a real worker process: envelopes captured by a local HTTP server, JSON lines
read from the worker's log. Canary secrets must appear in neither."""

from __future__ import annotations

import json
import logging

import pytest

import pipeline
from pipeline.observe import logs
from pipeline.testing import MessagesStandIn, reply
from tests import secret_workflows as sw
from tests.conftest import eventually
from tests.sentrykit import EnvelopeSink


def json_lines(text: str) -> list[dict]:
    lines = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
    return lines


def gen_ai_spans(sentry: EnvelopeSink) -> list[dict]:
    """Model-turn spans as ``{"data", "segment_id"}``: inside transactions, or (sentry-sdk sends ``gen_ai.*`` spans
    this way) as standalone ``span`` items whose attributes are ``{"value", "type"}`` pairs."""
    found = []
    for t in sentry.events("transaction"):
        for span in t.get("spans", []):
            if span.get("op") == "gen_ai.chat":
                found.append({"data": span.get("data", {}), "segment_id": t["contexts"]["trace"]["span_id"]})
    for container in sentry.events("span"):
        for span in container.get("items", []):
            attributes = {k: v.get("value") for k, v in span.get("attributes", {}).items()}
            if attributes.get("sentry.op") == "gen_ai.chat":
                found.append({"data": attributes, "segment_id": attributes.get("sentry.segment.id")})
    return found


def test_a_failing_run_reports_one_error_its_model_turns_as_spans_and_no_secret(production, tmp_path):
    # Given a worker process with Sentry pointed at a local envelope sink, JSON logs, and the real SDK talking to
    # the Messages API stand-in; the run plants canaries in a tool's arguments, its result and an exception message
    with EnvelopeSink() as sentry, MessagesStandIn([reply(**turn) for turn in sw.script()]) as stand_in:
        production.env.update(
            {
                "SENTRY_DSN": sentry.dsn,
                "RUBOT_LOG_FORMAT": "json",
                "RUBOT_LOG_LEVEL": "INFO",
                "RUBOT_MODEL_PROVIDER": "anthropic",
                "ANTHROPIC_API_KEY": "test-key",
                "ANTHROPIC_BASE_URL": stand_in.url,
            }
        )
        log = tmp_path / "worker.log"
        worker = production.start_worker_process(concurrency=1, log=log)
        try:
            run = pipeline.enqueue(
                sw.VaultWorkflow,
                input={"account": "acme", "vault_pin": sw.CANARY_PIN},
                context={"user": {"id": "ops-7"}},
            )
            eventually(lambda: pipeline.get_run(run.id).waiting_for_approval, timeout=60, what="the tool call to park")
            # When the call is approved and the run goes on to fail at its last step
            pipeline.get_run(run.id).approve("keeper@example.com")
            final = pipeline.wait(run, timeout=60)
            assert final.status == "failed" and final.error["reason"] == "step_failed", final.error

            # (the failing step's transaction is sent once its task has returned: after the failure was reported)
            def failing_step_reported() -> bool:
                names = [t.get("transaction") for t in sentry.events("transaction")]
                return "VaultWorkflow.open_vault" in names and len(gen_ai_spans(sentry)) >= 2

            eventually(failing_step_reported, timeout=60, what="the step transactions and the model turn spans")

            # And a sweep beat would send (here sent by the test) checks in with its cron monitor
            production.app.send_task("rubot.recover", queue=production.settings.queue)

            def checked_in() -> list[dict]:
                statuses = [c["status"] for c in sentry.events("check_in") if c["monitor_slug"] == "rubot-recover"]
                return statuses if statuses == ["in_progress", "ok"] else []

            eventually(checked_in, timeout=60, what="the sweep's check-ins")
        finally:
            worker.stop()

    # Then exactly one error event, tagged with the run, workflow and step, saying why
    errors = [e for e in sentry.events() if e.get("level") == "error"]
    assert len(errors) == 1, [e.get("message") or e.get("logentry") for e in errors]
    (error,) = errors
    assert error["tags"]["run_id"] == run.id
    assert error["tags"]["workflow"] == "VaultWorkflow" and error["tags"]["step"] == "open_vault"
    assert error["tags"]["reason"] == "step_failed" and error["user"]["id"] == "ops-7"
    assert "refused pin [redacted]" in json.dumps(error)

    # And each model turn arrived as a span with the model and token usage (OpenTelemetry gen_ai.* names)
    turns = gen_ai_spans(sentry)
    assert len(turns) == 2
    transactions = {t["contexts"]["trace"]["span_id"]: t for t in sentry.events("transaction")}
    for span in turns:
        assert span["data"]["gen_ai.request.model"] == "claude-haiku-4-5"
        assert span["data"]["gen_ai.usage.input_tokens"] > 0 and span["data"]["gen_ai.usage.output_tokens"] > 0
        assert span["data"]["rubot.cost_usd"] > 0 and span["data"]["rubot.run_id"] == run.id
        # in the transaction of its model-turn task, tagged with the run, workflow, step and agent
        tags = transactions[span["segment_id"]]["tags"]
        assert (tags["run_id"], tags["workflow"], tags["step"], tags["agent"]) == (
            run.id,
            "VaultWorkflow",
            "unlock",
            "vault_agent",
        )

    # And the logs are JSON lines carrying the run's fields: tokens and cost per turn, the tool per call
    lines = [line for line in json_lines(log.read_text(errors="replace")) if line.get("run_id") == run.id]
    assert any(line.get("tokens", 0) > 0 and line.get("cost", 0) > 0 and line.get("op_key") for line in lines)
    assert any(line.get("tool") == "unlock_vault" and line.get("workflow") == "VaultWorkflow" for line in lines)

    (opened, _) = [c for c in sentry.events("check_in") if c["monitor_slug"] == "rubot-recover"]
    assert opened["monitor_config"]["schedule"] == {"type": "interval", "value": 1, "unit": "minute"}

    # And no canary secret reached Sentry or the log
    assert [c for c in sw.CANARIES if c in sentry.raw()] == []
    assert [c for c in sw.CANARIES if c in log.read_text(errors="replace")] == []


@pytest.fixture
def captured_json():
    import io

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.formatter("json"))
    handler.addFilter(logs.RunContext())
    logger = logging.getLogger("rubot.test-json")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield logger, stream
    logger.removeHandler(handler)
    logs.bind()


def test_json_lines_carry_the_run_context_and_go_through_the_redactor(captured_json):
    logger, stream = captured_json
    # Given a thread working on a run / When something logs, with a secret-looking extra
    logs.bind(run_id="run_x", workflow="W", step="s", op_key="s/turn-1")
    logger.info("calling with key sk-ant-abcdefghijklmnop", extra={"api_key": "k-123456", "tokens": 12})
    # Then the line is JSON with the run's fields and no secret
    (line,) = json_lines(stream.getvalue())
    assert (line["run_id"], line["workflow"], line["step"], line["op_key"], line["tokens"]) == (
        "run_x",
        "W",
        "s",
        "s/turn-1",
        12,
    )
    assert line["api_key"] == "[redacted]" and "sk-ant-" not in line["message"]


def test_a_tool_call_is_a_breadcrumb_without_its_arguments_and_the_event_goes_through_the_redactor(tmp_path):
    import sentry_sdk

    from pipeline.engine.hooks import RunInfo, ToolCallInfo
    from pipeline.observe import sentry as rubot_sentry
    from pipeline.settings import load

    with EnvelopeSink() as sink:
        # Given Rubot's Sentry options on a client of this scope only (the process's global client is left alone)
        settings = load({"RUBOT_HOME": str(tmp_path), "SENTRY_DSN": sink.dsn})
        client = sentry_sdk.Client(**rubot_sentry.options(settings))
        hooks = rubot_sentry.SentryHooks()
        with sentry_sdk.isolation_scope() as scope:
            scope.set_client(client)
            # When a tool call is answered and then the run fails with a secret in its error's details
            hooks.tool_call_answered(
                ToolCallInfo(
                    run_id="run_1",
                    workflow="VaultWorkflow",
                    step="unlock",
                    op_key="unlock/turn-1/tool-t1",
                    tool="unlock_vault",
                    outcome="tool.completed",
                    is_error=False,
                )
            )
            error = {"reason": "budget_exceeded", "message": "out of turns", "details": {"passphrase": sw.CANARY_ARG}}
            hooks.run_failed(
                RunInfo(run_id="run_1", workflow="VaultWorkflow", status="failed", step="unlock", error=error)
            )
        client.flush(timeout=10)
        eventually(lambda: sink.events(), what="the event")

    # Then the event carries the tool call as a breadcrumb: its name and outcome, never its arguments
    (event,) = sink.events()
    (crumb,) = [c for c in event["breadcrumbs"]["values"] if c.get("category") == "rubot.tool"]
    assert crumb["message"] == "unlock_vault: tool.completed"
    assert set(crumb["data"]) == {"tool", "outcome", "op_key", "run_id"}
    # and the run's error reached Sentry through the redactor
    assert event["contexts"]["rubot_run"]["error"]["details"]["passphrase"] == "[redacted]"
    assert sw.CANARY_ARG not in sink.raw()
