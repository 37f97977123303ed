"""The core behaviours, on a real worker over the embedded default and over Redis + Postgres."""

from __future__ import annotations

import uuid

import pytest
from celery.worker import state as worker_state

import pipeline
from pipeline.errors import ApprovalAlreadyDecided, InvalidRunInput, InvalidRunState, NoPendingApproval
from pipeline.store import queries
from pipeline.store.tables import RunRow
from rubot_app.agents.conference_travel import (
    ConferenceTravelApprovalOperation,
    ConferenceTravelManualApprovalWorkflow,
    ConferenceTravelReviewWorkflow,
)
from tests import workflows
from tests.conftest import eventually, sink_lines

RAILS_WORLD = {
    "employee_id": "emp_42",
    "conference_name": "Rails World",
    "conference_url": "https://rubyonrails.org/world",
    "estimated_cost_cents": 132_500,
}


def event_types(run: pipeline.Run) -> list[str]:
    return [e.type for e in run.refresh().events]


def test_reference_review_completes_the_auto_approved_path(stack):
    # Given the §3 input for an engineer whose policy covers Rails World
    # When the review workflow runs
    run = pipeline.run(ConferenceTravelReviewWorkflow, input=RAILS_WORLD, timeout=60)

    # Then it completes and recommends auto-approval, with every step recorded once in the ledger
    assert run.status == "completed", run.error
    assert run.output["auto_approvable"] is True
    assert run.output["within_budget"] is True
    assert run.state["conference_site"]["page_title"]
    assert run.state["conference_review"]["content_matches_policy"] is True
    assert [e.op_key for e in run.effects] == [
        "policy",
        "conference_site",
        "conference_review/input",
        "conference_review/turn-1",
        "conference_review",
        "finalize",
    ]
    turn = next(e for e in run.events if e.type == "model.turn")
    assert turn.data["provider"] == "offline"


def test_operation_takes_the_manual_path_parks_and_completes_on_approve(stack):
    # Given an employee whose budget is below the estimate
    over_budget = {**RAILS_WORLD, "employee_id": "emp_7"}

    # When the operation launches, the review says "not auto-approvable" and the manual workflow parks
    run = ConferenceTravelApprovalOperation.launch(input=over_budget)
    assert run.workflow == "ConferenceTravelManualApprovalWorkflow"
    assert run.waiting_for_approval
    approval = run.pending_approval
    assert (approval.role, approval.reason) == ("engineering_manager", "Conference travel requires human approval.")
    # ... and nothing waits with it: no message in the queue, no task in a worker, no result key
    assert stack.queue_length() == 0
    assert eventually(lambda: not worker_state.active_requests, what="worker idle")
    assert stack.result_keys() == []

    # Then approving resumes the run from SQL and it completes with the decision in its output
    run.approve(approved_by="manager@example.com", payload={"note": "go"})
    run = pipeline.wait(run, timeout=60)
    assert run.status == "completed", run.error
    assert run.output["auto_approvable"] is False
    assert run.output["within_budget"] is False
    assert run.output["approval"] == {"note": "go"}
    assert run.approvals[-1].decided_by == "manager@example.com"


def test_linear_steps_run_in_order_and_each_body_runs_once(stack, sink):
    run = pipeline.run(workflows.LinearWorkflow, input={"sink": str(sink), "n": 21}, timeout=60)

    assert run.status == "completed"
    assert run.output == {"n": 42, "seen": ["first", "second"]}
    assert sink_lines(sink) == [f"{run.id} first", f"{run.id} second"]
    steps = [(e.type, e.step) for e in run.events if e.type.startswith("step.")]
    assert steps == [
        ("step.started", "first"),
        ("step.completed", "first"),
        ("step.started", "second"),
        ("step.completed", "second"),
        ("step.started", "total"),
        ("step.completed", "total"),
    ]


def test_parallel_group_runs_as_a_chord_with_members_running_at_the_same_time(stack, sink):
    # The members wait for each other at a barrier: run one after the other, they would time out and fail.
    workflows.BARRIER.reset()
    run = pipeline.run(workflows.ParallelWorkflow, input={"sink": str(sink)}, timeout=60)

    assert run.status == "completed", run.error
    assert sorted(run.output) == ["left", "right"]
    assert "parallel.joined" in [e.type for e in run.events]
    # The join forgot the members' result keys.
    assert eventually(lambda: stack.result_keys() == [], what="chord member results forgotten")


def test_reject_fails_the_run_with_reason_rejected(stack, sink):
    run = pipeline.run(workflows.ApprovalWorkflow, input={"sink": str(sink)}, timeout=60)
    assert run.waiting_for_approval

    run.reject(rejected_by="director@example.com", comment="not this year")

    assert run.status == "failed"
    assert run.error["reason"] == "rejected"
    assert run.error["comment"] == "not this year"
    assert sink_lines(sink) == [f"{run.id} prepare"]  # the step after the approval never ran


