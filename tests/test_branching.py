"""Branching, data helpers and tool-step authorization, on a real worker (embedded and Redis + Postgres)."""

from __future__ import annotations

import types

import pytest

import pipeline
from pipeline import choice, compute, from_context, from_input, from_state, jump_to, merge, skip_to, slice, when
from tests import branching_workflows as bw
from tests.conftest import eventually, sink_lines

FINANCE = {"id": "fiona", "roles": ["finance"]}
SALES = {"id": "sam", "roles": ["sales"]}


def _events(run, type_):
    return [e for e in run.events if e.type == type_]


# --- authorization of tool steps ----------------------------------------------------------------------------


def test_a_tool_step_the_runs_user_may_not_use_fails_the_run_with_no_effect(stack, sink):
    # Given a side-effecting tool only finance users may call, in a tool_step
    # When a sales user's run reaches it
    run = pipeline.run(bw.PayoutWorkflow, {"sink": str(sink), "amount": 10}, context={"user": SALES}, timeout=60)

    # Then the run fails with a clear reason, the tool never ran and nothing was claimed in the ledger
    assert run.status == "failed"
    assert run.error["reason"] == "tool_denied"
    assert run.error["step"] == "pay"
    assert "may not call payout" in run.error["message"]
    assert sink_lines(sink) == []
    assert [e.op_key for e in run.effects] == []
    assert [e.data["reason"] for e in _events(run, "tool.denied")] == ["the user of this run may not call payout"]

    # And a finance user's run of the same workflow pays once
    allowed = pipeline.run(bw.PayoutWorkflow, {"sink": str(sink), "amount": 10}, context={"user": FINANCE}, timeout=60)
    assert allowed.status == "completed", allowed.error
    assert sink_lines(sink) == [f"{allowed.id} paid 10"]


def test_a_tool_step_the_workflows_policy_denies_fails_the_run_with_no_effect(stack, sink):
    # Given a workflow policy that refuses payouts above 1000 whoever asks
    run = pipeline.run(bw.PayoutWorkflow, {"sink": str(sink), "amount": 5000}, context={"user": FINANCE}, timeout=60)

    # Then a finance user's big payout is refused with the policy's reason and nothing happened
    assert run.status == "failed"
    assert run.error["reason"] == "tool_denied"
    assert "payouts above 1000 need the treasury desk" in run.error["message"]
    assert sink_lines(sink) == []
    assert run.effects == []


# --- branching ----------------------------------------------------------------------------------------------


def _labels(sink, run):
    return [line.split(" ", 1)[1] for line in sink_lines(sink) if line.startswith(run.id + " ")]


def _skipped(run):
    return {e.step: e.data["because"] for e in _events(run, "step.skipped")}


def test_a_skipped_step_is_an_event_and_a_ledger_row_and_never_runs(stack, sink):
    # Given steps guarded by unless= (a callable) and if_= (a workflow method name)
    # When a rush run without notice runs
    run = pipeline.run(bw.SkippingWorkflow, {"sink": str(sink), "rush": True, "notify": False}, timeout=60)

    # Then the guarded steps were skipped: never run, an event each, a ledger row each, nothing in the state
    assert run.status == "completed", run.error
    assert _labels(sink, run) == ["intake"]
    assert _skipped(run) == {"fraud_check": "unless", "notify": "if_", "notice_sent": "if_"}
    ledger = {e.op_key: e.result for e in run.effects}
    assert ledger["fraud_check"]["skipped"] == "unless"
    assert ledger["notice_sent"]["skipped"] == "if_"
    assert run.output == {"keys": ["intake"]}

    # And a run whose input says otherwise runs them
    other = pipeline.run(bw.SkippingWorkflow, {"sink": str(sink), "rush": False, "notify": True}, timeout=60)
    assert other.status == "completed", other.error
    assert _labels(sink, other) == ["intake", "fraud_check", "notify"]
    assert _skipped(other) == {}
    assert other.output == {"keys": ["fraud_check", "intake", "notice_sent", "notify"]}


