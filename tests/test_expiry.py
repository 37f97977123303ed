"""Approval expiry and SLA: overdue approvals are rejected or escalated by the sweep, on both stacks.

Most tests call ``expire_approvals(runtime, now=...)`` with a ``now`` past the deadline instead of waiting for it;
one sends the real ``rubot.expire_approvals`` task through the broker to the worker.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from marshmallow import fields

import pipeline
from pipeline import Tool, Workflow, approval_step
from pipeline.engine import expiry
from pipeline.engine.expiry import expire_approvals
from pipeline.errors import ApprovalAlreadyDecided, DefinitionError
from pipeline.store.tables import utcnow
from pipeline.testing import reply
from rubot_app.config import celery as celery_config
from rubot_app.config.settings import load
from tests import expiry_workflows as ew
from tests.conftest import eventually, sink_lines

HOUR = timedelta(hours=1)


def later(delta: timedelta) -> datetime:
    return utcnow() + delta


def aware(moment: datetime) -> datetime:
    """SQLite returns naive UTC datetimes, Postgres aware ones: compare them as aware."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def of_type(run: pipeline.Run, type_: str) -> list[pipeline.Event]:
    return [e for e in run.refresh().events if e.type == type_]


def parked(workflow: type, sink) -> pipeline.Run:
    run = pipeline.run(workflow, input={"sink": str(sink)}, timeout=60)
    assert run.waiting_for_approval, run.error
    return run


# --- step approvals ---------------------------------------------------------------------------------------------


def test_an_expired_step_approval_fails_the_run_with_reason_approval_expired(stack, sink):
    # Given a run waiting on an approval that expires in an hour
    before = utcnow()
    run = parked(ew.ExpiringApprovalWorkflow, sink)
    approval = run.pending_approval
    assert before + HOUR <= aware(approval.expires_at) <= utcnow() + HOUR  # the SLA is on the handle

    # When the sweep runs before the deadline, nothing happens; when it runs after, the approval expires
    assert approval.id not in expire_approvals(stack.runtime, now=later(HOUR / 2))
    assert run.refresh().waiting_for_approval
    expired = expire_approvals(stack.runtime, now=later(2 * HOUR))

    # Then the approval is rejected by the expiry, the run failed with its reason, and no later step ran
    assert approval.id in expired
    run = pipeline.wait(run, timeout=30)
    assert run.status == "failed"
    assert run.error["reason"] == "approval_expired"
    assert run.error["step"] == "manager"
    assert "expired" in run.error["message"]
    decided = run.approvals[-1]
    assert (decided.status, decided.decided_by) == ("rejected", "rubot:expiry")
    assert "expired" in decided.comment
    assert sink_lines(sink) == [f"{run.id} prepare"]
    [event] = of_type(run, "approval.expired")
    assert event.data["resolution"] == "rejected" and event.data["approval_id"] == approval.id
    assert len(of_type(run, "approval.rejected")) == 1
    with pytest.raises(ApprovalAlreadyDecided, match="already rejected by rubot:expiry"):
        run.approve(approved_by="manager@example.com")


def test_an_expiry_follows_on_reject_continue_like_a_rejection(stack, sink):
    run = parked(ew.ExpiryContinuesWorkflow, sink)

    expire_approvals(stack.runtime, now=later(2 * HOUR))

    run = pipeline.wait(run, timeout=60)
    assert run.status == "completed", run.error
    assert run.state["manager"]["decision"] == "rejected"
    assert run.state["manager"]["decided_by"] == "rubot:expiry"
    assert sink_lines(sink) == [f"{run.id} after"]


def test_escalation_hands_the_same_approval_to_the_new_role_and_its_approval_completes_the_run(stack, sink):
    # Given an approval assigned to a manager that escalates to directors after an hour
    run = parked(ew.EscalatingApprovalWorkflow, sink)
    approval = run.pending_approval
    assert (approval.role, approval.assignee) == ("manager", "mia@example.com")

    # When the hour has passed
    now = later(2 * HOUR)
    assert approval.id in expire_approvals(stack.runtime, now=now)

    # Then the same approval waits for a director with a new deadline, and the run is still parked
    run.refresh()
    assert run.waiting_for_approval
    escalated = run.pending_approval
    assert escalated.id == approval.id
    assert (escalated.role, escalated.assignee, escalated.status) == ("director", None, "pending")
    assert aware(escalated.expires_at) == now + 4 * HOUR
    [event] = of_type(run, "approval.escalated")
    assert (event.data["from_role"], event.data["to_role"]) == ("manager", "director")
    assert of_type(run, "approval.expired")[0].data["resolution"] == "escalated"
    assert approval.id not in expire_approvals(stack.runtime, now=now + HOUR)  # not due before the new deadline

    # And a director's approval resumes the run to completion
    run.approve(approved_by="dana@example.com")
    run = pipeline.wait(run, timeout=60)
    assert run.status == "completed", run.error
    assert run.approvals[-1].decided_by == "dana@example.com"
    assert sink_lines(sink) == [f"{run.id} prepare", f"{run.id} after"]


