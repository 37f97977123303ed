"""The refund desk's tools: ``lookup_order``, ``check_shipment``, ``issue_refund`` and ``send_reply``.

``issue_refund`` and ``send_reply`` change the world: each passes the engine's idempotency key (stable across
retries and redelivery of the same call, see ``ToolContext.idempotency_key``) to the payment service or the
outbox, so a call repeated after a worker died is answered with what the first one did. A refund above
:data:`APPROVAL_THRESHOLD_CENTS` waits for a ``support_lead``, whose decision is bound to the exact arguments.

The run's user (``context["user"]``) is the customer the desk acts for: ``{"id": email, "email": email,
"verified": bool, "permissions": [...]}``. ``issue_refund`` is only permitted for a user holding the ``refunds``
permission (the desk grants it to senders whose address is a known customer's).
"""

from __future__ import annotations

from typing import Any

from marshmallow import fields, validate

from pipeline.definitions.tool import Tool
from pipeline.errors import ToolError
from rubot_app.tools import support_orders, support_payments

APPROVAL_THRESHOLD_CENTS = 15_000
APPROVAL_ROLE = "support_lead"


def _order(order_id: str) -> dict[str, Any]:
    order = support_orders.find_order(order_id)
    if order is None:
        raise ToolError(f"no order {order_id!r} in the order store", details={"order_id": order_id})
    return order


class LookupOrder(Tool):
    """An order with its items, carrier and any refund already made."""

    name = "lookup_order"
    description = (
        "Look up an order by its id (ORD-nnnnn): customer, items, total, carrier, tracking number, and refunds "
        "already issued on it."
    )
    input_schema = {"order_id": fields.String(required=True, validate=validate.Length(min=1, max=40))}
    output_schema = {
        "order_id": fields.String(required=True),
        "customer_email": fields.String(required=True),
        "customer_name": fields.String(required=True),
        "items": fields.List(fields.Dict(), required=True),
        "total_cents": fields.Integer(required=True),
        "placed_on": fields.String(required=True),
        "carrier": fields.String(required=True),
        "tracking_number": fields.String(required=True),
        "refunds": fields.List(fields.Dict(), required=True),
        "refundable_cents": fields.Integer(required=True),
    }

    def call(self, *, order_id: str) -> dict[str, Any]:
        order = _order(order_id)
        done = support_payments.refunds_of(order["order_id"])
        refundable = 0 if done else order["total_cents"]
        return {**order, "refunds": done, "refundable_cents": refundable}


class CheckShipment(Tool):
    """The carrier's tracking status of an order's parcel."""

    name = "check_shipment"
    description = "Ask the carrier where an order's parcel is: lost, damaged, in_transit or delivered, with events."
    input_schema = {"order_id": fields.String(required=True, validate=validate.Length(min=1, max=40))}
    output_schema = {
        "order_id": fields.String(required=True),
        "carrier": fields.String(required=True),
        "tracking_number": fields.String(required=True),
        "status": fields.String(required=True),
        "expected_delivery": fields.String(allow_none=True),
        "events": fields.List(fields.Dict(), required=True),
    }
    timeout = 10.0

    def call(self, *, order_id: str) -> dict[str, Any]:
        return support_orders.track(_order(order_id))


class IssueRefund(Tool):
    """Refund money on an order through the payment service, once per call (idempotency key)."""

    name = "issue_refund"
    description = (
        "Refund an order, in cents, with a short reason. At most the order's refundable amount. Refunds above "
        f"{APPROVAL_THRESHOLD_CENTS} cents wait for a support lead's approval of the exact amount."
    )
    input_schema = {
        "order_id": fields.String(required=True, validate=validate.Length(min=1, max=40)),
        "amount_cents": fields.Integer(required=True, strict=True, validate=validate.Range(min=1)),
        "reason": fields.String(required=True, validate=validate.Length(min=1, max=500)),
    }
    output_schema = {
        "refund_id": fields.String(required=True),
        "order_id": fields.String(required=True),
        "amount_cents": fields.Integer(required=True),
        "replayed": fields.Boolean(required=True),
    }
    side_effects = True
    idempotent = True  # the payment service answers a repeated key with the refund it made
    approval_role = APPROVAL_ROLE
    approval_summary = "Refund {amount_cents} cents on order {order_id}: {reason}"

    def permitted_for(self, user: Any) -> bool:
        return isinstance(user, dict) and "refunds" in (user.get("permissions") or [])

    def requires_approval(self, *, order_id: str, amount_cents: int, reason: str) -> str | None:
        if amount_cents > APPROVAL_THRESHOLD_CENTS:
            return (
                f"Refund of {amount_cents / 100:.2f} USD on {order_id} is above the desk's "
                f"{APPROVAL_THRESHOLD_CENTS / 100:.2f} USD limit."
            )
        return None

    def call(self, *, order_id: str, amount_cents: int, reason: str) -> dict[str, Any]:
        assert self.context is not None
        order = _order(order_id)
        if amount_cents > order["total_cents"]:
            raise ToolError(
                f"{amount_cents} cents is more than order {order_id} cost ({order['total_cents']} cents)",
                details={"total_cents": order["total_cents"]},
            )
        done = support_payments.refund(
            idempotency_key=self.context.idempotency_key,
            order_id=order["order_id"],
            amount_cents=amount_cents,
            reason=reason,
        )
        return {
            "refund_id": done.refund_id,
            "order_id": done.order_id,
            "amount_cents": done.amount_cents,
            "replayed": done.replayed,
        }


class SendReply(Tool):
    """Send the customer an e-mail (through the outbox, once per call)."""

    name = "send_reply"
    description = "E-mail the customer who wrote in. Only their own address is allowed."
    input_schema = {
        "to": fields.Email(required=True),
        "subject": fields.String(required=True, validate=validate.Length(min=1, max=200)),
        "body": fields.String(required=True, validate=validate.Length(min=1, max=5000)),
    }
    output_schema = {"message_id": fields.Integer(required=True), "already_sent": fields.Boolean(required=True)}
    side_effects = True
    idempotent = True

    def call(self, *, to: str, subject: str, body: str) -> dict[str, Any]:
        assert self.context is not None
        message_id, already = support_payments.send(
            idempotency_key=self.context.idempotency_key, to=to, subject=subject, body=body
        )
        return {"message_id": message_id, "already_sent": already}
