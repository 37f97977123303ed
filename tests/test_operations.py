"""Durable Operations: the routing runs in a worker as a parent run that launches and awaits its children.

In-process workers on both stacks for routing itself; ``celery worker`` subprocesses on Redis + Postgres for the
crashes: a caller SIGKILLed right after ``enqueue`` and a worker SIGKILLed between the two legs.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

import pipeline
from pipeline import Operation
from pipeline.definitions import registry
from pipeline.errors import DefinitionError, UnknownOperationError
from pipeline.handles import RunHandle, send_launch
from pipeline.web import create_app
from rubot_app.agents.conference_travel import ConferenceTravelApprovalOperation
from rubot_app.scripts import cli
from tests import operation_workflows as ow
from tests import webkit
from tests.conftest import eventually, sink_lines
from tests.stacks import ROOT
from tests.test_faults import sweep_until
from tests.webkit import proxy_authenticator


def test_malformed_operations_fail_at_class_creation_with_a_clear_message():
    with pytest.raises(DefinitionError, match="must define launch"):

        class NoRouting(Operation):
            pass

    with pytest.raises(DefinitionError, match="launch must be a @classmethod"):

        class PlainMethod(Operation):
            def launch(self, input):
                return None

    with pytest.raises(DefinitionError, match="entry_points must be a tuple of names"):

        class OneString(Operation):
            entry_points = "just-a-string"

            @classmethod
            def launch(cls, input, subject=None, context=None):
                return None


def test_an_operation_is_a_workflow_of_one_routing_step_registered_under_its_name():
    assert registry.workflow("ReviewThenAct") is ow.ReviewThenAct.workflow
    assert [s.name for s in ow.ReviewThenAct.workflow.steps()] == ["route"]
    assert registry.operations.get("tests.review-then-act") is ow.ReviewThenAct


def _legs(sink, kind: str) -> list[str]:
    return [line for line in sink_lines(sink) if line.startswith(f"{kind} ")]


def test_a_failed_review_is_routed_to_the_failure_branch_not_a_type_error(stack, sink):
    # Given a review leg that fails
    # When the operation is launched (waiting, as pipeline.run does)
    run = ow.ReviewThenAct.launch(input={"sink": str(sink), "fail": True}, timeout=60)

    # Then the routing took its failure branch: the remedy leg ran and is what launch returns
    assert run.workflow == "RemedyLeg", run.error
    assert run.status == "completed", run.error
    assert run.output == {"remedied": "step_failed"}
    parent = pipeline.get_run(run.parent_run_id)
    assert parent.workflow == "ReviewThenAct"
    assert parent.status == "completed", parent.error
    assert [(c.workflow, c.status) for c in parent.children] == [("ReviewLeg", "failed"), ("RemedyLeg", "completed")]
    assert all(c.parent_run_id == parent.id for c in parent.children)
    assert len(_legs(sink, "review")) == 1 and len(_legs(sink, "remedy")) == 1 and _legs(sink, "act") == []


def test_the_reference_operation_returns_a_failed_review_instead_of_raising(stack):
    # Given an employee with no travel policy: the review's first tool fails
    travel = {
        "employee_id": "emp_unknown",
        "conference_name": "Rails World",
        "conference_url": "https://rubyonrails.org/world",
        "estimated_cost_cents": 132_500,
    }

    # When the operation is launched, Then the failed review is what it returns (no TypeError anywhere)
    run = ConferenceTravelApprovalOperation.launch(input=travel, timeout=60)
    assert (run.workflow, run.status) == ("ConferenceTravelReviewWorkflow", "failed")
    assert "No travel policy found" in run.error["message"]
    parent = pipeline.get_run(run.parent_run_id)
    assert parent.status == "completed" and [c.id for c in parent.children] == [run.id]


def test_enqueue_returns_the_parked_parent_at_once_and_both_legs_run_in_the_worker(stack, sink):
    # When the operation is enqueued
    parent = ow.ReviewThenAct.enqueue({"sink": str(sink)})

    # Then the caller gets the operation's run at once; the worker runs both legs and completes it
    assert parent.workflow == "ReviewThenAct" and parent.parent_run_id is None
    parent = pipeline.wait(parent, timeout=60)
    assert parent.status == "completed", parent.error
    act = parent.children[-1]
    assert parent.output == {"run_id": act.id, "workflow": "ActLeg", "status": "completed"}
    assert [c.workflow for c in parent.children] == ["ReviewLeg", "ActLeg"]
    events = [e.type for e in parent.events]
    assert events.count("operation.child_launched") == 2
    # (whether the parent parked for the review depends on who was quicker; the park has its own test below)
    assert len(_legs(sink, "review")) == 1 and len(_legs(sink, "act")) == 1


def test_the_parent_parks_while_its_child_runs_and_a_cancelled_parent_launches_nothing_more(stack, sink, tmp_path):
    # Given an operation whose first child stays running
    hold = tmp_path / "hold"
    hold.touch()
    parent = ow.WaitsForHeld.enqueue({"sink": str(sink), "hold": str(hold)})
    eventually(lambda: Path(f"{hold}.reached").exists(), timeout=60, what="the child to start")

    # Then the operation's run parks, waiting for that child (holding nothing but rows)
    eventually(lambda: pipeline.get_run(parent.id).status == "waiting_for_child", timeout=60, what="the park")
    parent = pipeline.get_run(parent.id)
    (child,) = parent.children
    parked = [e for e in parent.events if e.type == "run.waiting_for_child"]
    assert parked[-1].data["child_run_id"] == child.id and parked[-1].step == "route"

    # When the parent is cancelled and the child then completes
    parent.cancel(by="ops@example.com", reason="not needed")
    hold.unlink()
    assert pipeline.wait(child, timeout=60).status == "completed"

    # Then the cancelled parent stays cancelled and launches no second leg
    parent = pipeline.get_run(parent.id)
    assert parent.status == "cancelled" and [c.id for c in parent.children] == [child.id]
    assert _legs(sink, "held") == [f"held {child.id}"] and _legs(sink, "act") == []


def test_routing_that_returns_a_value_completes_the_operation_run_with_it(stack, sink):
    run = ow.ReturnsValue.launch({"sink": str(sink)}, timeout=60)
    assert run.workflow == "ReturnsValue"
    assert run.status == "completed", run.error
    assert run.output == {"review_status": "completed", "children": 1}


def test_trigger_starts_an_operation_by_an_entry_point(stack, sink):
    parent = pipeline.trigger("review_then_act", {"sink": str(sink)})
    assert parent.workflow == "ReviewThenAct"
    assert pipeline.wait(parent, timeout=60).status == "completed"


def test_a_host_launches_an_operation_by_name_through_rubot_launch(stack, sink):
    # A host process sends rubot.launch with the operation's name, as for a workflow: the operation's run starts
    run_id = send_launch(stack.app, "ReviewThenAct", {"sink": str(sink)}, queue=stack.settings.queue)
    parent = RunHandle(run_id, "ReviewThenAct").wait(timeout=60)
    assert parent.status == "completed", parent.error
    assert [c.workflow for c in parent.children] == ["ReviewLeg", "ActLeg"]


def test_an_unknown_operation_name_is_a_clear_error(stack):
    with pytest.raises(UnknownOperationError, match="no operation named 'nope'.*review_then_act"):
        pipeline.trigger("nope", {})
    result = CliRunner().invoke(cli.main, ["launch-operation", "nope"])
    assert result.exit_code == 2 and "no operation named 'nope'" in result.stderr and "Traceback" not in result.output


def test_launch_operation_and_show_link_parent_and_children_in_the_cli_and_the_console(stack, sink):
    # When the operation is launched from the command line by an entry point, waiting
    result = CliRunner().invoke(
        cli.main, ["launch-operation", "tests.review-then-act", "--input", json.dumps({"sink": str(sink)}), "--wait"]
    )
    assert result.exit_code == 0, result.output
    parent_id = result.stdout.split()[1]
    parent = pipeline.get_run(parent_id)
    review, act = parent.children
    assert f"it returned {act.id} (ActLeg), completed." in result.stdout

    # Then `rubot show` lists the children of the operation's run and names the parent of a child
    shown = CliRunner().invoke(cli.main, ["show", parent_id]).stdout
    children = shown.split("children:")[1].split("ledger:")[0]
    assert re.search(rf"{review.id}\s+ReviewLeg\s+completed", children), children
    assert re.search(rf"{act.id}\s+ActLeg\s+completed", children), children
    assert re.search(rf"^parent\s+{parent_id}$", CliRunner().invoke(cli.main, ["show", act.id]).stdout, re.M)

    # And the console links both ways
    client = create_app(stack.runtime, secret_key=webkit.SECRET_KEY, authenticator=proxy_authenticator()).test_client()
    page = client.get(f"/runs/{parent_id}").get_data(as_text=True)
    assert f'href="/runs/{review.id}"' in page and f'href="/runs/{act.id}"' in page
    assert f'href="/runs/{parent_id}"' in client.get(f"/runs/{act.id}").get_data(as_text=True)


# --- crashes, on Redis + Postgres with real ``celery worker`` processes -----------------------------------------

CALLER = """
import os, signal, sys
import rubot_app.tasks.app  # builds this deployment's Celery app from RUBOT_* and installs its runtime
from tests import operation_workflows as ow
from tests import webkit

