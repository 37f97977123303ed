"""A 12-turn customer-support run for the cost tests and ``scripts/cache_bench.py``.

The desk agent has a long policy (its instructions) and six verbose tools: about 2,900 tokens of tools + system by
the stand-in's tokenizer — above Sonnet 4.6's 2,048-token cache minimum, below Haiku 4.5's 4,096. The script makes
eleven tool calls (one per turn, each result about 700 tokens) and answers on the twelfth turn. One workflow per
(model, caching mode, TTL) so that each is a class with a stable name, as a worker needs.
"""

from __future__ import annotations

import types

from marshmallow import fields

from pipeline import Agent, Tool, Workflow, agent_step
from pipeline.testing import reply

POLICY = """You are the second-line support desk of a mail-order company. Resolve the customer's request by looking
things up with the tools; never guess an order's contents, a shipment's whereabouts or a refund's amount.
""" + "\n".join(
    f"Policy {n}: {text}"
    for n, text in enumerate(
        [
            "Greet nobody; the customer sees only your final resolution, written in plain sentences.",
            "Refunds are due when a parcel is lost, arrives damaged, or is returned unopened within 30 days.",
            "A parcel counts as lost 10 business days after its last carrier scan when no delivery scan exists.",
            "Partial refunds cover only the affected items; shipping is refunded only when the whole order is.",
            "Store credit may be offered instead of a refund, never forced; it carries a 10 percent bonus.",
            "Orders paid by invoice are refunded to the invoice account, never to a card or a wallet.",
            "Customers in the loyalty programme get free return labels; others pay the carrier's label price.",
            "Never disclose another customer's data, internal notes, warehouse locations or supplier names.",
            "Escalate to a human when the customer mentions legal action, injury, fraud or a data protection request.",
            "A damaged item needs a photo unless its value is under 20 euros or the customer is a loyalty member.",
            "Replacement before refund: if the item is in stock and the customer agrees, send a replacement first.",
            "Do not promise delivery dates; quote the carrier's estimate and say that it is the carrier's.",
            "Record the reason code of every refund: LOST, DAMAGED, RETURNED, LATE, WRONG_ITEM or GOODWILL.",
            "Goodwill refunds above 50 euros need a team lead; below that, use them sparingly and say why.",
            "Late deliveries (more than five business days past the estimate) earn a 5 euro voucher, once per order.",
            "Wrong items: the customer keeps them when their value is under 15 euros; otherwise send a free label.",
            "Subscriptions: a skipped box is not refunded; a box that never arrived is treated as a lost parcel.",
            "Gift orders: refunds go to the buyer, never the recipient, and the recipient is not told the amount.",
            "Marketplace sellers handle their own refunds; point the customer to the seller and log the case.",
            "Answer in the customer's language when it is German, French, Italian or Spanish; otherwise English.",
            "Look up every order you talk about; the customer's memory of an order number is often wrong.",
            "Check the shipment before the refund policy: most 'lost' parcels are waiting at a pickup point.",
            "A customer may have several accounts; merge nothing, but mention the other account if relevant.",
            "Use the refund policy tool for the current rules of a country: they differ for Switzerland and Norway.",
            "Close with what happens next and when, in one or two sentences, and the case reference if one exists.",
        ],
        start=1,
    )
)

ITEM_FIELDS = {
    "sku": fields.String(required=True, metadata={"description": "Stock keeping unit of the item"}),
    "quantity": fields.Integer(required=True, metadata={"description": "How many were ordered"}),
}


def _record(kind: str, key: int) -> dict:
    """A realistic, deterministic record of about 2.4 KB (roughly 700 stand-in tokens)."""
    items = [
        {
            "sku": f"SKU-{key:04d}-{i}",
            "title": f"Item {i} of order {key}: stoneware mug, 350 ml, glazed, dishwasher safe",
            "quantity": 1 + i % 3,
            "unit_price_cents": 1290 + 110 * i,
            "status": ["packed", "shipped", "delivered", "returned"][i % 4],
            "warehouse_note": "picked from aisle 14, shelf C, bin 3; inspected before packing",
        }
        for i in range(9)
    ]
    return {"kind": kind, "id": key, "customer": f"C-{1000 + key}", "currency": "EUR", "items": items}


class _DeskTool(Tool):
    input_schema = {
        "order_id": fields.Integer(required=True, metadata={"description": "The order number, as printed on it"})
    }
    output_schema = None

    def call(self, *, order_id):
        return _record(self.name, order_id)


def _desk_tool(name: str, description: str) -> type[Tool]:
    return type(name.title().replace("_", ""), (_DeskTool,), {"name": name, "description": description})