def test_a_skipped_approval_step_parks_nothing_and_the_run_goes_on(stack, sink):
    # Given an approval step that ends its segment, guarded by if_
    small = pipeline.run(bw.ConditionalApprovalWorkflow, {"sink": str(sink), "amount": 50}, timeout=60)
    large = pipeline.run(bw.ConditionalApprovalWorkflow, {"sink": str(sink), "amount": 5000}, timeout=60)

    # Then a small amount skips it and the skip dispatched the rest; a large one waits for a manager
    assert small.status == "completed", small.error
    assert _labels(sink, small) == ["intake", "pay"]
    assert _skipped(small) == {"manager": "if_"}
    assert small.approvals == []
    assert large.status == "waiting_for_approval"
    assert _labels(sink, large) == ["intake"]


def test_a_choice_jumps_back_twice_and_then_goes_on(stack, sink):
    # Given a loop closed by a choice (max_visits=3) that goes back while the draft's version is below 3
    run = pipeline.run(bw.DraftLoopWorkflow, {"sink": str(sink), "good_at": 3}, timeout=60)

    # Then the loop ran three times and the run went on to publish
    assert run.status == "completed", run.error
    assert _labels(sink, run) == ["v1", "v2", "v3", "publish"]
    decisions = [(e.data["to"], e.data["direction"], e.data.get("visit")) for e in _events(run, "choice.decided")]
    assert decisions == [("draft", "back", 2), ("draft", "back", 3), (None, "next", None)]
    assert run.state["route"] == {"to": None, "direction": "next"}
    # The earlier visits are kept in the ledger under their visit's prefix
    keys = {e.op_key for e in run.effects}
    assert {"#1.route:draft", "#1.route:write", "#1.route:route", "#2.route:write", "write", "route"} <= keys


def test_an_agent_step_in_a_loop_is_asked_again_with_its_earlier_turns_kept(stack, model, sink):
    from pipeline.testing import reply

    def final(refunded):
        return reply(tool_uses=[{"name": "final_answer", "input": {"resolution": "ok", "refunded_cents": refunded}}])

    # Given an agent step in a loop: the first visit looks the order up and refunds nothing, the second refunds
    model.add(reply(tool_uses=[("lookup_order", {"order_id": 7})]), final(0), final(500))
    run = pipeline.run(bw.AgentLoopWorkflow, {"order_id": 7, "message": "where is it?"}, timeout=60)

    # Then the agent ran twice, its first visit's turns and tool call are kept under the visit's prefix, and the
    # lookup (a real tool execution) happened once
    assert run.status == "completed", run.error
    assert run.output == {"resolution": "ok", "refunded_cents": 500}
    assert sink_lines(sink) == ["lookup 7"]
    keys = [e.op_key for e in run.effects]
    assert "#1.again:desk/turn-1/tool-toolu_scripted_1" in keys
    assert {"#1.again:desk/turn-2", "#1.again:desk", "#1.again:again", "desk/turn-1", "desk", "again"} <= set(keys)
    assert _skipped(run) == {"again": "if_"}
    assert "again" not in run.state  # skipped on the last pass: the first pass's decision is not left behind
    assert len(model.requests) == 3


def test_a_loop_that_hits_its_bound_fails_the_run_cleanly(stack, sink):
    # Given the same loop whose draft is never good enough
    run = pipeline.run(bw.DraftLoopWorkflow, {"sink": str(sink), "good_at": 99}, timeout=60)

    # Then after three visits the run fails with the bound as its reason, and nothing after the loop ran
    assert run.status == "failed"
    assert run.error["reason"] == "max_visits_exceeded"
    assert run.error["step"] == "route"
    assert run.error["details"] == {"to": "draft", "max_visits": 3, "visits": 3}
    assert "max_visits is 3" in run.error["message"]
    assert _labels(sink, run) == ["v1", "v2", "v3"]