def test_an_escalated_approval_that_expires_again_is_rejected_not_escalated_again(stack, sink):
    run = parked(ew.EscalatingApprovalWorkflow, sink)
    approval_id = run.pending_approval.id
    first = later(2 * HOUR)
    assert approval_id in expire_approvals(stack.runtime, now=first)

    assert approval_id in expire_approvals(stack.runtime, now=first + 5 * HOUR)

    run = pipeline.wait(run, timeout=30)
    assert run.status == "failed"
    assert run.error["reason"] == "approval_expired"
    assert (run.approvals[-1].status, run.approvals[-1].role) == ("rejected", "director")
    assert len(of_type(run, "approval.escalated")) == 1
    assert [e.data["resolution"] for e in of_type(run, "approval.expired")] == ["escalated", "rejected"]
    assert sink_lines(sink) == [f"{run.id} prepare"]


def test_a_decided_or_cancelled_approval_never_expires(stack, sink):
    # Given one run approved in time and one cancelled while waiting
    approved = parked(ew.ExpiringApprovalWorkflow, sink)
    approved.approve(approved_by="manager@example.com")
    approved = pipeline.wait(approved, timeout=60)
    cancelled = parked(ew.ExpiringApprovalWorkflow, sink)
    cancelled.cancel(by="ops@example.com")

    # When the sweep runs long after both deadlines
    expired = expire_approvals(stack.runtime, now=later(timedelta(days=30)))

    # Then neither approval is touched
    for run, status in ((approved, "approved"), (cancelled, "cancelled")):
        assert run.approvals[-1].id not in expired
        assert run.refresh().approvals[-1].status == status
        assert of_type(run, "approval.expired") == []
    assert approved.status == "completed"
    assert cancelled.status == "cancelled"


def test_racing_sweeps_resolve_an_approval_exactly_once(stack, sink):
    # Given an overdue approval and two sweeps started at the same moment (two beats by mistake)
    run = parked(ew.ExpiringApprovalWorkflow, sink)
    approval_id = run.pending_approval.id
    now, start = later(2 * HOUR), threading.Barrier(2, timeout=20)
    results: list[list[str]] = []

    def sweep() -> None:
        start.wait()
        results.append(expire_approvals(stack.runtime, now=now))

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    # Then exactly one of them expired it, and a third sweep finds nothing to do
    assert sum(r.count(approval_id) for r in results) == 1
    assert approval_id not in expire_approvals(stack.runtime, now=now)
    run = pipeline.wait(run, timeout=30)
    assert run.error["reason"] == "approval_expired"
    assert len(of_type(run, "approval.expired")) == 1
    assert len(of_type(run, "run.failed")) == 1


def test_the_beat_task_runs_on_the_worker_and_expires_overdue_approvals(stack, sink):
    # Given a run whose approval is overdue as soon as it parks
    run = parked(ew.InstantExpiryWorkflow, sink)

    # When beat's message (the real task, by its stable name) reaches the worker
    stack.app.send_task(expiry.SWEEP_TASK, queue=stack.settings.queue)

    # Then the run fails as expired and the step after the approval never runs
    eventually(lambda: run.refresh().status == "failed", timeout=30, what="the expiry sweep on the worker")
    assert run.error["reason"] == "approval_expired"
    assert run.approvals[-1].decided_by == "rubot:expiry"
    assert sink_lines(sink) == [f"{run.id} prepare"]


# --- tool-call approvals ----------------------------------------------------------------------------------------


