"""What Flower shows is true: a real worker process sends task events (``-E``, as Flower needs) and the test
reads them the way Flower does, with a Celery event receiver on the same broker."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pipeline
from pipeline.client import launch
from pipeline.errors import RunNotFound
from tests import secret_workflows as sw
from tests import workflows
from tests.conftest import eventually


@contextmanager
def task_events(app) -> Iterator[list[dict]]:
    """Every task event the workers send while the block runs (what Flower's /tasks page is built from)."""
    seen: list[dict] = []
    ready = threading.Event()

    receivers: list = []

    def listen() -> None:
        with app.connection_for_read() as connection:
            receiver = app.events.Receiver(connection, handlers={"*": seen.append})
            receivers.append(receiver)
            # Ready once its queue is bound to the event exchange: an event sent before that is lost (fanout).
            receiver.on_consume_ready = lambda *args, **kwargs: ready.set()
            receiver.capture(limit=None, timeout=None, wakeup=False)  # until should_stop (checked every second)

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    assert ready.wait(30), "the event receiver never started consuming"
    try:
        yield seen
    finally:
        for receiver in receivers:
            receiver.should_stop = True
        thread.join(10)


def status(run_id: str) -> str | None:
    try:
        return pipeline.get_run(run_id).status
    except RunNotFound:  # the launch is not processed yet
        return None


def of_task(events: list[dict], name: str) -> dict[str, list[dict]]:
    """Events of the tasks named ``name``, by task id."""
    ids = {e["uuid"] for e in events if e.get("type") == "task-received" and e.get("name") == name}
    found: dict[str, list[dict]] = {task_id: [] for task_id in ids}
    for event in events:
        if event.get("uuid") in found:
            found[event["uuid"]].append(event)
    return found


def test_flower_sees_the_step_task_of_a_failed_run_fail_and_launches_carry_ids_only(production, sink):
    # Given a worker process that sends task events (rubot worker -E), watched as Flower watches it
    worker = production.start_worker_process(concurrency=1, args=("-E",))
    try:
        with task_events(production.app) as events:
            # When a host launches a run by name whose step fails (its input holds a canary), and another that
            # completes
            failing = launch(
                production.app,
                "ExplodingWorkflow",
                {"sink": str(sink), "secret": sw.CANARY_PIN},
                context={"user": {"id": "u-9"}},
                queue=production.settings.queue,
            )
            fine = workflows.LinearWorkflow.delay(sink=str(sink), n=2)
            assert fine.wait(timeout=60).status == "completed"
            eventually(lambda: status(failing) == "failed", timeout=60, what="the launched run to fail")

            def step_tasks_done() -> bool:
                done = [e for e in events if e.get("type") in ("task-failed", "task-succeeded")]
                return len(done) >= 5

            eventually(step_tasks_done, timeout=60, what="the task events")
    finally:
        worker.stop()

    # Then the step task that failed the run is FAILURE, and its exception names the run and the reason
    steps = of_task(events, "rubot.step")
    failed = [evs for evs in steps.values() if any(e["type"] == "task-failed" for e in evs)]
    assert len(failed) == 1, [[e["type"] for e in evs] for evs in steps.values()]
    (failure,) = [e for e in failed[0] if e["type"] == "task-failed"]
    assert failure["exception"].startswith("RunFailed(") and failing in failure["exception"]
    assert "step_failed" in failure["exception"] and "'explode'" in failure["exception"]
    # while the other step tasks succeeded
    assert all(any(e["type"] == "task-succeeded" for e in evs) for evs in steps.values() if evs not in failed)

    # And both launches show ids only: the workflow's name and the run id, no input, subject or context
    launches = of_task(events, "rubot.launch")
    assert len(launches) == 2
    for evs in launches.values():
        (received,) = [e for e in evs if e["type"] == "task-received"]
        shown = received["args"] + received["kwargs"]
        assert sw.CANARY_PIN not in shown and str(sink) not in shown and "u-9" not in shown, shown
        assert "run_id" in received["kwargs"]


def test_a_parallel_member_that_fails_its_run_reports_it_and_the_group_still_forgets_its_results(stack, sink):
    # Given a parallel group one of whose members fails / When it runs
    run = pipeline.run(sw.ParallelExplodingWorkflow, input={"sink": str(sink)}, timeout=60)

    # Then the run failed at that member, and no member's result key is left behind in the backend
    assert run.status == "failed" and run.error.get("step") == "refused", run.error
    assert eventually(lambda: stack.result_keys() == [], what="chord member results forgotten")


def test_the_model_turn_task_that_fails_its_run_is_a_failure_in_flower(production, sink):
    from pipeline.testing import MessagesStandIn, reply
    from tests import agent_workflows as aw

    # Given a worker process sending task events, on the real SDK against the stand-in, and an agent with a
    # three-turn budget whose model keeps calling tools
    script = [reply(tool_uses=[("lookup_order", {"order_id": k})]) for k in (1, 3, 5)]
    with MessagesStandIn(script) as stand_in:
        production.env.update(
            {
                "RUBOT_MODEL_PROVIDER": "anthropic",
                "ANTHROPIC_API_KEY": "test-key",
                "ANTHROPIC_BASE_URL": stand_in.url,
                "RUBOT_TEST_SINK": str(sink),
            }
        )
        worker = production.start_worker_process(concurrency=1, args=("-E",))
        try:
            with task_events(production.app) as events:
                # When the fourth turn finds the budget spent
                run = aw.TightWorkflow.delay(order_id=1, message="where is it?")
                final = run.wait(timeout=60)
                assert final.status == "failed" and final.error["reason"] == "budget_exceeded", final.error

                def turn_failed() -> list[dict]:
                    return [e for e in events if e.get("type") == "task-failed"]

                eventually(turn_failed, timeout=60, what="the failed task event")
        finally:
            worker.stop()

    # Then exactly that turn's task is FAILURE, naming the run and the reason; the earlier turns succeeded
    turns = of_task(events, "rubot.agent_turn")
    assert len(turns) == 4
    failed = [e for evs in turns.values() for e in evs if e["type"] == "task-failed"]
    assert len(failed) == 1 and failed[0]["exception"].startswith("RunFailed(")
    assert run.id in failed[0]["exception"] and "budget_exceeded" in failed[0]["exception"]
    assert "turn 4" in failed[0]["exception"]
