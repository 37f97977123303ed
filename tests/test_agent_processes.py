"""Killing a real worker process in the middle of an agent loop (Redis + Postgres, the real SDK via the stand-in)."""

from __future__ import annotations

import pytest

import pipeline
from pipeline.testing import MessagesStandIn, reply
from tests import agent_workflows as aw
from tests.conftest import eventually, sink_lines


def test_killing_the_worker_after_a_recorded_turn_reruns_no_turn_and_no_side_effect(production, sink, tmp_path):
    from pipeline.engine import recovery

    # Given a worker whose model is the real SDK talking to the stand-in, and a refund tool that holds still
    # while it runs (its gate file never appears), with a short visibility timeout so Redis redelivers soon
    script = [
        reply(tool_uses=[("refund_order", {"order_id": 7, "amount_cents": 100})]),
        reply(
            tool_uses=[{"name": "final_answer", "input": {"resolution": "refund status unknown", "refunded_cents": 0}}]
        ),
    ]
    with MessagesStandIn(script) as stand_in:
        env = {
            "RUBOT_MODEL_PROVIDER": "anthropic",
            "ANTHROPIC_API_KEY": "test-key",
            "ANTHROPIC_BASE_URL": stand_in.url,
            "RUBOT_TEST_SINK": str(sink),
            "RUBOT_TEST_REFUND_GATE": str(tmp_path / "never"),
            "RUBOT_VISIBILITY_TIMEOUT": "3",
            "RUBOT_LEASE_SECONDS": "2",
        }
        production.env.update(env)
        worker = production.start_worker_process(concurrency=1)
        run = pipeline.enqueue(
            aw.SupportWorkflow,
            input={"order_id": 7, "message": "refund please"},
            context={"user": {"id": "u1", "roles": ["support"]}},
        )

        # When the worker is SIGKILLed while the refund (recorded turn 1's tool call) is in progress
        eventually(lambda: sink_lines(sink), what="refund started")
        worker.kill()
        assert len(stand_in.requests) == 1

        # Then a new worker (or the sweeper) finds the refund's lease expired: the refund may have happened, so
        # it is not run again and the run waits for a person; the model is not asked about turn 1 again.
        replacement = production.start_worker_process(concurrency=1)
        try:
            eventually(
                lambda: (
                    recovery.sweep(production.runtime) is not None
                    and pipeline.get_run(run.id).status == "needs_reconciliation"
                ),
                timeout=60,
                what="run set aside for reconciliation",
            )
        finally:
            replacement.stop()

    run = pipeline.get_run(run.id)
    assert run.error["op_key"].startswith("desk/turn-1/tool-")
    assert [line.split(" key=")[0] for line in sink_lines(sink)] == ["refund 7 100"]
    assert len(stand_in.requests) == 1  # turn 1 was never requested again
    assert [e.op_key for e in run.effects if e.kind == "model_turn"] == ["desk/turn-1"]


@pytest.mark.parametrize("taken_over_by", ["sweeper", "redelivery"])
def test_a_worker_killed_while_its_model_request_is_in_flight_never_leaves_the_cost_below_the_bill(
    production, sink, taken_over_by
):
    from pipeline.engine import recovery

    # Given a worker process on the real SDK, and a provider that bills the first request but holds its answer
    script = [
        reply(tool_uses=[("lookup_order", {"order_id": 7})]),  # billed, never delivered
        reply(tool_uses=[("lookup_order", {"order_id": 7})]),
        reply(tool_uses=[{"name": "final_answer", "input": {"resolution": "found it", "refunded_cents": 0}}]),
    ]
    with MessagesStandIn(
        script, prices=production.settings.prices, cache_minimums=production.settings.cache_minimums
    ) as stand_in:
        stand_in.hold(requests=1)
        production.env.update(
            {
                "RUBOT_MODEL_PROVIDER": "anthropic",
                "ANTHROPIC_API_KEY": "test-key",
                "ANTHROPIC_BASE_URL": stand_in.url,
                "RUBOT_TEST_SINK": str(sink),
                "RUBOT_VISIBILITY_TIMEOUT": "3",
                "RUBOT_LEASE_SECONDS": "2",
            }
        )
        worker = production.start_worker_process(concurrency=1)
        run = pipeline.enqueue(aw.SupportWorkflow, input={"order_id": 7, "message": "where is it?"})

        # When the worker is SIGKILLed while the provider is answering turn 1 (the request was billed)
        eventually(lambda: stand_in.held == 1, what="turn 1 in flight")
        worker.kill()
        stand_in.release()
        assert len(stand_in.charges) == 1

        # Then, once the turn is taken over — by the sweeper (which counts tokens locally, holding the run's lock)
        # or by the redelivered turn message (which asks the token-counting endpoint) — the run completes ...
        replacement = production.start_worker_process(concurrency=1)
        sweep = taken_over_by == "sweeper"
        try:
            eventually(
                lambda: (
                    (not sweep or recovery.sweep(production.runtime) is not None)
                    and pipeline.get_run(run.id).status in ("completed", "failed", "dead_letter")
                ),
                timeout=90,
                what="run finished",
            )
        finally:
            replacement.stop()

    run = pipeline.get_run(run.id)
    assert run.status == "completed", run.error
    # ... and its recorded cost is at least what the provider billed: the lost request is an estimated charge
    assert len(stand_in.charges) == 3
    assert run.cost_micros >= stand_in.billed_micros
    assert run.estimated_cost_micros > 0
    estimates = [e for e in run.events if e.type == "model.turn_estimated"]
    assert len(estimates) == 1 and estimates[0].data["estimated"] is True and estimates[0].step == "desk"
    assert estimates[0].data["counted_by"] == ("local_upper_bound" if sweep else "count_tokens")
    assert [e.op_key for e in run.effects if e.kind == "model_turn"] == ["desk/turn-1", "desk/turn-2"]