def test_a_choice_skips_forward_and_dispatches_only_what_its_branch_needs(stack, sink):
    small = pipeline.run(bw.ForwardChoiceWorkflow, {"sink": str(sink), "amount": 50}, timeout=60)
    medium = pipeline.run(bw.ForwardChoiceWorkflow, {"sink": str(sink), "amount": 500}, timeout=60)
    large = pipeline.run(bw.ForwardChoiceWorkflow, {"sink": str(sink), "amount": 50_000}, timeout=60)

    assert [r.status for r in (small, medium, large)] == ["completed"] * 3
    assert _labels(sink, small) == ["auto_approve", "done"]
    assert _skipped(small) == {"review": "triage went to auto_approve", "to_done": "triage went to auto_approve"}
    assert _labels(sink, medium) == ["review", "auto_approve", "done"]
    assert _skipped(medium) == {"to_done": "if_"}
    assert _labels(sink, large) == ["review", "done"]
    assert _skipped(large) == {"auto_approve": "to_done went to done"}
    # The segment after the choice holds only the branch's steps: no message for a skipped step was ever sent
    dispatched = [e.data["steps"] for e in _events(small, "run.dispatched")]
    assert dispatched == [["triage"], ["auto_approve", "done"]]
    assert _events(small, "step.duplicate_ignored") == []


def test_a_choice_goes_past_a_parallel_group_and_a_skipped_member_lets_its_group_join(stack, sink):
    past = pipeline.run(bw.ParallelBranchWorkflow, {"sink": str(sink), "skip": True}, timeout=60)
    through = pipeline.run(bw.ParallelBranchWorkflow, {"sink": str(sink), "skip": False}, timeout=60)

    assert past.status == through.status == "completed"
    assert _labels(sink, past) == ["after"]
    assert _skipped(past) == {"a": "route went to after", "b": "route went to after"}
    assert _labels(sink, through) == ["a", "after"]
    assert _skipped(through) == {"b": "unless"}
    assert [e.step for e in _events(through, "parallel.joined")] == ["both"]


def test_a_workflow_ending_in_a_parallel_group_completes_when_every_member_is_recorded(stack, sink):
    # Given a plan whose last unit is a parallel group (one member skipped by its condition)
    run = pipeline.run(bw.EndsInParallelWorkflow, {"sink": str(sink)}, timeout=60)

    # Then the first member to record does not end the run as "incomplete": the group joins and completes it
    assert run.status == "completed", run.error
    assert sorted(_labels(sink, run)) == ["a", "b", "first"]
    assert _skipped(run) == {"c": "unless"}


def test_output_is_shaped_by_a_key_a_list_of_keys_or_a_callable(stack):
    by_key = pipeline.run(bw.OutputKeyWorkflow, {"n": 4}, timeout=60)
    by_keys = pipeline.run(bw.OutputKeysWorkflow, {"n": 4}, timeout=60)
    by_callable = pipeline.run(bw.OutputCallableWorkflow, {"n": 4}, timeout=60)

    assert by_key.status == by_keys.status == by_callable.status == "completed"
    assert by_key.output == {"n": 8}  # save_as="doubled", named by output = "doubled"
    assert by_key.state["doubled"] == {"n": 8} and "double" not in by_key.state
    assert by_keys.output == {"double": 8, "same": 4}
    assert by_callable.output == {"sum": 12}


def test_a_condition_or_output_that_raises_fails_the_run_with_its_reason(stack, sink):
    condition = pipeline.run(bw.BrokenConditionWorkflow, {"sink": str(sink)}, timeout=60)
    output = pipeline.run(bw.BrokenOutputWorkflow, {"sink": str(sink)}, timeout=60)

    assert condition.status == "failed"
    assert condition.error["reason"] == "condition_error"
    assert condition.error["step"] == "second"
    assert "missing key 'no_such_step'" in condition.error["message"]
    assert _labels(sink, condition) == ["first"]
    assert output.status == "failed"
    assert output.error["reason"] == "output_error"
    assert "KeyError" in output.error["message"]
    assert output.output is None


def test_on_failure_is_called_once_when_a_run_fails(stack, sink):
    # Given a workflow with on_failure whose second step fails
    run = pipeline.run(bw.FailingWorkflow, {"sink": str(sink)}, timeout=60)
    assert run.status == "failed"
    assert run.error["reason"] == "step_failed"

    # Then on_failure is called in a worker, once, with the error
    eventually(lambda: _events(pipeline.get_run(run.id), "run.on_failure_called"), what="on_failure")
    assert _labels(sink, run) == ["first", "on_failure step_failed broken"]

    # And a duplicated rubot.on_failure message does not call it again
    stack.app.send_task("rubot.on_failure", args=[run.id], queue=stack.settings.queue)
    eventually(lambda: _events(pipeline.get_run(run.id), "run.on_failure_duplicate_ignored"), what="the duplicate")
    assert _labels(sink, run) == ["first", "on_failure step_failed broken"]


