"""Agent steps through the Message Batches API: the run parks between turns, beat's collector resumes it, the cost
is half. The real SDK drives the stand-in's batch endpoints; a real worker runs every task, over both stacks."""

from __future__ import annotations

from datetime import timedelta

import pytest
from celery.worker import state as worker_state

import pipeline
from pipeline.engine import recovery
from pipeline.llm import batch_collect
from pipeline.models.anthropic import AnthropicModel
from pipeline.store.tables import utcnow
from pipeline.testing import MessagesStandIn, reply
from tests import agent_workflows as aw
from tests.conftest import eventually, sink_lines

SUPPORT = {"order_id": 7, "message": "My parcel never came."}


def script():
    return [
        reply("Let me check.", tool_uses=[("lookup_order", {"order_id": 7})]),
        reply(tool_uses=[{"name": "final_answer", "input": {"resolution": "delivered", "refunded_cents": 0}}]),
    ]


@pytest.fixture
def billing(stack, sink, monkeypatch):
    """Start a billing stand-in and point the stack's worker at it through the real SDK."""
    monkeypatch.setenv("RUBOT_TEST_SINK", str(sink))
    servers = []
    previous = stack.runtime.model

    def start(entries):
        server = MessagesStandIn(entries, prices=stack.settings.prices, cache_minimums=stack.settings.cache_minimums)
        servers.append(server)
        stack.runtime.model = AnthropicModel("test-key", base_url=server.url)
        return server

    yield start
    stack.runtime.model = previous
    for server in servers:
        server.close()


def events(run, type_):
    return [e for e in run.refresh().events if e.type == type_]


def collect(stack):
    """Beat's tick: the collect task by its stable name, run by the stack's worker."""
    stack.app.send_task(batch_collect.COLLECT_TASK, queue=stack.settings.queue)


def parked_on_batch(stack, run, submitted: int) -> None:
    eventually(lambda: len(events(run, "model.batch_submitted")) == submitted, what=f"submission {submitted}")
    # nothing waits with the run: no message in the queue, no task in a worker, no result key
    assert eventually(lambda: stack.queue_length() == 0 and not worker_state.active_requests, what="worker idle")
    assert stack.result_keys() == []
    assert run.refresh().status == "running"
    # and the sweeper, even an hour on, does not mistake the wait for a dead worker or a stalled run
    assert run.id not in recovery.sweep(stack.runtime, now=utcnow() + timedelta(hours=1))


def test_a_batch_agent_step_parks_between_turns_completes_through_the_batch_api_and_costs_half(stack, billing, sink):
    # Given a workflow whose agent step is sent through the Message Batches API
    stand_in = billing(script())
    run = pipeline.enqueue(aw.BatchSupportWorkflow, input=SUPPORT)

    for turn in (1, 2):
        # When a turn is submitted, the run parks on its batch
        parked_on_batch(stack, run, turn)
        assert len(stand_in.batches.all()) == turn
        # a tick before the batch ended changes nothing; a redelivered turn task submits nothing
        assert batch_collect.collect(stack.runtime)["waiting"] == 1
        stack.app.send_task("rubot.agent_turn", args=[run.id, "desk", turn], queue=stack.settings.queue)
        eventually(lambda: stack.queue_length() == 0 and not worker_state.active_requests, what="redelivery done")
        assert len(stand_in.batches.all()) == turn
        # Then once the batch ended, beat's collector records the turn and resumes the run (twice: nothing doubles)
        stand_in.end_batches()
        collect(stack)
        collect(stack)

    run = pipeline.wait(run, timeout=60)
    assert run.status == "completed", run.error
    assert run.output == {"resolution": "delivered", "refunded_cents": 0, "closed": True}
    assert sink_lines(sink) == ["lookup 7"]
    turns = events(run, "model.turn")
    assert [(e.data["turn"], e.data["batch"]) for e in turns] == [(1, True), (2, True)]
    assert [b.requests[0][0] for b in stand_in.batches.all()] == [
        e.data["custom_id"] for e in events(run, "model.batch_submitted")
    ]
    assert all(c.batch for c in stand_in.charges) and run.cost_micros == stand_in.billed_micros

    # And the same conversation sent synchronously costs twice as much (to a micro-dollar of rounding per turn)
    billing(script())
    synchronous = pipeline.run(aw.SupportWorkflow, input=SUPPORT, timeout=60)
    assert synchronous.status == "completed"
    assert synchronous.tokens == run.tokens
    assert abs(2 * run.cost_micros - synchronous.cost_micros) <= len(turns)
    assert run.cost_micros > 0