def test_request_changes_fails_with_its_own_reason_and_the_decision_is_recorded_once(stack, sink):
    run = pipeline.run(workflows.ApprovalWorkflow, input={"sink": str(sink)}, timeout=60)

    run.request_changes(requested_by="lead@example.com", comment="cheaper hotel please")

    assert run.status == "failed"
    assert run.error["reason"] == "changes_requested"
    assert run.approvals[-1].status == "changes_requested"
    with pytest.raises(ApprovalAlreadyDecided, match="already changes_requested by lead@example.com"):
        run.approve(approved_by="someone@example.com")
    assert event_types(run).count("approval.changes_requested") == 1


def test_a_workflow_may_continue_after_a_rejection(stack, sink):
    run = pipeline.run(workflows.ContinueOnRejectWorkflow, input={"sink": str(sink)}, timeout=60)
    run.reject(rejected_by="cfo@example.com")

    run = pipeline.wait(run, timeout=60)

    assert run.status == "completed"
    assert run.output == {"decision": "rejected", "by": "cfo@example.com"}


def test_approve_twice_is_refused_and_the_run_resumes_once(stack, sink):
    run = pipeline.run(workflows.ApprovalWorkflow, input={"sink": str(sink)}, timeout=60)
    run.approve(approved_by="manager@example.com")
    with pytest.raises(ApprovalAlreadyDecided):
        run.approve(approved_by="manager@example.com")

    run = pipeline.wait(run, timeout=60)

    assert run.status == "completed"
    assert sink_lines(sink) == [f"{run.id} prepare", f"{run.id} after"]
    assert event_types(run).count("run.resumed") == 1


def test_deciding_needs_a_pending_approval(stack, sink):
    run = pipeline.run(workflows.LinearWorkflow, input={"sink": str(sink), "n": 1}, timeout=60)
    with pytest.raises(NoPendingApproval):
        run.approve(approved_by="manager@example.com")


def test_cancel_stops_the_run_before_the_next_step(stack, sink):
    # Given a run whose first step is blocked mid-body
    gate = uuid.uuid4().hex
    workflows.GATES[gate] = release = __import__("threading").Event()
    run = pipeline.enqueue(workflows.GatedWorkflow, input={"sink": str(sink), "gate": gate})
    eventually(lambda: sink_lines(sink), what="first step started")

    # When it is cancelled and the step then finishes
    run.cancel(by="ops@example.com", reason="customer withdrew")
    release.set()
    eventually(lambda: "step.completed" in event_types(run), what="blocked step recorded")

    # Then no later step starts and the run stays cancelled
    run = pipeline.wait(run, timeout=30)
    assert run.status == "cancelled"
    assert sink_lines(sink) == [f"{run.id} blocked"]
    assert "after" not in run.state
    with pytest.raises(InvalidRunState):
        run.cancel()


def test_cancel_while_waiting_for_approval_prevents_resuming(stack, sink):
    run = pipeline.run(workflows.ApprovalWorkflow, input={"sink": str(sink)}, timeout=60)
    run.cancel()
    assert run.pending_approval is None
    assert run.approvals[-1].status == "cancelled"
    with pytest.raises(ApprovalAlreadyDecided, match="already cancelled"):
        run.approve(approved_by="manager@example.com")
    assert sink_lines(sink) == [f"{run.id} prepare"]


def test_bad_run_input_is_refused_before_anything_is_written(stack, sink):
    with stack.runtime.db.transaction() as s:
        before = s.query(RunRow).count()

    with pytest.raises(InvalidRunInput) as caught:
        pipeline.enqueue(workflows.LinearWorkflow, input={"sink": str(sink), "n": "many"})

    assert caught.value.details == {"n": ["Not a valid integer."]}
    with stack.runtime.db.transaction() as s:
        assert s.query(RunRow).count() == before
    assert sink_lines(sink) == []


def test_bad_input_through_the_launch_task_is_recorded_as_a_failed_run_and_no_step_runs(stack, sink):
    run_id = f"run_{uuid.uuid4().hex}"
    stack.app.send_task(
        "rubot.launch",
        args=["LinearWorkflow", {"sink": str(sink)}],
        kwargs={"run_id": run_id},
        queue=stack.settings.queue,
    )

    run = pipeline.wait(eventually(lambda: _exists(stack, run_id) and run_id, what="run recorded"), timeout=30)

    assert run.status == "failed"
    assert run.error["reason"] == "invalid_input"
    assert run.error["details"] == {"n": ["Missing data for required field."]}
    assert sink_lines(sink) == []


