"""The refund desk's seeded payment service and mail outbox, kept in SQL so every process shares them.

The payment service records **every call** (``support_payment_calls``: applied, replayed or refused) and keys
refunds by the caller's idempotency key (``support_refunds.idempotency_key`` is unique): a refund whose key was
seen before is answered with the refund already made and not applied again. It also refuses a second refund of
an order (one refund per order, ``order_id`` unique), whatever key it comes with — that is the business rule a
customer who writes twice runs into. The outbox keeps one message per idempotency key the same way.

Where: ``SUPPORT_DESK_DATABASE_URL``, else the database of the Rubot runtime this process has installed (the
tables are the app's own, created with ``create_all``; they are not part of Rubot's migrations). A real
deployment would call its payment provider and mail service with the same key instead.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, ProgrammingError

from pipeline.errors import ToolError

URL_VARIABLE = "SUPPORT_DESK_DATABASE_URL"
#: Seconds the payment provider takes to answer after it applied a refund (default 0). A real provider answers in
#: a fraction of a second; the soak sets this so worker kills land between "applied" and "answered".
LATENCY_VARIABLE = "SUPPORT_DESK_PAYMENT_LATENCY"

metadata = sa.MetaData()
refunds = sa.Table(
    "support_refunds",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("idempotency_key", sa.String(64), nullable=False, unique=True),
    sa.Column("order_id", sa.String(40), nullable=False, unique=True),
    sa.Column("amount_cents", sa.Integer, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)
calls = sa.Table(
    "support_payment_calls",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("idempotency_key", sa.String(64), nullable=False, index=True),
    sa.Column("order_id", sa.String(40), nullable=False),
    sa.Column("amount_cents", sa.Integer, nullable=False),
    sa.Column("outcome", sa.String(20), nullable=False),  # applied | replayed | refused
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)
outbox = sa.Table(
    "support_outbox",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("idempotency_key", sa.String(64), nullable=False, unique=True),
    sa.Column("to_address", sa.String(320), nullable=False),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


class RefundRefused(ToolError):
    """The payment service would not refund (the order was refunded before)."""

    reason = "refund_refused"


@dataclass(frozen=True)
class Refund:
    refund_id: str
    order_id: str
    amount_cents: int
    replayed: bool  # True: the key was seen before; this is the refund made then, not a new one


def database_url() -> str:
    url = os.environ.get(URL_VARIABLE)
    if url:
        return url
    from pipeline import runtime

    return runtime.current().settings.database_url


def engine(url: str | None = None) -> Engine:
    """The engine for ``url`` (default :func:`database_url`), its tables created on first use."""
    url = url or database_url()
    with _lock:
        found = _engines.get(url)
        if found is None:
            args = {"connect_args": {"timeout": 30}} if url.startswith("sqlite") else {"pool_pre_ping": True}
            found = sa.create_engine(url, **args)
            # Another process may create them at the same moment: its tables are the ones we wanted.
            with contextlib.suppress(IntegrityError, ProgrammingError):
                metadata.create_all(found)
            _engines[url] = found
    return found


def _now() -> datetime:
    return datetime.now(UTC)


def refund(*, idempotency_key: str, order_id: str, amount_cents: int, reason: str) -> Refund:
    """Refund ``amount_cents`` on ``order_id`` once per ``idempotency_key``; every call is recorded."""
    db = engine()
    try:
        with db.begin() as c:
            found = c.execute(sa.select(refunds).where(refunds.c.idempotency_key == idempotency_key)).first()
            if found is not None:
                _record(c, idempotency_key, order_id, amount_cents, "replayed")
                return Refund(found.id, found.order_id, found.amount_cents, replayed=True)
            prior = c.execute(sa.select(refunds).where(refunds.c.order_id == order_id)).first()
            if prior is None:
                refund_id = f"re_{secrets.token_hex(8)}"
                c.execute(
                    refunds.insert().values(
                        id=refund_id,
                        idempotency_key=idempotency_key,
                        order_id=order_id,
                        amount_cents=amount_cents,
                        reason=reason,
                        created_at=_now(),
                    )
                )
                _record(c, idempotency_key, order_id, amount_cents, "applied")
                made = Refund(refund_id, order_id, amount_cents, replayed=False)
            else:
                _record(c, idempotency_key, order_id, amount_cents, "refused")
                made = None
    except IntegrityError:
        # A concurrent call with the same key or order committed first: answer as if we had come second.
        return refund(idempotency_key=idempotency_key, order_id=order_id, amount_cents=amount_cents, reason=reason)
    if made is not None:
        time.sleep(float(os.environ.get(LATENCY_VARIABLE) or 0))  # the provider's answer is on its way back
        return made
    raise RefundRefused(
        f"order {order_id} was already refunded ({prior.amount_cents} cents, refund {prior.id} on "
        f"{prior.created_at:%Y-%m-%d}); a second refund is not allowed",
        details={"order_id": order_id, "refund_id": prior.id, "amount_cents": prior.amount_cents},
    )


def _record(c: Any, key: str, order_id: str, amount_cents: int, outcome: str) -> None:
    c.execute(
        calls.insert().values(
            idempotency_key=key, order_id=order_id, amount_cents=amount_cents, outcome=outcome, created_at=_now()
        )
    )


def refunds_of(order_id: str) -> list[dict[str, Any]]:
    """Refunds made on ``order_id`` (at most one)."""
    with engine().connect() as c:
        rows = c.execute(sa.select(refunds).where(refunds.c.order_id == order_id)).all()
    return [{"refund_id": r.id, "amount_cents": r.amount_cents, "created_on": f"{r.created_at:%Y-%m-%d}"} for r in rows]


def send(*, idempotency_key: str, to: str, subject: str, body: str) -> tuple[int, bool]:
    """Put a message in the outbox once per key: (message id, whether it was already there)."""
    db = engine()
    try:
        with db.begin() as c:
            found = c.execute(sa.select(outbox.c.id).where(outbox.c.idempotency_key == idempotency_key)).first()
            if found is not None:
                return found.id, True
            result = c.execute(
                outbox.insert().values(
                    idempotency_key=idempotency_key, to_address=to, subject=subject, body=body, created_at=_now()
                )
            )
            return int(result.inserted_primary_key[0]), False
    except IntegrityError:
        return send(idempotency_key=idempotency_key, to=to, subject=subject, body=body)


@dataclass(frozen=True)
class Ledger:
    """What the payment service and the outbox hold, for reports and checks."""

    refunds: list[dict[str, Any]]
    calls: list[dict[str, Any]]
    messages: list[dict[str, Any]]

    def applied_per_key(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for call in self.calls:
            if call["outcome"] == "applied":
                counts[call["idempotency_key"]] = counts.get(call["idempotency_key"], 0) + 1
        return counts

    def refunds_per_order(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self.refunds:
            counts[row["order_id"]] = counts.get(row["order_id"], 0) + 1
        return counts


def ledger(url: str | None = None) -> Ledger:
    db = engine(url)
    with db.connect() as c:
        return Ledger(
            refunds=[dict(r._mapping) for r in c.execute(sa.select(refunds).order_by(refunds.c.created_at))],
            calls=[dict(r._mapping) for r in c.execute(sa.select(calls).order_by(calls.c.id))],
            messages=[dict(r._mapping) for r in c.execute(sa.select(outbox).order_by(outbox.c.id))],
        )
