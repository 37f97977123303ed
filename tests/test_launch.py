"""Celery-style launches (``Workflow.delay`` / ``apply_async``), launches a host gets wrong, and
``pipeline.install`` on an app of the host's own — on a real worker, on both stacks."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from celery import Celery

import pipeline
from pipeline import runtime as rubot_runtime
from pipeline.api import create
from pipeline.client import launch
from pipeline.errors import ConfigurationError, DefinitionError, RunFailed
from pipeline.store.tables import RunRow
from tests import workflows
from tests.conftest import eventually, sink_lines


def test_delay_returns_a_handle_at_once_and_the_run_reads_back(stack, sink):
    # When a workflow is launched like a Celery task
    handle = workflows.LinearWorkflow.delay(sink=str(sink), n=3)

    # Then the handle has the run id at once, and the run is read back through SQL in this process
    assert handle.id.startswith("run_") and handle.workflow == "LinearWorkflow"
    assert handle.get(timeout=60) == {"n": 6, "seen": ["first", "second"]}
    run = pipeline.get_run(handle.id)
    assert run.completed and handle.status == "completed"
    assert handle.id in [r.id for r in pipeline.list_runs(workflow="LinearWorkflow", limit=500)]
    assert sink_lines(sink) == [f"{handle.id} first", f"{handle.id} second"]


def test_apply_async_takes_a_run_id_subject_context_and_a_countdown(stack, sink):
    # Given a run id chosen by the caller and a start one second from now
    run_id = f"run_{uuid.uuid4().hex}"
    sent = datetime.now(UTC)
    handle = workflows.LinearWorkflow.apply_async(
        kwargs={"sink": str(sink), "n": 1},
        subject={"type": "ticket", "id": 7},
        context={"user": {"id": "u1"}},
        run_id=run_id,
        countdown=1,
    )

    # Then the run exists under that id with its subject and context, and it was not created before the countdown
    run = handle.wait(timeout=60)
    assert (run.id, run.status, run.subject, run.context) == (
        run_id,
        "completed",
        {"type": "ticket", "id": 7},
        {"user": {"id": "u1"}},
    )
    created = run.created_at if run.created_at.tzinfo else run.created_at.replace(tzinfo=UTC)
    assert created >= sent + timedelta(seconds=1)


def test_the_same_run_id_launched_twice_is_one_run(stack, sink):
    run_id = f"run_{uuid.uuid4().hex}"
    first = workflows.LinearWorkflow.apply_async(kwargs={"sink": str(sink), "n": 1}, run_id=run_id)
    second = workflows.LinearWorkflow.apply_async(kwargs={"sink": str(sink), "n": 1}, run_id=run_id)
    assert first.wait(timeout=60).completed and second.wait(timeout=60).completed
    assert sink_lines(sink) == [f"{run_id} first", f"{run_id} second"]  # every step once


def test_concurrent_inserts_of_one_run_id_make_one_run_and_no_error(stack, sink):
    # Given eight launches of the same run id racing each other in this process (as duplicated beats would)
    run_id = f"run_{uuid.uuid4().hex}"
    barrier = threading.Barrier(8)
    results, errors = [], []

    def go() -> None:
        barrier.wait()
        try:
            results.append(
                create(stack.runtime, workflows.LinearWorkflow, input={"sink": str(sink), "n": 2}, run_id=run_id)
            )
        except Exception as exc:  # the assertion below shows it
            errors.append(exc)

    threads = [threading.Thread(target=go) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    # Then every launch returned the id, none failed, and the run ran once
    assert errors == [] and results == [run_id] * 8
    assert pipeline.wait(run_id, timeout=60).completed
    with stack.runtime.db.transaction() as s:
        assert s.query(RunRow).filter(RunRow.id == run_id).count() == 1
    assert sink_lines(sink) == [f"{run_id} first", f"{run_id} second"]


def test_get_waits_past_an_approval_and_raises_when_the_run_fails(stack, sink):
    # Given a launched run that parks for approval (get() keeps waiting there, like Celery's get)
    handle = workflows.ApprovalWorkflow.delay(sink=str(sink))
    assert handle.wait(timeout=60).waiting_for_approval
    with pytest.raises(pipeline.errors.WaitTimeout):
        handle.get(timeout=0.5)
    # When it is rejected, get() raises with the run's error
    pipeline.get_run(handle.id).reject("lead@example.com")
    with pytest.raises(RunFailed) as caught:
        handle.get(timeout=60)
    assert caught.value.details["reason"] == "rejected"


def test_bad_input_through_delay_is_a_failed_run_under_the_handles_id(stack):
    # When a host sends input the workflow's schema refuses
    handle = workflows.LinearWorkflow.delay(sink=123)
    # Then the worker records a failed run under the id the host holds, with the field errors, and no step ran
    run = handle.wait(timeout=60)
    assert run.status == "failed" and run.error["reason"] == "invalid_input"
    assert "sink" in run.error["details"] and "n" in run.error["details"]
    assert run.effects == []


def test_an_unknown_workflow_sent_by_name_is_a_failed_run_under_the_given_id(stack):
    # When a host launches a workflow name no worker knows
    run_id = launch(stack.app, "NoSuchWorkflow", {"x": 1}, queue=stack.settings.queue)
    # Then the run exists, failed, with a reason naming the problem (before: nothing was recorded at all)
    run = pipeline.wait(eventually(lambda: _exists(run_id) and run_id, what="the rejected run"), timeout=60)
    assert (run.workflow, run.status, run.error["reason"]) == ("NoSuchWorkflow", "failed", "unknown_workflow")
    assert "NoSuchWorkflow" in run.error["message"]
    assert [e.type for e in run.events] == ["run.rejected"]


def test_a_malformed_run_id_is_refused_before_anything_is_sent(stack):
    with pytest.raises(DefinitionError, match="run_id"):
        workflows.LinearWorkflow.apply_async(kwargs={}, run_id="x" * 41)


def test_install_registers_rubot_on_a_host_app_with_settings_from_its_config(stack, tmp_path):
    # Given a host's own Celery app and a Flask-style config mapping naming Rubot's settings
    host = Celery("host", broker="redis://127.0.0.1:6379/15", set_as_current=False)
    config = {"RUBOT_DATABASE_URL": f"sqlite:///{tmp_path}/host.sqlite3", "RUBOT_QUEUE": "host-rubot", "OTHER": 1}
    previous = rubot_runtime.current()
    try:
        # When Rubot is installed on it
        rt = pipeline.install(host, config=config)
        # Then the rubot.* tasks are on the host's app with Rubot's delivery options, its settings come from the
        # config (and the broker from the host's app), it is the current runtime, and a second install is a no-op
        assert {"rubot.launch", "rubot.step", "rubot.resume", "rubot.scheduled", "rubot.recover"} <= set(host.tasks)
        assert host.tasks["rubot.step"].acks_late and host.tasks["rubot.step"].serializer == "json"
        assert rt.settings.queue == "host-rubot" and rt.settings.database_url.endswith("host.sqlite3")
        assert rt.settings.broker_url == "redis://127.0.0.1:6379/15"
        assert rubot_runtime.current() is rt and rubot_runtime.of_app(host) is rt
        assert pipeline.install(host) is rt
    finally:
        rubot_runtime.install(previous)


def test_a_process_with_no_runtime_gets_a_clear_error():
    previous = rubot_runtime.install(None)
    try:
        with pytest.raises(ConfigurationError, match=r"pipeline.install\(celery_app\)"):
            pipeline.get_run("run_x")
    finally:
        rubot_runtime.install(previous)


def _exists(run_id: str) -> bool:
    from pipeline.errors import RunNotFound

    try:
        pipeline.get_run(run_id)
    except RunNotFound:
        return False
    return True
