"""The engine under redelivery and misuse: a held chord member never lets its group join early, a recorded model
turn sent again costs no model call, interrupted or timed-out side effects go to a person, caps only tighten and
a run id names one run of one workflow."""

from __future__ import annotations

import threading
import uuid
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta

import pytest

import pipeline
from pipeline.engine import leases, recovery
from pipeline.errors import RunIdInUse
from pipeline.store import queries
from pipeline.store.tables import DONE, utcnow
from pipeline.testing import reply
from tests import engine_workflows as ew
from tests import workflows
from tests.conftest import eventually, sink_lines


@contextmanager
def settings(stack, **changes):
    """Tune the stack's settings for one test (the in-process worker shares the runtime)."""
    previous = stack.runtime.settings
    stack.runtime.settings = replace(previous, **changes)
    try:
        yield
    finally:
        stack.runtime.settings = previous


@contextmanager
def gate():
    name = uuid.uuid4().hex
    workflows.GATES[name] = threading.Event()
    try:
        yield name, workflows.GATES[name]
    finally:
        workflows.GATES.pop(name).set()


def event_types(run) -> list[str]:
    return [e.type for e in pipeline.get_run(run.id).events]


def test_a_chord_member_whose_step_another_delivery_holds_never_lets_the_group_join_without_it(stack, sink):
    # Given a parallel group whose member "left" is claimed by another delivery (a worker that just died holding
    # a live lease, like a redelivered message meeting its own earlier delivery)
    with settings(stack, lease_seconds=1.5), gate() as (name, opened):
        run = pipeline.enqueue(ew.GatedParallelWorkflow, input={"sink": str(sink), "gate": name})
        with stack.runtime.db.transaction() as s:
            queries.lock_run(s, run.id)
            leases.claim(s, run.id, "left", "tool", task_id="ghost", lease_seconds=1.5)

        # When the group is dispatched
        opened.set()
        run = pipeline.wait(run, timeout=60)

    # Then the member that found the claim held waited (it did not report success), took the step over when the
    # lease ran out, and the group joined only with both results
    assert run.status == "completed", run.error
    assert run.output == {"both": ["left", "right"]}
    trail = [(e.type, e.step) for e in run.events]
    assert ("step.held_elsewhere", "left") in trail
    assert trail.index(("step.completed", "left")) < trail.index(("parallel.joined", "checks"))
    assert sorted(line.split()[1] for line in sink_lines(sink)) == ["left", "right"]  # each ran once
    assert run.recoveries == 1  # the take-over of the dead holder's claim counts


def test_a_run_ending_in_a_parallel_group_completes_when_its_last_member_does(stack, sink):
    # Given a workflow whose last unit is a parallel group, one member recorded while the other still runs
    with gate() as (name, opened):
        run = pipeline.enqueue(ew.EndsInSlowParallelWorkflow, input={"sink": str(sink), "gate": name})
        eventually(
            lambda: ("step.completed", "quick") in {(e.type, e.step) for e in pipeline.get_run(run.id).events},
            what="the quick member to be recorded",
        )

        # Then the run is still running: the first member to finish does not judge the run incomplete
        assert pipeline.get_run(run.id).status == "running"

        # When the slow member finishes
        opened.set()
        run = pipeline.wait(run, timeout=60)

    # Then the run completes with both results
    assert run.status == "completed", run.error
    assert {"quick", "slow"} <= set(run.state)
    assert event_types(run).count("run.completed") == 1


def test_a_recorded_model_turn_sent_again_calls_no_model(stack, model):
    # Given an agent whose turn 1 is recorded and whose tool call is still running
    name = uuid.uuid4().hex
    ew.LATCHES[name] = threading.Event()
    model.add(reply(tool_uses=[("latch", {"name": name})]), reply(tool_uses=[("final_answer", {"done": True})]))
    run = pipeline.enqueue(ew.LatchWorkflow, input={"name": name})
    eventually(lambda: _done(stack, run.id, "ask/turn-1"), what="turn 1 recorded")

    # When the message of turn 1 is delivered again (a redelivery, or someone re-sent it)
    stack.app.send_task("rubot.agent_turn", args=[run.id, "ask", 1], queue=stack.settings.queue)
    eventually(lambda: "agent.turn_reused" in event_types(run), what="the re-sent turn handled")
    ew.LATCHES.pop(name).set()
    run = pipeline.wait(run, timeout=60)

    # Then the recorded response was used: the model was asked for turn 1 once and for turn 2 once
    assert run.status == "completed", run.error
    assert len(model.requests) == 2
    assert [e.data["turn"] for e in run.events if e.type == "model.turn"] == [1, 2]


