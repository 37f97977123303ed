"""Workflows for the branching and tool-step authorization tests (tests/test_branching.py). Worker subprocesses
import this module (``RUBOT_WORKFLOW_MODULES``).

Tools append a line to the file named in the run input (``sink``) every time their body really runs, so tests
count executions outside the effects ledger.
"""

from __future__ import annotations

from pathlib import Path

from marshmallow import fields

from pipeline import Tool, Workflow, tool_step
from pipeline.llm.policy import Policy


def record(sink: str, line: str) -> None:
    with Path(sink).open("a") as handle:
        handle.write(line + "\n")


# --- authorization of tool steps ----------------------------------------------------------------------------


class Payout(Tool):
    """A side-effecting tool only finance users may use."""

    description = "Pay money out."
    side_effects = True
    input_schema = {"sink": fields.String(required=True), "amount": fields.Integer(required=True)}
    output_schema = {"paid": fields.Integer(required=True)}

    def permitted_for(self, user):
        return isinstance(user, dict) and "finance" in user.get("roles", [])

    def call(self, *, sink, amount):
        record(sink, f"{self.context.run_id} paid {amount}")
        return {"paid": amount}


class PayoutLimit(Policy):
    def authorize_tool(self, check):
        if check.tool == "payout" and check.input.get("amount", 0) > 1000:
            return "payouts above 1000 need the treasury desk"
        return True


class PayoutWorkflow(Workflow):
    input_schema = {"sink": fields.String(required=True), "amount": fields.Integer(required=True)}
    policy = PayoutLimit()
    pay = tool_step(Payout, input=lambda input, state, context: {"sink": input["sink"], "amount": input["amount"]})