def test_an_expired_batch_request_is_submitted_again_and_then_completes(stack, billing):
    stand_in = billing(script())
    run = pipeline.enqueue(aw.BatchSupportWorkflow, input=SUPPORT)
    parked_on_batch(stack, run, 1)

    # When the batch expires, the next tick submits the turn again as a new request
    stand_in.expire_batches()
    collect(stack)
    parked_on_batch(stack, run, 2)
    first, second = (b.requests[0][0] for b in stand_in.batches.all())
    assert first != second
    for turn in (1, 2):
        stand_in.end_batches()
        collect(stack)
        if turn == 1:
            parked_on_batch(stack, run, 3)

    run = pipeline.wait(run, timeout=60)
    assert run.status == "completed", run.error
    assert [e.type for e in run.events if e.type.startswith("model.batch_")].count("model.batch_expired") == 1
    assert run.cost_micros == stand_in.billed_micros  # the expired request was not billed, nor recorded


def test_a_turn_that_keeps_expiring_fails_the_run_with_a_clear_reason(stack, billing):
    stand_in = billing(script())
    run = pipeline.enqueue(aw.BatchSupportWorkflow, input=SUPPORT)
    for attempt in range(1, stack.settings.batch_max_attempts + 1):
        parked_on_batch(stack, run, attempt)
        stand_in.expire_batches()
        collect(stack)

    run = pipeline.wait(run, timeout=60)
    assert run.status == "failed"
    assert run.error["reason"] == "batch_failed" and run.error["step"] == "desk"
    assert "expired in the Message Batches API 3 time(s)" in run.error["message"]
    assert len(stand_in.batches.all()) == 3 and stand_in.charges == [] and run.cost_micros == 0


def test_cancelling_a_run_that_waits_on_a_batch_cancels_the_batch(stack, billing):
    stand_in = billing(script())
    run = pipeline.enqueue(aw.BatchSupportWorkflow, input=SUPPORT)
    parked_on_batch(stack, run, 1)

    run.cancel(by="ops@example.com")
    collect(stack)

    [batch] = stand_in.batches.all()
    eventually(lambda: batch.cancel_initiated_at is not None, what="batch cancelled through the API")
    collect(stack)
    eventually(lambda: events(run, "model.batch_canceled"), what="request settled as canceled")
    run = run.refresh()
    assert run.status == "cancelled" and run.cost_micros == 0 and stand_in.charges == []


def test_two_collects_that_both_saw_a_request_waiting_record_its_turn_once(stack, billing):
    # Given a turn whose batch has ended, seen as waiting by two overlapping collects
    stand_in = billing(script())
    run = pipeline.enqueue(aw.BatchSupportWorkflow, input=SUPPORT)
    parked_on_batch(stack, run, 1)
    stand_in.end_batches()
    [batch] = stand_in.batches.all()
    results = {item.custom_id: item for item in stack.runtime.model.batch_results(batch.id)}

    # When both settle it
    first = batch_collect._settle(stack.runtime, run.id, "desk/turn-1/batch-1", results)
    second = batch_collect._settle(stack.runtime, run.id, "desk/turn-1/batch-1", results)

    # Then the turn is recorded and continued once: one turn event, one next submission
    assert (first, second) == ("succeeded", None)
    parked_on_batch(stack, run, 2)
    assert len(events(run, "model.turn")) == 1 and len(events(run, "model.batch_succeeded")) == 1
    assert len(stand_in.batches.all()) == 2 and run.refresh().cost_micros == stand_in.billed_micros
