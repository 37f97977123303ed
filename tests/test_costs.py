"""Bills match reality: unpriced models are never called, lost responses are charged at an estimate, and tools can
show the model less than their full result. On a real worker over both stacks, through the real SDK."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

import pipeline
from pipeline.engine import recovery
from pipeline.models.anthropic import AnthropicModel
from pipeline.store.tables import utcnow
from pipeline.testing import MessagesStandIn, reply
from pipeline.web.api import run_json
from pipeline.web.app import create_app
from rubot_app.scripts import output
from tests import agent_workflows as aw
from tests.conftest import sink_lines

SUPPORT = {"order_id": 7, "message": "My parcel never came."}


def final(resolution="resolved"):
    return reply(tool_uses=[{"name": "final_answer", "input": {"resolution": resolution, "refunded_cents": 0}}])


@pytest.fixture
def stand_in(stack, sink, monkeypatch):
    """A billing stand-in the stack's worker talks to through the real SDK (1 s client timeout)."""
    monkeypatch.setenv("RUBOT_TEST_SINK", str(sink))
    with MessagesStandIn(prices=stack.settings.prices, cache_minimums=stack.settings.cache_minimums) as server:
        previous, stack.runtime.model = stack.runtime.model, AnthropicModel("test-key", base_url=server.url, timeout=1)
        yield server
        stack.runtime.model = previous


def test_an_unpriced_model_is_refused_before_any_request_and_never_called_by_the_sweeper(stack, stand_in):
    # Given an agent whose model has no price
    stand_in.add(final(), final(), final())

    # When its workflow runs
    run = pipeline.run(aw.UnpricedWorkflow, input=SUPPORT, timeout=60)

    # Then it fails at once with a clear error naming RUBOT_PRICES_FILE, and nothing reached the provider
    assert run.status == "failed"
    assert run.error["reason"] == "unpriced_model"
    assert "claude-unpriced-9" in run.error["message"] and "RUBOT_PRICES_FILE" in run.error["message"]
    assert stand_in.requests == []
    # and the sweeper, two leases later, finds nothing to take over: no second try, no dead letter
    assert run.id not in recovery.sweep(
        stack.runtime, now=utcnow() + timedelta(seconds=3 * stack.settings.lease_seconds)
    )
    run = run.refresh()
    assert (run.status, run.cost_micros, run.recoveries, stand_in.requests) == ("failed", 0, 0, [])


@pytest.mark.parametrize("counted_by", ["count_tokens", "local_upper_bound"])
def test_a_response_lost_to_a_timeout_is_charged_at_an_estimate_never_below_the_bill(stack, stand_in, counted_by):
    # Given a provider that processes (and bills) the first request but whose answer never arrives in time
    stand_in.add(reply(tool_uses=[("lookup_order", {"order_id": 7})]))  # answered too late: lost
    stand_in.add(reply(tool_uses=[("lookup_order", {"order_id": 7})]), final())
    stand_in.hold(requests=1)
    if counted_by == "local_upper_bound":
        stand_in.count_tokens_status = 503  # and its token counting is down too

    # When the run goes on (the turn is retried after the timeout)
    run = pipeline.run(aw.SupportWorkflow, input=SUPPORT, timeout=90)
    stand_in.release()

    # Then the lost request is charged once, as an estimate, and the recorded cost is not below the bill
    assert run.status == "completed", run.error
    assert len(stand_in.message_requests) == 3 and len(stand_in.charges) == 3
    assert run.cost_micros >= stand_in.billed_micros
    [estimate] = [e for e in run.events if e.type == "model.turn_estimated"]
    assert estimate.data["estimated"] is True and estimate.data["counted_by"] == counted_by
    assert run.estimated_cost_micros == estimate.data["cost_micros"] > stand_in.charges[0].cost_micros
    assert run.cost_micros - run.estimated_cost_micros == sum(c.cost_micros for c in stand_in.charges[1:])
    [lost] = [e for e in run.effects if e.kind == "model_charge_estimate"]
    assert lost.op_key.startswith("desk/turn-1/lost-")
    # and every view shows it as an estimate
    assert "estimated for requests whose response was lost" in "\n".join(output.run_detail(run))
    assert "(estimated)" in "\n".join(output.run_detail(run))
    data = run_json(run)
    assert data["estimated_cost_micros"] == run.estimated_cost_micros
    assert [e["estimated"] for e in data["ledger"] if e["kind"] == "model_charge_estimate"] == [True]
    page = create_app(stack.runtime, secret_key="test-secret-key").test_client().get(f"/runs/{run.id}")
    assert f"of which {run.estimated_cost_usd:.6f} estimated" in " ".join(page.get_data(as_text=True).split())
    assert output.run_table([run])[-1].split()[-4].startswith("~$")


def test_a_tool_shows_the_model_its_projection_and_the_ledger_keeps_the_full_result(stack, model, sink):
    model.add(
        reply(tool_uses=[("lookup_customer", {"customer_id": "c_1"}), ("broken_projection", {"key": "k"})]),
        final(),
    )

    run = pipeline.run(aw.ProjectingWorkflow, input=SUPPORT, timeout=60)

    assert run.status == "completed", run.error
    assert sorted(sink_lines(sink)) == ["broken k", "customer c_1"]  # both tools ran once
    turn = next(e for e in run.effects if e.op_key == "desk/turn-1").result
    ids = {call["name"]: call["id"] for call in turn["tool_calls"]}
    shown = {r["tool_use_id"]: r for r in model.requests[1].messages[-1]["content"]}
    ledger = {e.op_key: e for e in run.effects}
    customer = ledger[f"desk/turn-1/tool-{ids['lookup_customer']}"]
    broken = ledger[f"desk/turn-1/tool-{ids['broken_projection']}"]
    # the model saw only the projection ...
    customer_call, broken_call = shown[ids["lookup_customer"]], shown[ids["broken_projection"]]
    assert json.loads(customer_call["content"]) == {"id": "c_1", "tier": "gold"}
    # ... while the ledger (run.effects, the console) holds the whole result
    assert customer.result["output"]["email"] == "ada@example.com" and len(customer.result["output"]["audit"]) == 20
    # a projection that fails shows the model an error, never the unprojected result
    assert broken_call["is_error"] is True and "not for the model" not in broken_call["content"]
    assert broken.result["output"]["secret"] == "not for the model"
    assert [e.data.get("projected") for e in run.events if e.type == "tool.completed"] == [True]
    assert [e.data.get("projected") for e in run.events if e.type == "tool.projection_failed"] == [True]