def test_an_input_mapping_that_fails_is_a_clear_run_failure_and_the_tool_never_runs(stack, sink):
    run = pipeline.run(workflows.BadInputMappingWorkflow, input={"sink": str(sink)}, timeout=60)

    assert run.status == "failed"
    assert run.error["reason"] == "step_input_error"
    assert "missing key 'nope'" in run.error["message"]
    assert run.error["step"] == "first"
    assert sink_lines(sink) == []


def test_a_tool_schema_violation_is_recorded_with_field_errors(stack):
    bad = {**RAILS_WORLD, "conference_url": "not a url"}
    run = pipeline.run(ConferenceTravelReviewWorkflow, input=bad, timeout=60)

    assert run.status == "failed"
    assert run.error["reason"] == "invalid_tool_input"
    assert "conference_url" in run.error["details"]
    assert run.error["step"] == "conference_site"


def test_the_same_step_task_delivered_twice_runs_the_body_once(stack, sink):
    run = pipeline.run(workflows.LinearWorkflow, input={"sink": str(sink), "n": 2}, timeout=60)
    assert sink_lines(sink) == [f"{run.id} first", f"{run.id} second"]

    # When the message for a finished step arrives again (a redelivery, or someone re-sent it)
    stack.app.send_task("rubot.step", args=[run.id, "first"], queue=stack.settings.queue)

    # Then the ledger answers and the body does not run again
    eventually(lambda: "step.duplicate_ignored" in event_types(run), what="duplicate noticed")
    assert sink_lines(sink) == [f"{run.id} first", f"{run.id} second"]
    with stack.runtime.db.transaction() as s:
        assert [e.op_key for e in queries.effects(s, run.id)].count("first") == 1


def test_a_duplicated_resume_message_dispatches_nothing_twice(stack, sink):
    run = pipeline.run(workflows.ApprovalWorkflow, input={"sink": str(sink)}, timeout=60)
    run.approve(approved_by="manager@example.com")
    run = pipeline.wait(run, timeout=60)

    # The resume that followed the approval carried dispatch_seq 1; deliver it again.
    stack.app.send_task("rubot.resume", args=[run.id, 1], queue=stack.settings.queue)
    stack.app.send_task("rubot.resume", args=[run.id, 0], queue=stack.settings.queue)
    eventually(lambda: stack.queue_length() == 0 and not worker_state.active_requests, what="queue drained")

    assert sink_lines(sink) == [f"{run.id} prepare", f"{run.id} after"]
    assert event_types(run).count("run.dispatched") == 2


def test_waiting_inside_a_task_is_an_error_not_a_deadlock(stack):
    run = pipeline.run(workflows.WaitInsideWorkflow, timeout=60)

    assert run.status == "failed"
    assert run.error["reason"] == "wait_inside_task"


def test_the_operation_runs_inline_for_the_auto_path(stack):
    run = ConferenceTravelApprovalOperation.launch(input=RAILS_WORLD)
    assert run.workflow == "ConferenceTravelReviewWorkflow"
    assert run.completed and run.output["recommended"] is True


def test_manual_workflow_output_names_who_approved_when_no_payload_is_given(stack):
    review = {
        "employee_id": "emp_1",
        "within_budget": True,
        "auto_approvable": False,
        "recommended": False,
        "risks": ["x"],
        "confidence_score": 0.5,
    }
    run = pipeline.run(ConferenceTravelManualApprovalWorkflow, input={"review": review}, timeout=60)
    run.approve(approved_by="m@example.com")
    run = pipeline.wait(run, timeout=60)
    # Seed fidelity (DESIGN §3's example output): without a payload, the decision records who decided.
    assert run.output == {**review, "auto_approvable": False, "approval": {"approved_by": "m@example.com"}}
    assert run.approvals[-1].decision_payload == {"approved_by": "m@example.com"}
    assert run.approvals[-1].principal == {
        "id": "m@example.com",
        "display_name": "m@example.com",
        "roles": [],
        "via": "python",
    }


def _exists(stack, run_id: str) -> bool:
    with stack.runtime.db.transaction() as s:
        return s.get(RunRow, run_id) is not None


def test_one_active_run_per_subject_waits_in_queued_until_the_first_ends(stack, sink):
    first = pipeline.run(workflows.OnePerSubjectWorkflow, input={"sink": str(sink)}, subject="order:1", timeout=60)
    assert first.waiting_for_approval

    second = pipeline.enqueue(workflows.OnePerSubjectWorkflow, input={"sink": str(sink)}, subject="order:1")
    eventually(lambda: "run.waiting_for_slot" in event_types(second), what="second run held back")
    assert pipeline.get_run(second.id).status == "queued"
    other = pipeline.run(workflows.OnePerSubjectWorkflow, input={"sink": str(sink)}, subject="order:2", timeout=60)
    assert other.waiting_for_approval  # another subject is not held back

    first.cancel()
    second = pipeline.wait(second, timeout=60)
    assert second.waiting_for_approval
    assert sink_lines(sink).count(f"{second.id} prepare") == 1