def test_an_expired_tool_call_approval_is_refused_and_the_model_is_told_it_expired(stack, model, sink):
    # Given an agent whose wire transfer waits for a treasurer for at most two hours
    model.add(
        reply(tool_uses=[("wire_transfer", {"amount_cents": 90_000})]),
        reply(tool_uses=[("final_answer", {"resolution": "transfer not approved in time"})]),
    )
    before = utcnow()
    run = pipeline.run(ew.TreasuryWorkflow, input={"amount_cents": 90_000}, timeout=60)
    assert run.waiting_for_approval, run.error
    approval = run.pending_approval
    assert approval.role == "treasurer"
    assert before + 2 * HOUR <= aware(approval.expires_at) <= utcnow() + 2 * HOUR

    # When the deadline passes
    assert approval.id in expire_approvals(stack.runtime, now=later(3 * HOUR))

    # Then the call is never run, the model gets an error result saying the approval expired, and it goes on
    run = pipeline.wait(run, timeout=60)
    assert run.status == "completed", run.error
    assert sink_lines(sink) == []
    result = model.requests[1].messages[-1]["content"][0]
    assert result["is_error"] is True
    assert "expired" in result["content"] and "not run" in result["content"]
    assert (run.approvals[-1].status, run.approvals[-1].decided_by) == ("rejected", "rubot:expiry")
    assert of_type(run, "approval.expired")[0].data["resolution"] == "rejected"


# --- definitions and configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"on_expire": "later", "expires_in": HOUR}, r"on_expire must be one of \('reject', 'escalate'\)"),
        ({"on_expire": "reject"}, r"on_expire='reject' needs expires_in"),
        ({"on_expire": "escalate", "escalate_to": "director"}, r"on_expire='escalate' needs expires_in"),
        ({"on_expire": "escalate", "expires_in": HOUR}, r"on_expire=\"escalate\" needs escalate_to"),
        ({"on_expire": "escalate", "expires_in": HOUR, "escalate_to": "  "}, r"needs escalate_to"),
        ({"on_expire": "escalate", "expires_in": HOUR, "escalate_to": "manager"}, r"another role than 'manager'"),
        ({"expires_in": HOUR, "escalate_to": "director"}, r"only apply with on_expire=\"escalate\""),
        ({"escalate_to": "director"}, r"escalate_to/escalate_expires_in need expires_in"),
        (
            {
                "on_expire": "escalate",
                "expires_in": HOUR,
                "escalate_to": "director",
                "escalate_expires_in": timedelta(0),
            },
            r"escalate_expires_in must be positive",
        ),
        ({"expires_in": 3600}, r"expires_in must be a datetime.timedelta, got 3600"),
    ],
)
def test_malformed_expiry_settings_fail_at_class_creation(options, message):
    with pytest.raises(DefinitionError, match=rf"Bad\.gate: .*{message}"):

        class Bad(Workflow):
            gate = approval_step(role="manager", **options)


def test_an_approval_with_a_deadline_rejects_on_expiry_unless_told_otherwise():
    class Deadline(Workflow):
        gate = approval_step(role="manager", expires_in=HOUR)

    class NoDeadline(Workflow):
        gate = approval_step(role="manager")

    assert Deadline._steps["gate"].on_expire == "reject"
    assert NoDeadline._steps["gate"].on_expire is None


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ({"approval_on_expire": "escalate"}, r"approval_on_expire must be \"reject\" \(tool-call approvals cannot"),
        ({"approval_expires_in": timedelta(0)}, r"approval_expires_in must be a positive datetime.timedelta"),
        ({"approval_expires_in": 60}, r"approval_expires_in must be a positive datetime.timedelta or None, got 60"),
    ],
)
def test_malformed_tool_approval_expiry_fails_at_class_creation(attributes, message):
    def call(self, *, n):
        return {}

    with pytest.raises(DefinitionError, match=rf"BadTool\.{message}"):
        type(
            "BadTool",
            (Tool,),
            {
                "description": "x",
                "input_schema": {"n": fields.Integer()},
                "call": call,
                "name": "bad_expiry_tool",
                **attributes,
            },
        )


def test_beat_runs_the_sweep_every_configured_interval():
    default = celery_config.build(load({"RUBOT_HOME": "/tmp/rubot-expiry-config"}))["beat_schedule"]
    tuned = celery_config.build(load({"RUBOT_HOME": "/tmp/rubot-expiry-config", "RUBOT_APPROVAL_SWEEP_SECONDS": "5"}))[
        "beat_schedule"
    ]

    [entry] = [e for e in default.values() if e["task"] == expiry.SWEEP_TASK]
    assert entry["schedule"] == 30
    assert [e["schedule"] for e in tuned.values() if e["task"] == "rubot.expire_approvals"] == [5]
