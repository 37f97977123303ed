"""Leases: who may run an operation right now is decided in SQL, not by the broker.

Before a step body, a model turn or a side-effecting tool call runs, its ledger row is inserted as
``claimed`` with a lease. The holder renews the lease with a heartbeat thread while it works. Another delivery
of the same message (Redis redelivers after its visibility timeout even while the first worker still runs)
finds a live lease and stands back; a lease that ran out means the holder died, and the work may be taken
over — or, for a side effect that may already have happened, handed to a person.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import update
from sqlalchemy.orm import Session

from pipeline.store import queries
from pipeline.store.tables import CLAIMED, DONE, EffectRow, as_utc, utcnow

if TYPE_CHECKING:
    from pipeline.runtime import Runtime

log = logging.getLogger("rubot.leases")


class Claim(enum.Enum):
    ACQUIRED = "acquired"  # the row is new and ours
    DONE = "done"  # already recorded: nothing to do
    HELD = "held"  # another holder is alive
    EXPIRED = "expired"  # the holder died; the caller decides whether to take over (then it is ours)


def claim(
    session: Session, run_id: str, op_key: str, kind: str, *, task_id: str | None, lease_seconds: float
) -> tuple[Claim, EffectRow | None]:
    """Try to claim ``op_key`` (in the caller's transaction, with the run row locked)."""
    row = queries.get_effect(session, run_id, op_key)
    now = utcnow()
    if row is None:
        queries.add_effect(session, run_id, op_key, kind, None, task_id, status=CLAIMED)
        row = queries.get_effect(session, run_id, op_key)
        row.lease_expires_at = now + timedelta(seconds=lease_seconds)
        return Claim.ACQUIRED, row
    if row.status == DONE:
        return Claim.DONE, row
    expires = as_utc(row.lease_expires_at)
    if expires is not None and expires > now:
        return Claim.HELD, row
    return Claim.EXPIRED, row


def take_over(row: EffectRow, *, task_id: str | None, lease_seconds: float) -> None:
    row.task_id = task_id
    row.lease_expires_at = utcnow() + timedelta(seconds=lease_seconds)


def renew(runtime: Runtime, run_id: str, op_key: str) -> bool:
    with runtime.db.transaction() as s:
        result = s.execute(
            update(EffectRow)
            .where(
                EffectRow.run_id == run_id,
                EffectRow.op_key == op_key,
                EffectRow.status == CLAIMED,
            )
            .values(lease_expires_at=utcnow() + timedelta(seconds=runtime.settings.lease_seconds))
        )
        return result.rowcount > 0


@contextmanager
def heartbeat(runtime: Runtime, run_id: str, op_key: str) -> Iterator[None]:
    """Renew the lease on ``op_key`` every third of the lease while the block runs."""
    stop = threading.Event()
    interval = runtime.settings.lease_seconds / 3

    def beat() -> None:
        while not stop.wait(interval):
            try:
                if not renew(runtime, run_id, op_key):
                    return  # recorded or released meanwhile
            except Exception:  # a database hiccup: try again next beat; the lease has slack
                log.warning("could not renew the lease on %s/%s", run_id, op_key, exc_info=True)

    thread = threading.Thread(target=beat, name=f"lease-{op_key}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


def release(runtime: Runtime, run_id: str, op_key: str) -> None:
    """Drop a claim whose work did not happen (the body failed, the model call failed)."""
    with runtime.db.transaction() as s:
        drop(s, run_id, op_key)


def drop(session: Session, run_id: str, op_key: str) -> None:
    row = queries.get_effect(session, run_id, op_key)
    if row is not None and row.status == CLAIMED:
        session.delete(row)
