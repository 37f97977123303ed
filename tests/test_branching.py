"""Branching, data helpers and tool-step authorization, on a real worker (embedded and Redis + Postgres)."""

from __future__ import annotations

import pipeline
from tests import branching_workflows as bw
from tests.conftest import sink_lines

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
