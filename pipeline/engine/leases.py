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
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
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
) -> tuple[Claim, EffectRow]:
    """Try to claim ``op_key`` (in the caller's transaction, with the run row locked)."""
    row = queries.get_effect(session, run_id, op_key)
    now = utcnow()
    if row is None:
        row = queries.add_effect(
            session,
            run_id,
            op_key,
            kind,
            None,
            task_id,
            status=CLAIMED,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
        )
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
        return bool(result.rowcount)  # type: ignore[attr-defined]


class Beat:
    """One operation in flight whose lease the process's pulse keeps alive.

    ``claimed`` says whether a lease row exists for it. Work that starts without one (a step without side
    effects, recorded in a single transaction when it finishes) is claimed *lazily* by the pulse once it has run
    for a third of a lease: a slow step then holds a lease like any other, so a redelivered copy stands back and
    a dead worker's step is taken over, while a fast step never pays for a claim.
    """

    def __init__(
        self, runtime: Runtime, run_id: str, op_key: str, *, claimed: bool, lazy_kind: str | None, task_id: str | None
    ) -> None:
        self.runtime, self.run_id, self.op_key = runtime, run_id, op_key
        self.claimed, self.lazy_kind, self.task_id = claimed, lazy_kind, task_id
        self.interval = runtime.settings.lease_seconds / 3
        self.due = time.monotonic() + self.interval
        self.done = False
        self.lock = threading.Lock()

    def tick(self) -> None:
        with self.lock:
            if self.done:
                return
            try:
                if self.claimed:
                    if not renew(self.runtime, self.run_id, self.op_key):
                        self.done = True  # recorded, released or taken over meanwhile: nothing left to renew
                elif self.lazy_kind is not None:
                    self.claimed = _lazy_claim(self)
                    if not self.claimed:
                        self.lazy_kind = None  # someone else holds or recorded it; the record decides
            except Exception:  # a database hiccup: try again next beat; the lease has slack
                log.warning("could not renew the lease on %s/%s", self.run_id, self.op_key, exc_info=True)
            self.due = time.monotonic() + self.interval

    def finish(self) -> bool:
        """Stop beating; True when a lease row exists for this work (claimed up front or lazily)."""
        with self.lock:
            self.done = True
            return self.claimed


def _lazy_claim(beat: Beat) -> bool:
    assert beat.lazy_kind is not None
    try:
        with beat.runtime.db.transaction() as s:
            outcome, _ = claim(
                s,
                beat.run_id,
                beat.op_key,
                beat.lazy_kind,
                task_id=beat.task_id,
                lease_seconds=beat.runtime.settings.lease_seconds,
            )
            return outcome is Claim.ACQUIRED
    except IntegrityError:  # another delivery inserted its row first
        return False


class _Pulse:
    """One thread per process renewing the leases of every operation in flight (not one thread per operation)."""

    def __init__(self) -> None:
        self.beats: set[Beat] = set()
        self.wake = threading.Condition()
        self.pid = 0

    def add(self, beat: Beat) -> None:
        with self.wake:
            if self.pid != os.getpid():  # first use in this process (or a forked pool child): start the thread
                self.pid = os.getpid()
                self.beats = set()
                threading.Thread(target=self._run, name="rubot-lease-pulse", daemon=True).start()
            self.beats.add(beat)
            self.wake.notify()

    def remove(self, beat: Beat) -> None:
        with self.wake:
            self.beats.discard(beat)

    def _run(self) -> None:
        while True:
            with self.wake:
                now = time.monotonic()
                due = [b for b in self.beats if b.due <= now]
                if not due:
                    nearest = min((b.due for b in self.beats), default=now + 60)
                    self.wake.wait(max(0.0, nearest - now))
                    continue
            for beat in due:
                beat.tick()


_pulse = _Pulse()


@contextmanager
def heartbeat(
    runtime: Runtime,
    run_id: str,
    op_key: str,
    *,
    claimed: bool = True,
    lazy_kind: str | None = None,
    task_id: str | None = None,
) -> Iterator[Beat]:
    """Keep ``op_key``'s lease alive while the block runs (renewed every third of a lease).

    With ``claimed=False`` and a ``lazy_kind``, the work is claimed only if it outlives a third of a lease.
    """
    beat = Beat(runtime, run_id, op_key, claimed=claimed, lazy_kind=lazy_kind, task_id=task_id)
    _pulse.add(beat)
    try:
        yield beat
    finally:
        beat.finish()
        _pulse.remove(beat)


def release(runtime: Runtime, run_id: str, op_key: str) -> None:
    """Drop a claim whose work did not happen (the body failed, the model call failed)."""
    with runtime.db.transaction() as s:
        drop(s, run_id, op_key)


def drop(session: Session, run_id: str, op_key: str) -> None:
    row = queries.get_effect(session, run_id, op_key)
    if row is not None and row.status == CLAIMED:
        session.delete(row)
