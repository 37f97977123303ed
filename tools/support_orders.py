"""The refund desk's seeded order store and carrier-tracking service: local, deterministic, no internet.

Orders ``ORD-10001`` … ``ORD-19999`` are generated from their number alone (customer, items, carrier, what
happened to the parcel), so every process — the demo, a worker, the soak's driver — sees the same store without
a file to share. Customers come from ``tools/data/support_customers.json``.

The carrier service answers from each order's seeded shipment fate. Its **outage mode** makes one or more
carriers unreachable: ``SUPPORT_DESK_CARRIER_OUTAGE`` names them (comma-separated, case-insensitive), read at
call time so a test or the demo can switch it on for its own processes.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from pipeline.errors import ToolError

CUSTOMERS_FILE = Path(__file__).resolve().parent / "data" / "support_customers.json"
FIRST_ORDER, LAST_ORDER = 10001, 19999
OUTAGE_VARIABLE = "SUPPORT_DESK_CARRIER_OUTAGE"
TODAY = date(2026, 11, 20)  # the store's "today": seeded dates never move

CARRIERS = ("ParcelNorth", "SwiftPost", "Meridian")
CATALOG: tuple[tuple[str, str, int], ...] = (
    ("SKU-KTL", "Electric kettle, 1.7 l", 4_900),
    ("SKU-HDP", "Noise-cancelling headphones", 18_900),
    ("SKU-MUG", "Stoneware mug, set of 4", 3_200),
    ("SKU-LMP", "Desk lamp with dimmer", 5_900),
    ("SKU-BAG", "Waxed canvas backpack", 12_500),
    ("SKU-CHR", "Ergonomic office chair", 34_900),
    ("SKU-BLN", "Wool blanket", 8_900),
    ("SKU-SPK", "Bluetooth speaker", 7_400),
    ("SKU-PAN", "Cast-iron pan, 28 cm", 4_500),
    ("SKU-WCH", "Smart watch", 22_900),
)
#: What happened to a parcel, by order number modulo 10 (see :func:`fate_of`).
FATES = ("lost", "damaged", "in_transit", "in_transit", "delivered", "delivered", "delivered", "delivered",
         "delivered", "delivered")  # fmt: skip


class CarrierUnavailable(ToolError):
    """The carrier's tracking service cannot be reached (outage mode)."""

    reason = "carrier_unavailable"


@functools.cache
def customers() -> list[dict[str, str]]:
    """The seeded customers: ``{"email", "name"}``, in file order."""
    return list(json.loads(CUSTOMERS_FILE.read_text(encoding="utf-8"))["customers"])


def _mix(number: int, salt: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{salt}:{number}".encode()).digest()[:4], "big")


def order_number(order_id: str) -> int | None:
    """``ORD-10042`` -> 10042, or ``None`` for anything that is not an order id of the store."""
    head, _, digits = order_id.strip().upper().partition("-")
    if head != "ORD" or not digits.isdigit():
        return None
    number = int(digits)
    return number if FIRST_ORDER <= number <= LAST_ORDER else None


def fate_of(number: int) -> str:
    """``lost``, ``damaged``, ``in_transit`` or ``delivered``: what the carrier will report for the order."""
    return FATES[number % 10]


def carrier_of(number: int) -> str:
    # One order in eight ships with Meridian, the carrier the demo and the soak put in outage mode.
    return "Meridian" if number % 8 == 3 else CARRIERS[_mix(number, "carrier") % 2]


def find_order(order_id: str) -> dict[str, Any] | None:
    """The order as the store holds it, or ``None``."""
    number = order_number(order_id)
    if number is None:
        return None
    people = customers()
    customer = people[_mix(number, "customer") % len(people)]
    count = 1 + _mix(number, "lines") % 2
    items = []
    for k in range(count):
        sku, name, price = CATALOG[_mix(number, f"item{k}") % len(CATALOG)]
        items.append({"sku": sku, "name": name, "quantity": 1, "price_cents": price})
    placed = TODAY - timedelta(days=3 + _mix(number, "placed") % 20)
    return {
        "order_id": f"ORD-{number}",
        "customer_email": customer["email"],
        "customer_name": customer["name"],
        "items": items,
        "total_cents": sum(item["price_cents"] for item in items),
        "placed_on": placed.isoformat(),
        "carrier": carrier_of(number),
        "tracking_number": f"{carrier_of(number)[:2].upper()}{_mix(number, 'tracking') % 10**9:09d}",
    }


def orders_of(email: str) -> list[str]:
    """Ids of the orders placed with ``email`` (case-insensitive), in order."""
    wanted = email.strip().casefold()
    return [
        f"ORD-{n}"
        for n in range(FIRST_ORDER, LAST_ORDER + 1)
        if customers()[_mix(n, "customer") % len(customers())]["email"].casefold() == wanted
    ]


def is_customer(email: str) -> bool:
    wanted = email.strip().casefold()
    return any(c["email"].casefold() == wanted for c in customers())


def carriers_down() -> set[str]:
    raw = os.environ.get(OUTAGE_VARIABLE, "")
    return {name.strip().casefold() for name in raw.split(",") if name.strip()}


def track(order: dict[str, Any]) -> dict[str, Any]:
    """The carrier's tracking answer for ``order``; raises :class:`CarrierUnavailable` in outage mode."""
    carrier = order["carrier"]
    if carrier.casefold() in carriers_down():
        raise CarrierUnavailable(
            f"{carrier} tracking is unavailable (HTTP 503 from the carrier); try again later",
            details={"carrier": carrier},
        )
    number = order_number(order["order_id"])
    assert number is not None
    fate = fate_of(number)
    shipped = date.fromisoformat(order["placed_on"]) + timedelta(days=1)
    events = [{"date": shipped.isoformat(), "status": "picked up"}]
    if fate == "delivered":
        events.append({"date": (shipped + timedelta(days=2)).isoformat(), "status": "delivered"})
    elif fate == "damaged":
        events.append({"date": (shipped + timedelta(days=2)).isoformat(), "status": "delivered, parcel damaged"})
    elif fate == "lost":
        events.append({"date": (shipped + timedelta(days=1)).isoformat(), "status": "scan missing at hub"})
    else:
        events.append({"date": (shipped + timedelta(days=1)).isoformat(), "status": "in transit"})
    expected = (TODAY + timedelta(days=2)).isoformat() if fate == "in_transit" else None
    return {
        "order_id": order["order_id"],
        "carrier": carrier,
        "tracking_number": order["tracking_number"],
        "status": fate,
        "expected_delivery": expected,
        "events": events,
    }


#: An order id as it appears in text.
ORDER_ID_IN_TEXT = re.compile(r"\bORD-\d{5}\b")