run = ow.ReviewThenAct.enqueue({"sink": sys.argv[1]})
print(run.id, flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # the caller dies the moment enqueue has returned
"""


def test_a_caller_sigkilled_right_after_enqueue_still_gets_both_legs_run(production, sink):
    worker = production.start_worker_process()
    try:
        # Given a caller process that enqueues the operation and is SIGKILLed right after enqueue returns
        caller = subprocess.run(
            [sys.executable, "-c", CALLER, str(sink)],
            cwd=ROOT,
            env=production.subprocess_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert caller.returncode == -signal.SIGKILL, caller.stderr[-3000:]
        parent_id = caller.stdout.split()[0]

        # Then the worker runs both legs to completion without it
        parent = pipeline.wait(parent_id, timeout=60)
    finally:
        worker.stop()
    assert parent.status == "completed", parent.error
    assert [(c.workflow, c.status) for c in parent.children] == [("ReviewLeg", "completed"), ("ActLeg", "completed")]
    assert parent.output["workflow"] == "ActLeg"
    assert len(_legs(sink, "review")) == 1 and len(_legs(sink, "act")) == 1


@pytest.fixture
def faulty(production, sink):
    """Short leases and visibility timeout, for the worker processes and for the sweeper this test runs."""
    production.env.update({"RUBOT_LEASE_SECONDS": "2", "RUBOT_VISIBILITY_TIMEOUT": "4"})
    production.runtime.settings = replace(production.runtime.settings, lease_seconds=2.0)
    return production


@pytest.mark.parametrize("where", ["before_second", "after_second_launched"])
def test_killing_the_worker_between_legs_yields_exactly_one_second_leg(faulty, sink, tmp_path, where):
    pause = tmp_path / "pause"
    pause.touch()
    worker = faulty.start_worker_process(concurrency=2)
    try:
        # Given an operation whose review leg completed and whose routing is paused between the legs
        parent = ow.ReviewThenAct.enqueue({"sink": str(sink), "pause": str(pause), "pause_at": where})
        eventually(lambda: Path(f"{pause}.reached").exists(), timeout=60, what="the routing to reach the pause")

        # When the worker is SIGKILLed there and another one starts (beat's sweeper doing its rounds)
        worker.kill()
        pause.unlink()
        worker = faulty.start_worker_process(concurrency=2)
        parent = sweep_until(faulty, lambda: _rested(parent.id), timeout=90, what="the operation to complete")
    finally:
        worker.stop()

    # Then the operation completed with exactly one second-leg child, whose step ran for that child only
    assert parent.status == "completed", parent.error
    children = parent.children
    assert [c.workflow for c in children] == ["ReviewLeg", "ActLeg"]
    act = children[1]
    assert act.status == "completed" and parent.output["run_id"] == act.id
    assert {line.split()[1] for line in _legs(sink, "act")} == {act.id}
    assert len(_legs(sink, "review")) == 1
    assert sorted(e.op_key for e in parent.effects if e.kind == "child_run") == ["route/child-1", "route/child-2"]


def _rested(run_id: str):
    run = pipeline.get_run(run_id)
    return run if run.status in ("completed", "failed", "cancelled") else None
