"""Revise and resubmit: request changes sends the run back to an earlier step with the reviewer's comment, the next
round shows what changed, the history of every round is kept, and ``max_revisions`` bounds the loop."""

from __future__ import annotations

import html

import pytest

import pipeline
from pipeline.engine.compiler import RESUME_TASK, STEP_TASK
from pipeline.errors import DefinitionError
from pipeline.web import create_app
from tests import webkit, workflows
from tests.conftest import eventually, sink_lines
from tests.webkit import signed_in


def drafts(sink, run_id):
    return [line.removeprefix(f"{run_id} ") for line in sink_lines(sink) if line.startswith(f"{run_id} draft")]


def test_request_changes_runs_the_draft_again_with_the_comment_then_approval_completes(stack, sink):
    # Given a run waiting for review of its first draft
    run = pipeline.run(workflows.RevisingWorkflow, input={"sink": str(sink)}, timeout=60)
    assert run.waiting_for_approval, run.error
    assert run.pending_approval.round == 1

    # When the reviewer requests changes
    run.request_changes(requested_by="lead@example.com", comment="Make it cheaper")
    run = pipeline.wait(run, timeout=60)

    # Then the drafting step ran again with the comment, and the run waits for round two
    assert run.waiting_for_approval, run.error
    assert drafts(sink, run.id) == ["draft v1 comment=None", "draft v2 comment=Make it cheaper"]
    assert run.state["draft"] == {"version": 2, "amount_cents": 4000, "addressed": "Make it cheaper"}
    second = run.pending_approval
    assert (second.step, second.round, second.summary) == ("review", 2, "Draft v2: 4000 cents")
    changes = {c["path"]: (c["before"], c["after"]) for c in second.evidence["changes"]}
    assert changes["draft.amount_cents"] == (5000, 4000) and changes["draft.version"] == (1, 2)
    assert second.evidence["previous_comment"] == "Make it cheaper"

    # And the page shows the approver what changed since the last round
    app = create_app(stack.runtime, secret_key="k", authenticator=webkit.proxy_authenticator())
    page = signed_in(app.test_client(), "lead@example.com", roles=("manager",)).get(f"/approvals/{run.id}")
    text = html.unescape(page.get_data(as_text=True))
    assert "Round 2: what changed since the last round" in text and "Make it cheaper" in text
    assert "<code>draft.amount_cents</code>" in text

    # When round two is approved, the run completes
    run.approve(approved_by="lead@example.com")
    done = pipeline.wait(run, timeout=60)
    assert done.status == "completed", done.error
    assert sink_lines(sink)[-1] == f"{run.id} after"

    # The history of both rounds is kept: the first round's approval and draft under a round prefix
    assert [(a.step, a.status) for a in done.approvals] == [("r1:review", "changes_requested"), ("review", "approved")]
    keys = [e.op_key for e in done.effects]
    assert keys.count("r1:draft") == 1 and keys.count("draft") == 1 and "review" in keys
    assert [e.type for e in done.events].count("approval.revision_started") == 1


def test_max_revisions_exhausted_fails_the_run_with_a_clear_reason(stack, sink):
    run = pipeline.run(workflows.RevisingWorkflow, input={"sink": str(sink)}, timeout=60)
    for round_ in (1, 2):
        assert run.waiting_for_approval and run.pending_approval.round == round_
        run.request_changes(requested_by="lead@example.com", comment=f"again {round_}")
        run = pipeline.wait(run, timeout=60)

    # Two revisions used: changes requested a third time end the run
    assert run.waiting_for_approval and run.pending_approval.round == 3
    run.request_changes(requested_by="lead@example.com", comment="still no")
    done = pipeline.wait(run, timeout=60)

    assert done.status == "failed"
    assert done.error["reason"] == "max_revisions_exceeded"
    assert done.error["max_revisions"] == 2 and done.error["comment"] == "still no"
    assert "no revisions are left" in done.error["message"]
    assert len(drafts(sink, run.id)) == 3 and not sink_lines(sink)[-1].endswith(" after")
    assert [a.status for a in done.approvals] == ["changes_requested"] * 3


def test_a_redelivered_message_never_runs_a_recorded_round_again(stack, sink):
    # Given a run that went through one revision and waits in round two
    run = pipeline.run(workflows.RevisingWorkflow, input={"sink": str(sink)}, timeout=60)
    first_seq = next(e.data["seq"] for e in run.events if e.type == "run.dispatched")
    run.request_changes(requested_by="lead@example.com", comment="cheaper")
    run = pipeline.wait(run, timeout=60)
    assert run.waiting_for_approval and len(drafts(sink, run.id)) == 2

    # When old messages are delivered again: the first resume, and the step task of the re-run draft
    stack.runtime.send(RESUME_TASK, run.id, first_seq - 1)
    stack.runtime.send(STEP_TASK, run.id, "draft")
    eventually(
        lambda: [e.type for e in pipeline.get_run(run.id).events].count("step.duplicate_ignored") >= 1,
        what="the redelivered step to be seen",
    )

    # Then nothing ran again and the run still waits on round two
    assert len(drafts(sink, run.id)) == 2
    again = pipeline.get_run(run.id)
    assert again.waiting_for_approval and again.pending_approval.round == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"on_changes_requested": "revise", "max_revisions": 2}, "needs revise_from"),
        ({"on_changes_requested": "revise", "revise_from": "nope", "max_revisions": 2}, "not a step of this workflow"),
        ({"on_changes_requested": "revise", "revise_from": "later", "max_revisions": 2}, "is a later step"),
        ({"on_changes_requested": "revise", "revise_from": "draft"}, "needs max_revisions"),
        ({"on_changes_requested": "revise", "revise_from": "draft", "max_revisions": 0}, "at least 1"),
        ({"revise_from": "draft", "max_revisions": 1}, 'only apply with on_changes_requested="revise"'),
    ],
)
def test_bad_revise_definitions_fail_at_class_creation(kwargs, message):
    from pipeline import Workflow, approval_step, step

    with pytest.raises(DefinitionError, match=message):

        class Bad(Workflow):
            @step
            def draft(self):
                return {}

            review = approval_step(role="manager", **kwargs)

            @step
            def later(self):
                return {}


def test_an_agent_step_is_revised_with_the_comment_and_its_earlier_turns_are_kept(stack, model, sink):
    from pipeline.testing import reply
    from tests import agent_workflows as aw

    def final(text):
        return reply(tool_uses=[("final_answer", {"resolution": text, "refunded_cents": 0})])

    model.add(final("first answer"), final("second answer"))
    run = pipeline.run(aw.ReviewedSupportWorkflow, input={"order_id": 7, "message": "Where is it?"}, timeout=60)
    assert run.waiting_for_approval, run.error

    run.request_changes(requested_by="lead@example.com", comment="Offer a voucher")
    run = pipeline.wait(run, timeout=60)

    assert run.waiting_for_approval, run.error
    assert run.state["desk"]["resolution"] == "second answer"
    assert "Reviewer: Offer a voucher" in model.requests[1].messages[0]["content"]
    assert "Reviewer" not in model.requests[0].messages[0]["content"]
    keys = [e.op_key for e in run.effects]
    assert {"r1:desk/input", "r1:desk/turn-1", "r1:desk", "desk/input", "desk/turn-1", "desk"} <= set(keys)
    run.approve(approved_by="lead@example.com")
    assert pipeline.wait(run, timeout=60).status == "completed"
    assert len(model.requests) == 2