def test_an_on_failure_whose_message_was_lost_is_sent_again_by_the_sweeper(stack, sink, monkeypatch):
    from datetime import timedelta

    from pipeline.engine import on_failure
    from pipeline.store.tables import utcnow

    # Given a run that failed in a process that died before it could send rubot.on_failure
    with monkeypatch.context() as patched:
        patched.setattr(on_failure.FailureHooks, "run_failed", lambda self, info: None)
        run = pipeline.run(bw.FailingWorkflow, {"sink": str(sink)}, timeout=60)
    assert run.status == "failed" and _labels(sink, run) == ["first"]

    # When the sweeper looks two leases later
    later = utcnow() + timedelta(seconds=3 * stack.settings.lease_seconds)
    assert run.id in on_failure.resend_missed(stack.runtime, now=later)

    # Then on_failure is called, once, and the next sweep finds nothing missed for this run
    eventually(lambda: _events(pipeline.get_run(run.id), "run.on_failure_called"), what="on_failure")
    assert _labels(sink, run) == ["first", "on_failure step_failed broken"]
    assert run.id not in on_failure.resend_missed(stack.runtime, now=later)


# --- definitions checked at class creation -------------------------------------------------------------------


def _define(**body):
    def fill(namespace):
        for key, value in {"first": bw.note("first"), **body}.items():
            namespace[key] = value
            if hasattr(value, "__set_name__"):
                value.__set_name__(None, key)

    return types.new_class("Broken", (pipeline.Workflow,), exec_body=fill)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"route": choice(when(lambda i, s, c: True, "nowhere"))}, "target 'nowhere' is not a step"),
        ({"route": choice(when(lambda i, s, c: True, "first"))}, "give max_visits"),
        ({"route": jump_to("first", max_visits=1)}, "max_visits must be at least 2"),
        ({"route": jump_to("later"), "later": bw.note("later")}, "must name an earlier step"),
        ({"route": skip_to("first")}, "must name a later step"),
        ({"route": choice(when(lambda i, s, c: True, "route"))}, "cannot go to itself"),
        ({"route": choice(when(lambda state: True, "first"), max_visits=2)}, "when must accept three arguments"),
        ({"route": choice(otherwise="last"), "last": bw.note("last")}, None),
        ({"second": bw.note("second", if_=lambda input: True)}, "if_ must accept three arguments"),
        ({"second": bw.note("second", unless="no_such_method")}, "names no method"),
        ({"second": bw.note("second", if_="helper"), "helper": lambda self: True}, "(self, input, state, context)"),
        ({"second": compute(lambda input, state: 1)}, "compute must accept three arguments"),
        ({"second": bw.note("second", save_as="first")}, "is the name of another step"),
        ({"output": "nope"}, "names 'nope', which is not a step"),
        ({"output": ["first", "nope"]}, "names 'nope'"),
        ({"output": lambda state: state}, "must accept (input, state, context)"),
        ({"output": 42}, "must be a state key, a list of keys or a callable"),
        ({"on_failure": lambda self: None}, "on_failure must be a method taking (self, error)"),
        ({"route": choice(when(lambda i, s, c: True, "first"), max_visits=2)}, None),
        (
            {
                "review": pipeline.approval_step(role="manager"),
                "route": jump_to("first", max_visits=2),
            },
            "contains approval step 'review'",
        ),
    ],
)
def test_malformed_branching_fails_at_class_creation_with_a_clear_message(body, message):
    if message is None:
        _define(**body)  # a well-formed definition is accepted
        return
    with pytest.raises(pipeline.DefinitionError) as raised:
        _define(**body)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: merge(from_state("a")), "merge() needs at least two parts"),
        (lambda: merge(from_state("a"), lambda input, state: {}), "part 2 must accept three arguments"),
        (lambda: slice("inputs", "a"), "source must be one of"),
        (lambda: slice("input"), "needs at least one key"),
        (lambda: from_state("a..b"), "dotted key path"),
    ],
)
def test_malformed_input_helpers_fail_when_built(build, message):
    with pytest.raises(pipeline.DefinitionError) as raised:
        build()
    assert message in str(raised.value)


