"""The agent loop on a real worker: turns and tool calls as tasks, guards, budgets, approvals, retries, cancel."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest

import pipeline
from pipeline.engine import recovery
from pipeline.errors import InvalidRunState
from pipeline.llm import pricing
from pipeline.models.anthropic import AnthropicModel
from pipeline.models.base import Usage
from pipeline.store import queries
from pipeline.store.tables import utcnow
from pipeline.testing import MessagesStandIn, error, reply
from tests import agent_workflows as aw
from tests.conftest import eventually, sink_lines

SUPPORT = {"order_id": 7, "message": "My parcel never came."}
SUPPORT_USER = {"user": {"id": "agent-1", "roles": ["support"]}}


def final(resolution="resolved", refunded=0, id=None):
    use = {"name": "final_answer", "input": {"resolution": resolution, "refunded_cents": refunded}}
    if id:
        use["id"] = id
    return reply(tool_uses=[use], usage={"input_tokens": 100, "output_tokens": 20})


def events(run, type_):
    return [e for e in run.refresh().events if e.type == type_]


def test_a_tool_turn_then_a_final_answer_completes_the_step_and_the_workflow(stack, model, sink):
    model.add(
        reply(
            "Let me check.",
            tool_uses=[("lookup_order", {"order_id": 7})],
            usage={"input_tokens": 300, "output_tokens": 40},
        ),
        final("delivered; no refund"),
    )

    run = pipeline.run(aw.SupportWorkflow, input=SUPPORT, timeout=60)

    assert run.status == "completed", run.error
    assert run.output == {"resolution": "delivered; no refund", "refunded_cents": 0, "closed": True}
    assert sink_lines(sink) == ["lookup 7"]
    keys = [e.op_key for e in run.effects]
    assert keys == ["desk/input", "desk/turn-1", "desk/turn-1/tool-toolu_scripted_1", "desk/turn-2", "desk", "close"]
    # The second request carries the transcript rebuilt from SQL, tool result included.
    second = model.requests[1].messages
    assert [m["role"] for m in second] == ["user", "assistant", "user"]
    assert json.loads(second[2]["content"][0]["content"]) == {"order_id": 7, "status": "delivered"}
    assert (run.tokens.input_tokens, run.tokens.output_tokens) == (400, 60)


def test_tool_calls_of_one_turn_run_in_parallel_as_a_chord_into_the_next_turn(stack, model, sink):
    model.add(
        reply(
            tool_uses=[
                ("lookup_order", {"order_id": 1}),
                ("lookup_order", {"order_id": 2}),
                ("lookup_order", {"order_id": 3}),
            ]
        ),
        final(),
    )

    run = pipeline.run(aw.SupportWorkflow, input=SUPPORT, timeout=60)

    assert run.status == "completed", run.error
    assert sorted(sink_lines(sink)) == ["lookup 1", "lookup 2", "lookup 3"]
    results = model.requests[1].messages[2]["content"]
    assert [r["type"] for r in results] == ["tool_result"] * 3
    assert eventually(lambda: stack.result_keys() == [], what="tool results forgotten")


def test_a_hostile_model_ends_within_budget_with_no_unauthorized_execution(stack, model, sink):
    token_holder = {}

    def read_back(request):
        stored = json.loads(request.messages[-1]["content"][0]["content"])
        token_holder["token"] = stored["stored_result"]
        return reply(tool_uses=[("read_data", {"token": stored["stored_result"], "page": 2})])

    model.add(
        reply(
            tool_uses=[
                ("launch_missiles", {"target": "moon"}),
                ("read_secrets", {"topic": "payroll"}),
                ("lookup_order", {"order_id": "seven"}),
                ("refund_order", {"order_id": 7, "amount_cents": 5}),
            ]
        ),
        reply(tool_uses=[("lookup_order", {"order_id": 7})] * 50),
        reply(tool_uses=[("export_everything", {})]),
        read_back,
        reply(tool_uses=[("read_data", {"token": "blob_of_someone_else", "page": 1})]),
        final(refunded="lots"),
        final("I looked it up"),
    )

    run = pipeline.run(aw.SupportWorkflow, input=SUPPORT, timeout=120)  # no user in context: no refunds

    assert run.status == "completed", run.error
    lines = sink_lines(sink)
    assert not any(line.startswith(("SECRET", "refund")) for line in lines)  # 0 unauthorized executions
    assert lines == ["lookup 7", "export"]
    assert len(events(run, "tool.unknown")) == 1
    assert len(events(run, "tool.denied")) == 2  # read_secrets for anyone, refund_order for a run without a user
    assert len(events(run, "tool.invalid_input")) == 1
    assert len(events(run, "tool.duplicate")) == 49
    assert len(events(run, "agent.invalid_output")) == 1
    with stack.runtime.db.transaction() as s:
        row = queries.get_run(s, run.id)
        assert row.counters == {"unknown_tool": 1, "tool_denied": 2, "invalid_tool_input": 1, "duplicate_tool_call": 49}
    # The 10 MB result never reached the model: it got a token and read page 2 of 4 KB.
    sizes = [len(json.dumps(r.messages)) for r in model.requests]
    assert max(sizes) < 200_000
    page = json.loads(model.requests[4].messages[-1]["content"][0]["content"])
    assert page["token"] == token_holder["token"] and page["page"] == 2 and len(page["data"]) == 4096
    assert "No stored result" in model.requests[5].messages[-1]["content"][0]["content"]


def test_the_turn_budget_fails_the_run_and_keeps_the_transcript(stack, model, sink):
    for n in range(10):
        model.add(reply(tool_uses=[("lookup_order", {"order_id": n})]))

    run = pipeline.run(aw.TightWorkflow, input=SUPPORT, timeout=60)

    assert run.status == "failed"
    assert run.error["reason"] == "budget_exceeded"
    assert run.error["details"] == {"scope": "step", "budget": "max_turns", "limit": 3, "used": 3}
    assert len(model.requests) == 3
    assert [e.op_key for e in run.effects if e.kind == "model_turn"] == ["desk/turn-1", "desk/turn-2", "desk/turn-3"]
    assert sink_lines(sink) == ["lookup 0", "lookup 1", "lookup 2"]


def test_the_run_token_budget_is_checked_before_every_model_call(stack, model):
    model.add(
        reply(tool_uses=[("lookup_order", {"order_id": 1})], usage={"input_tokens": 450, "output_tokens": 60}), final()
    )

    run = pipeline.run(aw.BudgetedWorkflow, input=SUPPORT, timeout=60)

    assert run.status == "failed"
    assert run.error["details"] == {"scope": "run", "budget": "max_tokens", "limit": 500, "used": 510}
    assert len(model.requests) == 1


def test_invalid_answers_go_back_with_field_errors_then_the_step_fails(stack, model):
    model.add(final(refunded="x"), reply("no tools today"), final(refunded="y"))

    run = pipeline.run(aw.SupportWorkflow, input=SUPPORT, timeout=60)

    assert run.status == "failed"
    assert run.error["reason"] == "invalid_agent_output"
    assert run.error["attempts"] == 3
    assert run.error["details"] == {"refunded_cents": ["Not a valid integer."]}
    feedback = model.requests[1].messages[-1]["content"][0]
    assert feedback["is_error"] is True and "refunded_cents" in feedback["content"]
    assert (
        model.requests[2].messages[-1]["content"] == "Answer by calling the final_answer tool with fields "
        "matching its schema."
    )


def test_a_large_refund_parks_for_approval_bound_to_its_arguments_and_runs_once(stack, model, sink):
    model.add(reply(tool_uses=[("refund_order", {"order_id": 7, "amount_cents": 25_000})]), final(refunded=25_000))

    run = pipeline.run(aw.SupportWorkflow, input=SUPPORT, context=SUPPORT_USER, timeout=60)

    assert run.waiting_for_approval
    approval = run.pending_approval
    assert approval.role == "support_lead" and "25000" in approval.reason
    assert sink_lines(sink) == []
    assert eventually(lambda: stack.queue_length() == 0, what="nothing left in the broker")
    run.approve(approved_by="lead@example.com")
    run = pipeline.wait(run, timeout=60)
    assert run.status == "completed", run.error
    assert [line.split(" key=")[0] for line in sink_lines(sink)] == ["refund 7 25000"]
    assert len(model.requests) == 2


def test_a_rejected_tool_call_reaches_the_model_as_an_error(stack, model, sink):
    model.add(reply(tool_uses=[("refund_order", {"order_id": 7, "amount_cents": 25_000})]), final("declined"))
    run = pipeline.run(aw.SupportWorkflow, input=SUPPORT, context=SUPPORT_USER, timeout=60)

    run.reject(rejected_by="lead@example.com", comment="fraud risk")
    run = pipeline.wait(run, timeout=60)

    assert run.status == "completed"
    assert sink_lines(sink) == []
    result = model.requests[1].messages[-1]["content"][0]
    assert result["is_error"] is True and "fraud risk" in result["content"]


def test_the_workflow_policy_denies_a_call_and_the_model_is_told(stack, model, sink):
    model.add(reply(tool_uses=[("refund_order", {"order_id": 13, "amount_cents": 100})]), final())
    run = pipeline.run(aw.SupportWorkflow, input={**SUPPORT, "order_id": 13}, context=SUPPORT_USER, timeout=60)

    assert run.status == "completed"
    assert sink_lines(sink) == []
    assert "under investigation" in model.requests[1].messages[-1]["content"][0]["content"]


@pytest.fixture
def blocked_refund(sink):
    """RefundOrder.call records that it started, then hangs until released (a slow or dying worker)."""
    started, release = threading.Event(), threading.Event()
    original = aw.RefundOrder.call

    def hangs(self, **kwargs):
        aw.record(f"refund {kwargs['order_id']}")
        started.set()
        release.wait(30)
        return {"refund_id": "late"}

    aw.RefundOrder.call = hangs
    yield started, release
    release.set()
    aw.RefundOrder.call = original


def test_a_redelivered_side_effecting_call_stands_back_while_its_holder_lives(stack, model, sink, blocked_refund):
    started, release = blocked_refund
    model.add(reply(tool_uses=[("refund_order", {"order_id": 7, "amount_cents": 100}, "toolu_slow")]), final())
    run = pipeline.enqueue(aw.SupportWorkflow, input=SUPPORT, context=SUPPORT_USER)
    eventually(started.is_set, what="refund started")

    # When the same tool task is delivered again while the first delivery still holds its lease
    stack.app.send_task("rubot.agent_tool", args=[run.id, "desk", 1, "toolu_slow"], queue=stack.settings.queue)
    eventually(lambda: events(run, "tool.held_elsewhere"), what="duplicate stood back")

    # Then only the holder runs the refund, and the run completes once it is done
    release.set()
    run = pipeline.wait(run, timeout=60)
    assert run.status == "completed", run.error
    assert sink_lines(sink) == ["refund 7"]


def test_an_interrupted_side_effect_moves_the_run_to_needs_reconciliation(stack, model, sink, blocked_refund):
    started, release = blocked_refund
    model.add(reply(tool_uses=[("refund_order", {"order_id": 7, "amount_cents": 100}, "toolu_dead")]), final())
    run = pipeline.enqueue(aw.SupportWorkflow, input=SUPPORT, context=SUPPORT_USER)
    eventually(started.is_set, what="refund started")

    # When the sweeper runs after the refund's lease ran out (its worker presumed dead)
    later = utcnow() + timedelta(seconds=3 * stack.settings.lease_seconds)
    assert run.id in recovery.sweep(stack.runtime, now=later)

    # Then the refund is not run again: a person must reconcile it
    run = pipeline.wait(run, timeout=30)
    assert run.status == "needs_reconciliation"
    assert run.error["op_key"] == "desk/turn-1/tool-toolu_dead"
    release.set()
    assert sink_lines(sink) == ["refund 7"]
    assert len(model.requests) == 1


@pytest.mark.parametrize("happened", [True, False])
def test_a_person_reconciles_the_interrupted_side_effect_and_the_run_goes_on(
    stack, model, sink, blocked_refund, happened
):
    started, release = blocked_refund
    model.add(reply(tool_uses=[("refund_order", {"order_id": 7, "amount_cents": 100}, "toolu_x")]), final())
    run = pipeline.enqueue(aw.SupportWorkflow, input=SUPPORT, context=SUPPORT_USER)
    eventually(started.is_set, what="refund started")
    recovery.sweep(stack.runtime, now=utcnow() + timedelta(seconds=3 * stack.settings.lease_seconds))
    run = pipeline.wait(run, timeout=30)
    assert run.status == "needs_reconciliation"
    with pytest.raises(InvalidRunState):
        run.retry(by="ops@example.com")  # retry is for dead letters; this one needs a decision

    # When a person checked the payment system and says whether the refund happened
    run.reconcile(
        by="ops@example.com",
        happened=happened,
        result={"refund_id": "re_checked"},
        comment="checked in the PSP dashboard",
    )
    if not happened:
        eventually(lambda: len(sink_lines(sink)) == 2, what="the refund to run again")
    release.set()  # the hung first delivery returns late: the recorded outcome stands, its result is dropped
    run = pipeline.wait(run, timeout=60)

    # Then the run goes on: the model sees the recorded result, or the refund runs once more
    assert run.status == "completed", run.error
    result = model.requests[1].messages[-1]["content"][0]["content"]
    if happened:
        assert json.loads(result) == {"refund_id": "re_checked"}
        assert sink_lines(sink) == ["refund 7"]
    else:
        assert sink_lines(sink) == ["refund 7", "refund 7"]
    assert [e.data["happened"] for e in run.events if e.type == "run.reconciled"] == [happened]


def test_retryable_model_errors_are_retried_and_the_turn_is_billed_once(stack, model):
    model.add(error(429, retry_after=0), error(529, retry_after=0), error(500, retry_after=0), final())

    run = pipeline.run(aw.SupportWorkflow, input=SUPPORT, timeout=60)

    assert run.status == "completed", run.error
    assert len(model.requests) == 4
    assert len(events(run, "model.turn")) == 1
    expected = pricing.cost_micros(
        Usage(input_tokens=100, output_tokens=20), pricing.price_for("claude-haiku-4-5", stack.settings.prices)
    )
    assert run.cost_micros == expected


def test_a_non_retryable_model_error_fails_the_run_with_its_reason(stack, model):
    model.add(error(400, message="prompt is too long"))
    run = pipeline.run(aw.SupportWorkflow, input=SUPPORT, timeout=60)
    assert run.status == "failed"
    assert run.error["reason"] == "model_error"


def test_cancel_mid_loop_makes_no_further_model_or_tool_call(stack, model, sink):
    answered, release = threading.Event(), threading.Event()

    def slow_turn(request):
        answered.set()
        release.wait(20)
        return reply(tool_uses=[("lookup_order", {"order_id": 1})])

    model.add(slow_turn, final())
    run = pipeline.enqueue(aw.SupportWorkflow, input=SUPPORT)
    eventually(answered.is_set, what="first model call")
    run.cancel()
    release.set()

    eventually(lambda: events(run, "tool.skipped"), what="tool call skipped")
    assert pipeline.get_run(run.id).status == "cancelled"
    assert sink_lines(sink) == []
    assert len(model.requests) == 1 and model.remaining == 1


def test_the_real_sdk_through_the_stand_in_carries_schemas_and_cache_control_and_costs_what_it_reports(
    stack, sink, monkeypatch
):
    monkeypatch.setenv("RUBOT_TEST_SINK", str(sink))
    usage = {
        "input_tokens": 1200,
        "output_tokens": 150,
        "cache_creation_input_tokens": 900,
        "cache_read_input_tokens": 2500,
    }
    with MessagesStandIn([reply(tool_uses=[("lookup_order", {"order_id": 3})], usage=usage), final()]) as stand_in:
        previous, stack.runtime.model = stack.runtime.model, AnthropicModel("test-key", base_url=stand_in.url)
        try:
            run = pipeline.run(aw.SupportWorkflow, input=SUPPORT, timeout=60)
        finally:
            stack.runtime.model = previous

    assert run.status == "completed", run.error
    first = stand_in.requests[0].body
    assert [t["name"] for t in first["tools"]] == [
        "lookup_order",
        "refund_order",
        "read_secrets",
        "export_everything",
        "read_data",
        "final_answer",
    ]
    assert first["tools"][0]["input_schema"]["properties"] == {"order_id": {"type": "integer"}}
    # Haiku 4.5 caches nothing under 4,096 tokens: this small agent's tools and system get no breakpoint; the only
    # one sits at the end of the conversation (the user input on turn 1, the tool result on turn 2).
    assert not any("cache_control" in t for t in first["tools"])
    assert "cache_control" not in first["system"][0]
    assert first["messages"][-1]["content"][-1]["cache_control"] == {"type": "ephemeral"}
    second = stand_in.requests[1].body["messages"]
    assert [b.get("cache_control") for m in second for b in m["content"]] == [None, None, {"type": "ephemeral"}]
    assert second[-1]["content"][-1]["type"] == "tool_result"
    price = pricing.price_for("claude-haiku-4-5", stack.settings.prices)
    expected = pricing.cost_micros(Usage(1200, 150, 900, 2500), price) + pricing.cost_micros(
        Usage(100, 20, 0, 0), price
    )
    assert run.cost_micros == expected
    assert (run.tokens.cache_write_tokens, run.tokens.cache_read_tokens) == (900, 2500)