def _done(stack, run_id: str, op_key: str) -> bool:
    with stack.runtime.db.transaction() as s:
        row = queries.get_effect(s, run_id, op_key)
        return row is not None and row.status == DONE


def test_a_tool_step_past_its_timeout_fails_the_run_clearly(stack, sink):
    run = pipeline.run(ew.DawdleWorkflow, input={"sink": str(sink), "seconds": 5}, timeout=60)

    assert run.status == "failed"
    assert run.error["reason"] == "tool_timeout"
    assert run.error["step"] == "wait"
    assert "within its timeout of 1s" in run.error["message"]


def test_a_side_effecting_tool_step_past_its_timeout_goes_to_a_person_who_settles_it(stack, sink):
    run = pipeline.run(ew.SlowTransferWorkflow, input={"sink": str(sink), "seconds": 5}, timeout=60)

    # The transfer may still happen in the background: the run is not failed, it waits for a person
    assert run.status == "needs_reconciliation"
    assert run.error["op_key"] == "transfer"
    assert "timed out after 1s" in run.error["message"]

    # Who checks the bank and records what happened; the run goes on from there
    run.reconcile(by="ops@example.com", happened=True, result={"waited": 5.0})
    run = pipeline.wait(run, timeout=60)
    assert run.status == "completed", run.error
    assert run.output == {"waited": 5.0}


def test_a_workflows_own_caps_only_tighten_the_deployments(stack, sink):
    # Given a deployment allowing one running run per user and a workflow asking for a hundred
    with settings(stack, max_running_per_user=1), gate() as (name, opened):
        context = {"user": {"id": f"u-{uuid.uuid4().hex[:6]}"}}
        first = pipeline.enqueue(ew.GenerousCaps, input={"sink": str(sink), "gate": name}, context=context)
        eventually(lambda: any(line.startswith(first.id) for line in sink_lines(sink)), what="first run holding")

        # When the same user starts a second run
        second = pipeline.enqueue(ew.GenerousCaps, input={"sink": str(sink), "gate": name}, context=context)

        # Then it waits for the deployment's slot, not the workflow's looser one
        eventually(lambda: "run.waiting_for_slot" in event_types(second), what="second run held back")
        assert pipeline.get_run(second.id).status == "queued"
        opened.set()
        assert pipeline.wait(first, timeout=60).status == "completed"
        assert pipeline.wait(second, timeout=60).status == "completed"


def test_a_run_id_names_one_run_of_one_workflow(stack, sink):
    run_id = f"run_{uuid.uuid4().hex}"
    first = pipeline.enqueue(workflows.LinearWorkflow, input={"sink": str(sink), "n": 1}, run_id=run_id)

    # The same launch again is the same run
    assert pipeline.enqueue(workflows.LinearWorkflow, input={"sink": str(sink), "n": 1}, run_id=run_id).id == first.id

    # Another workflow under that id is refused, and nothing changes
    with pytest.raises(RunIdInUse, match="belongs to a LinearWorkflow run"):
        pipeline.enqueue(workflows.ApprovalWorkflow, input={"sink": str(sink)}, run_id=run_id)
    assert pipeline.wait(first, timeout=60).workflow == "LinearWorkflow"


def test_an_interrupted_side_effecting_tool_step_is_never_run_again_and_a_person_settles_it(
    production, sink, tmp_path, monkeypatch
):
    # Given a worker process holding a reservation (a side effect without idempotency keys) when it is killed
    release = tmp_path / "release"
    production.env["RUBOT_TEST_RESERVE_GATE"] = str(release)
    worker = production.start_worker_process(concurrency=1)
    try:
        run = pipeline.enqueue(ew.ReserveWorkflow, input={"sink": str(sink), "sku": "A-1"})
        eventually(lambda: sink_lines(sink), what="the reservation under way")
        worker.kill()

        # When the sweeper finds its lease run out
        later = utcnow() + timedelta(seconds=3 * production.settings.lease_seconds)
        assert run.id in recovery.sweep(production.runtime, now=later)

        # Then the step is not run again: the run waits for a person, with the operation named
        run = pipeline.wait(run, timeout=30)
        assert run.status == "needs_reconciliation"
        assert run.error["op_key"] == "reserve"

        # And the person's answer settles it; the run goes on
        worker = production.start_worker_process(concurrency=1)
        run.reconcile(by="ops@example.com", happened=True, result={"reservation": "res-A-1"}, comment="in the WMS")
        run = pipeline.wait(run, timeout=60)
    finally:
        release.touch()
        worker.stop()

    assert run.status == "completed", run.error
    assert run.output == {"reservation": "res-A-1"}
    assert [line.split()[1:] for line in sink_lines(sink)] == [["reserve", "A-1"]]  # exactly one reservation
