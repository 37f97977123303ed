"""Agents, tools and workflows for the agent-loop tests (imported by worker subprocesses too).

Tools append a line to the file named by ``RUBOT_TEST_SINK`` every time their body really runs.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from marshmallow import fields

from pipeline import Agent, Tool, Workflow, agent_step, approval_step, step
from pipeline.llm.policy import Policy


def record(line: str) -> None:
    with Path(os.environ["RUBOT_TEST_SINK"]).open("a") as handle:
        handle.write(line + "\n")


class LookupOrder(Tool):
    description = "Look up an order's status."
    input_schema = {"order_id": fields.Integer(required=True)}
    output_schema = {"order_id": fields.Integer(required=True), "status": fields.String(required=True)}

    def call(self, *, order_id):
        record(f"lookup {order_id}")
        return {"order_id": order_id, "status": "delivered" if order_id % 2 else "in transit"}


class RefundOrder(Tool):
    description = "Refund an order (moves money)."
    side_effects = True
    approval_role = "support_lead"
    approval_summary = "Refund {amount_cents} cents on order {order_id}"
    input_schema = {"order_id": fields.Integer(required=True), "amount_cents": fields.Integer(required=True)}
    output_schema = {"refund_id": fields.String(required=True)}

    def permitted_for(self, user):
        return isinstance(user, dict) and "support" in user.get("roles", [])

    def requires_approval(self, *, order_id, amount_cents):
        return f"Refund of {amount_cents} cents is above 10000" if amount_cents > 10_000 else None

    def call(self, *, order_id, amount_cents):
        record(f"refund {order_id} {amount_cents} key={self.context.idempotency_key}")
        gate = os.environ.get("RUBOT_TEST_REFUND_GATE")
        if gate:  # the kill test holds the refund here until the worker is killed
            deadline = time.monotonic() + 30
            while not Path(gate).exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        return {"refund_id": f"re_{order_id}"}


class ReadSecrets(Tool):
    description = "Read the company's secrets."
    input_schema = {"topic": fields.String(required=True)}

    def permitted_for(self, user):
        return False

    def call(self, *, topic):
        record(f"SECRET {topic}")
        return {"secret": "hunter2"}


class ExportEverything(Tool):
    description = "Export all order data."
    input_schema = {}

    def call(self):
        record("export")
        return {"rows": "x" * (10 * 1024 * 1024)}


class NoRefundsOnSundays(Policy):
    def authorize_tool(self, check):
        if check.tool == "refund_order" and check.input.get("order_id") == 13:
            return "order 13 is under investigation"
        return True


class SupportAgent(Agent):
    instructions = "Resolve the customer's request. Use tools; refund only when warranted."
    input_schema = {"order_id": fields.Integer(required=True), "message": fields.String(required=True)}
    output_schema = {"resolution": fields.String(required=True), "refunded_cents": fields.Integer(required=True)}
    tools = (LookupOrder, RefundOrder, ReadSecrets, ExportEverything)
    model = "claude-haiku-4-5"
    max_turns = 8


class SupportWorkflow(Workflow):
    input_schema = {"order_id": fields.Integer(required=True), "message": fields.String(required=True)}
    policy = NoRefundsOnSundays()
    desk = agent_step(SupportAgent)

    @step
    def close(self):
        return {**self.run.state["desk"], "closed": True}


class TightAgent(SupportAgent):
    max_turns = 3


class TightWorkflow(Workflow):
    desk = agent_step(TightAgent)


class BudgetedWorkflow(Workflow):
    max_tokens = 500
    desk = agent_step(SupportAgent)


class UnpricedAgent(SupportAgent):
    model = "claude-unpriced-9"  # in no price table


class UnpricedWorkflow(Workflow):
    desk = agent_step(UnpricedAgent)


class LookupCustomer(Tool):
    """A tool whose result is mostly noise to the model: it shows the model only what it needs."""

    description = "Look up a customer."
    input_schema = {"customer_id": fields.String(required=True)}

    def call(self, *, customer_id):
        record(f"customer {customer_id}")
        return {
            "id": customer_id,
            "tier": "gold",
            "email": "ada@example.com",
            "audit": [{"at": f"2026-11-{d:02d}", "what": "login"} for d in range(1, 21)],
        }

    def for_model(self, result):
        return {"id": result["id"], "tier": result["tier"]}


class BrokenProjection(Tool):
    description = "A tool whose projection fails."
    input_schema = {"key": fields.String(required=True)}

    def call(self, *, key):
        record(f"broken {key}")
        return {"key": key, "secret": "not for the model"}

    def for_model(self, result):
        raise KeyError("missing")


class ProjectingAgent(SupportAgent):
    tools = (LookupCustomer, BrokenProjection)


class ProjectingWorkflow(Workflow):
    desk = agent_step(ProjectingAgent)


class BatchSupportWorkflow(Workflow):
    """SupportWorkflow with its agent step sent through the Message Batches API."""

    input_schema = SupportWorkflow.input_schema
    policy = NoRefundsOnSundays()
    desk = agent_step(SupportAgent, batch=True)

    @step
    def close(self):
        return {**self.run.state["desk"], "closed": True}


def up_to_a_thousand_dollars(check):
    """The Tool's approvers hook: a treasurer approves payments up to 100000 cents; larger ones need the CFO."""
    if check.tool_input["amount_cents"] > 100_000 and not check.principal.has_role("cfo"):
        return "payments over 100000 cents need the CFO"
    return True


class PayInvoice(Tool):
    """Always needs a treasurer; its arguments are nested and carry a credential the page must never show."""

    description = "Pay a supplier invoice."
    side_effects = True
    approval_role = "treasurer"
    approval_summary = "Pay {amount_cents} cents for invoice {invoice[id]}"
    approvers = up_to_a_thousand_dollars
    input_schema = {
        "invoice": fields.Dict(required=True),
        "amount_cents": fields.Integer(required=True),
        "api_key": fields.String(required=True),
    }
    output_schema = {"payment_id": fields.String(required=True)}

    def requires_approval(self, *, invoice, amount_cents, api_key):
        return f"Payments need a treasurer ({amount_cents} cents)"

    def call(self, *, invoice, amount_cents, api_key):
        record(f"pay {json.dumps(invoice, sort_keys=True)} {amount_cents} key-ok={api_key.startswith('sk-')}")
        return {"payment_id": f"pay_{invoice['id']}"}


class BillingAgent(Agent):
    instructions = "Pay the invoices that are due."
    input_schema = {"invoice_id": fields.String(required=True)}
    output_schema = {"resolution": fields.String(required=True)}
    tools = (PayInvoice,)
    model = "claude-haiku-4-5"
    max_turns = 4


class BillingWorkflow(Workflow):
    desk = agent_step(BillingAgent)


def _with_review_comment(input, state, context):
    comment = (state.get("review") or {}).get("comment")
    return {**input, "message": input["message"] + (f" Reviewer: {comment}" if comment else "")}


class ReviewedSupportWorkflow(Workflow):
    """The agent's answer is reviewed; changes requested send the agent step round again with the comment."""

    input_schema = {"order_id": fields.Integer(required=True), "message": fields.String(required=True)}
    desk = agent_step(SupportAgent, input=_with_review_comment)
    review = approval_step(role="support_lead", on_changes_requested="revise", revise_from="desk", max_revisions=1)