def test_input_helpers_read_paths_slice_rename_and_merge():
    given = ({"a": 1, "b": 2, "order": {"id": "o1"}}, {"policy": {"limit": 5, "topics": ["x"]}}, {"user": "u"})
    assert from_input("order.id")(*given) == "o1"
    assert from_context()(*given) == {"user": "u"}
    assert slice(from_state("policy"), "limit", allowed="topics")(*given) == {"limit": 5, "allowed": ["x"]}
    assert merge(slice("input", "a"), from_state("policy"), {"a": 9})(*given) == {"a": 9, "limit": 5, "topics": ["x"]}
    with pytest.raises(KeyError, match=r"state\.policy\.budget"):
        from_state("policy.budget")(*given)


# --- a worker killed between a branch decision and the next step ---------------------------------------------

FAST = {"RUBOT_LEASE_SECONDS": "2", "RUBOT_VISIBILITY_TIMEOUT": "4", "RUBOT_MAX_RECOVERIES": "25"}


def test_a_worker_killed_after_a_branch_decision_resumes_on_the_same_branch(production, sink, tmp_path):
    from dataclasses import replace

    from pipeline.engine import recovery

    # Given short leases (for the worker processes and for the sweeper this test runs as beat)
    production.env.update(FAST)
    production.runtime.settings = replace(production.runtime.settings, lease_seconds=2.0, max_recoveries=25)
    gate, route_file = tmp_path / "gate", tmp_path / "route"
    route_file.write_text("express")
    worker = production.start_worker_process(concurrency=1)
    try:
        # When a celery worker decides the branch (express, skipping standard) and starts the next step
        run = pipeline.enqueue(
            bw.KilledAfterChoiceWorkflow, {"sink": str(sink), "gate": str(gate), "route_file": str(route_file)}
        )
        eventually(lambda: f"{run.id} express started" in sink_lines(sink), timeout=60, what="the express step")
        # ...the outside world would now send it the other way, and the worker is SIGKILLed mid-step
        route_file.write_text("standard")
        worker.kill()
        gate.touch()
        worker = production.start_worker_process(concurrency=1)

        # Then the run is taken over and finishes on the branch recorded before the kill
        def finished():
            recovery.sweep(production.runtime)
            current = pipeline.get_run(run.id)
            return current if current.status in ("completed", "failed", "dead_letter") else None

        run = eventually(finished, timeout=90, what="the run to finish after the kill")
    finally:
        worker.stop()
    assert run.status == "completed", (run.error, [(e.type, e.step, e.data) for e in run.events])
    labels = _labels(sink, run)
    assert "standard" not in labels
    assert labels[0] == "prepare" and labels[-2:] == ["express", "done"]
    assert labels.count("express started") == 2  # the killed attempt and the one after the take-over
    assert [(e.data["to"], e.data["direction"]) for e in _events(run, "choice.decided")] == [("express", "forward")]
    assert _skipped(run) == {"standard": "route went to express"}


def test_the_workflow_graph_draws_choices_loops_and_conditions():
    from pipeline.definitions.graph import mermaid

    loop = mermaid(bw.DraftLoopWorkflow)
    assert 's_route{"route · choice"}' in loop and 's_draft[["draft · compute"]]' in loop
    assert "  s_route -. when a condition, max 3 visits .-> s_draft" in loop
    assert loop.index("s_route -. ") > loop.index("s_publish[")  # edges after every node has its shape

    forward = mermaid(bw.ForwardChoiceWorkflow)
    assert "  s_triage -- when is_small --> s_auto_approve" in forward
    assert 's_to_done{"to_done · skip_to (if a condition)"}' in forward
    assert "  s_to_done -- when it holds --> s_done" in forward

    skipping = mermaid(bw.SkippingWorkflow)
    assert '"notify · tool note (if wants_notice)"' in skipping