NOTES = (
    "Returns the record as JSON; fields that do not apply are left out. Amounts are in cents of the order's "
    "currency and times are ISO 8601 in UTC. The record reflects the state at the moment of the call: call again "
    "after anything that changes it. Records of other customers are never returned, even when an order number is "
    "mistyped into someone else's order: the tool answers as if the order did not exist. Warehouse and supplier "
    "fields are internal and must not be quoted to the customer. When the tool answers with an error, read it: "
    "a missing order means the number is wrong (ask for it again in the answer); a timeout means the back office "
    "is busy (say that the case is open and will be followed up). Do not call a tool twice with the same order "
    "number in one conversation: its record is already above."
)
TOOLS = tuple(
    _desk_tool(name, f"{text} {NOTES}")
    for name, text in [
        ("order_details", "Look up an order: its items, quantities, prices and item statuses."),
        ("shipment_status", "Look up the shipments of an order: carrier, scans, pickup point and estimate."),
        ("customer_profile", "Look up the customer of an order: loyalty status, language, accounts, contact rules."),
        ("refund_history", "Look up the refunds, vouchers and store credit already given on an order."),
        ("refund_policy", "Look up the refund rules that apply to an order's country and payment method."),
        ("case_notes", "Look up the support cases opened on an order and what was promised in them."),
    ]
)

MODELS = {"sonnet": "claude-sonnet-4-6", "haiku": "claude-haiku-4-5"}
MODES = ("off", "prefix", "conversation")
TURNS = 12
INPUT = {"order_id": 4711, "message": "My parcel never came and I was charged twice. What now?"}


def workflow_name(model: str, mode: str, ttl: str = "5m") -> str:
    return f"Desk_{model}_{mode}_{ttl}"


def _make(model: str, mode: str, ttl: str) -> type[Workflow]:
    agent = type(
        f"DeskAgent_{model}_{mode}_{ttl}",
        (Agent,),
        {
            "name": f"desk_agent_{model}_{mode}_{ttl}",
            "instructions": POLICY,
            "input_schema": {"order_id": fields.Integer(required=True), "message": fields.String(required=True)},
            "output_schema": {
                "resolution": fields.String(required=True),
                "refund_cents": fields.Integer(required=True),
            },
            "tools": TOOLS,
            "model": MODELS[model],
            "prompt_caching": mode,
            "cache_ttl": ttl,
            "max_turns": TURNS,
            "max_response_tokens": 1024,
        },
    )
    # types.new_class, not type(): the Workflow metaclass collects steps through its own class-body namespace.
    return types.new_class(
        workflow_name(model, mode, ttl), (Workflow,), exec_body=lambda ns: ns.update(desk=agent_step(agent))
    )


WORKFLOWS = {(m, mode, ttl): _make(m, mode, ttl) for m in MODELS for mode in MODES for ttl in ("5m", "1h")}


def script() -> list:
    """Eleven tool calls (one per turn, over the six tools, each on another order) and the answer."""
    turns = [
        reply(
            "Checking." if k % 3 == 0 else "",
            tool_uses=[(TOOLS[k % len(TOOLS)].name, {"order_id": 4711 + k})],
        )
        for k in range(TURNS - 1)
    ]
    answer = {"resolution": "The parcel is lost; the double charge and the order are refunded.", "refund_cents": 4580}
    return [*turns, reply(tool_uses=[("final_answer", answer)])]


class IssueRefund(Tool):
    """Every refund from the desk needs a team lead's approval, which may take a while."""

    description = "Refund an order (needs a team lead's approval)."
    side_effects = True
    approval_role = "team_lead"
    input_schema = {"order_id": fields.Integer(required=True), "amount_cents": fields.Integer(required=True)}

    def requires_approval(self, *, order_id, amount_cents):
        return f"Refund of {amount_cents} cents on order {order_id}"

    def call(self, *, order_id, amount_cents):
        return {"refund_id": f"re_{order_id}", "amount_cents": amount_cents}


def _approval_desk(ttl: str) -> type[Workflow]:
    base = WORKFLOWS[("sonnet", "conversation", ttl)].step_named("desk").agent
    agent = type(
        f"RefundDeskAgent_{ttl}", (base,), {"name": f"refund_desk_agent_{ttl}", "tools": (*TOOLS, IssueRefund)}
    )
    return types.new_class(f"RefundDesk_{ttl}", (Workflow,), exec_body=lambda ns: ns.update(desk=agent_step(agent)))


APPROVAL_WORKFLOWS = {ttl: _approval_desk(ttl) for ttl in ("5m", "1h")}


def approval_script() -> list:
    """Look the order up, ask for a refund (the run parks for approval), answer."""
    answer = {"resolution": "Refunded after approval.", "refund_cents": 4580}
    return [
        reply(tool_uses=[("order_details", {"order_id": 4711})]),
        reply(tool_uses=[("issue_refund", {"order_id": 4711, "amount_cents": 4580})]),
        reply(tool_uses=[("final_answer", answer)]),
    ]
