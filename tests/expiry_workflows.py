"""Workflows, a tool and an agent with approval deadlines, for the expiry tests (worker subprocesses import it too).

Steps record to the ``sink`` file named in the run input, the tool to ``RUBOT_TEST_SINK``, so tests see what ran.
"""

from __future__ import annotations

from datetime import timedelta

from marshmallow import fields

from pipeline import Agent, Tool, Workflow, agent_step, approval_step, tool_step
from tests.agent_workflows import record
from tests.workflows import Record

HOUR = timedelta(hours=1)
SINK_INPUT = {"sink": fields.String(required=True)}


def _record(label: str):
    return tool_step(Record, input=lambda input, state, context: {"sink": input["sink"], "label": label})


class ExpiringApprovalWorkflow(Workflow):
    """Rejected on expiry (the default): the run fails with reason ``approval_expired``."""

    input_schema = SINK_INPUT
    prepare = _record("prepare")
    manager = approval_step(role="manager", reason="Needs a manager within the hour.", expires_in=HOUR)
    after = _record("after")


class EscalatingApprovalWorkflow(Workflow):
    """An hour for the assigned manager, then four hours for any director, then rejected."""

    input_schema = SINK_INPUT
    prepare = _record("prepare")
    manager = approval_step(
        role="manager",
        assignee="mia@example.com",
        expires_in=HOUR,
        on_expire="escalate",
        escalate_to="director",
        escalate_expires_in=4 * HOUR,
    )
    after = _record("after")


class ExpiryContinuesWorkflow(Workflow):
    """``on_reject="continue"`` applies to an expiry too: later steps see the rejection."""

    input_schema = SINK_INPUT
    manager = approval_step(role="manager", expires_in=HOUR, on_reject="continue")
    after = _record("after")


class InstantExpiryWorkflow(Workflow):
    """Overdue as soon as it parks: the beat task's first sweep expires it."""

    input_schema = SINK_INPUT
    prepare = _record("prepare")
    manager = approval_step(role="manager", expires_in=timedelta(milliseconds=1))
    after = _record("after")


class WireTransfer(Tool):
    """Always needs a person; the approval waits two hours at most."""

    description = "Send a wire transfer."
    side_effects = True
    approval_role = "treasurer"
    approval_expires_in = 2 * HOUR
    input_schema = {"amount_cents": fields.Integer(required=True)}
    output_schema = {"transfer_id": fields.String(required=True)}

    def requires_approval(self, *, amount_cents):
        return f"Wire of {amount_cents} cents"

    def call(self, *, amount_cents):
        record(f"wire {amount_cents}")
        return {"transfer_id": f"wt_{amount_cents}"}


class TreasuryAgent(Agent):
    instructions = "Pay the supplier by wire transfer."
    input_schema = {"amount_cents": fields.Integer(required=True)}
    output_schema = {"resolution": fields.String(required=True)}
    tools = (WireTransfer,)
    model = "claude-haiku-4-5"
    max_turns = 4


class TreasuryWorkflow(Workflow):
    desk = agent_step(TreasuryAgent)
