"""Tamper evidence: every event of a run is a link in a hash chain.

An event carries ``seq`` (1, 2, 3 ... per run) and ``hash = sha256(previous hash : seq : content)``, where
``content`` is the SHA-256 of a canonical JSON of the event's own fields (run id, type, step, data, time). The
run row holds the chain's head (``event_seq``, ``event_hash``), so an event deleted from the end is noticed too.

Appends to one run's chain are serialized by the run row: the head is read under the row's lock — by
``queries.lock_run``, or by :func:`append` itself with ``FOR UPDATE`` when the caller holds no lock (SQLite: the
transaction already holds the database's write lock, ``BEGIN IMMEDIATE``) — and kept in the session, so later
appends of the same transaction read nothing; the new head is written once, just before the commit (with the
run's other changes when its row object is in the session). The one-statement fast path on Postgres
(``transitions.record_step_at_once``) computes the same links in SQL (:func:`pg_link`) from the head it locks in
that statement.

:func:`verify` walks a chain and names its first broken link. A chain proves that nobody changed, inserted or
removed an event *without also rewriting every later hash and the head*; anyone who can do that (write access to
the database and this algorithm) can forge a consistent chain, so copy heads elsewhere if that matters.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from pipeline.errors import RunNotFound
from pipeline.store.tables import EventRow, RunRow, as_utc

_HEADS = "rubot_chain_heads"  # session.info: run id -> [seq, hash] read under the run's lock in this transaction
_DIRTY = "rubot_chain_dirty"  # session.info: run ids whose head changed in this transaction


def canonical_time(moment: datetime | str) -> str:
    """A timestamp as both databases give it back: UTC, microseconds (SQLite's raw text is parsed first)."""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return as_utc(moment).astimezone(UTC).isoformat(timespec="microseconds")  # type: ignore[union-attr]


def content_digest(run_id: str, type: str, step: str | None, data: Any, created_at: datetime) -> str:
    """SHA-256 of the canonical JSON of an event's fields (keys sorted, data as it reads back from SQL)."""
    body = {
        "run_id": run_id,
        "type": type,
        "step": step,
        "data": json.loads(json.dumps(data)) if data is not None else None,
        "created_at": canonical_time(created_at),
    }
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def link(previous: str | None, seq: int, content: str) -> str:
    """The hash of event ``seq`` chained to ``previous`` (``None`` before a run's first event)."""
    return hashlib.sha256(f"{previous or ''}:{seq}:{content}".encode()).hexdigest()


def pg_link(previous: str, seq: str, content: str) -> str:
    """:func:`link` as a Postgres expression over three SQL expressions (text, integer, text)."""
    return (
        f"encode(sha256(convert_to(COALESCE({previous}, '') || ':' || ({seq})::text || ':' || {content}, "
        "'UTF8')), 'hex')"
    )


def _head(session: Session, run_id: str) -> list[Any]:
    heads: dict[str, list[Any]] = session.info.setdefault(_HEADS, {})
    head = heads.get(run_id)
    if head is None:
        runs = RunRow.__table__
        query = select(runs.c.event_seq, runs.c.event_hash).where(runs.c.id == run_id).with_for_update()
        row = session.execute(query).one_or_none()
        if row is None:
            session.flush()  # a run inserted in this transaction and not flushed yet
            row = session.execute(query).one_or_none()
        if row is None:
            raise RunNotFound(f"no run with id {run_id!r}")
        head = heads[run_id] = [row.event_seq or 0, row.event_hash]
        if _DIRTY not in session.info:
            session.info[_DIRTY] = set()
            event.listen(session, "before_commit", _write_heads)
    return head


def seed_head(session: Session, run_id: str, seq: int | None, hash: str | None) -> None:
    """Tell the session the head of ``run_id``'s chain, read by the caller under the run's lock."""
    if run_id not in session.info.get(_HEADS, {}):
        session.info.setdefault(_HEADS, {})[run_id] = [seq or 0, hash]
        if _DIRTY not in session.info:
            session.info[_DIRTY] = set()
            event.listen(session, "before_commit", _write_heads)


def append(
    session: Session, run_id: str, type: str, step: str | None, data: Any, created_at: datetime
) -> dict[str, Any]:
    """The values of a new event of ``run_id``, chained to the previous one (the caller inserts them)."""
    head = _head(session, run_id)
    seq = head[0] + 1
    digest = link(head[1], seq, content_digest(run_id, type, step, data, created_at))
    head[0], head[1] = seq, digest
    session.info[_DIRTY].add(run_id)
    return {
        "run_id": run_id,
        "type": type,
        "step": step,
        "data": data,
        "created_at": created_at,
        "seq": seq,
        "hash": digest,
    }


def _write_heads(session: Session) -> None:
    dirty: set[str] = session.info.get(_DIRTY) or set()
    heads = session.info.get(_HEADS, {})
    for run_id in sorted(dirty):
        seq, digest = heads[run_id]
        loaded = session.identity_map.get(identity_key(RunRow, run_id))
        if loaded is not None:  # flushed with the run's other changes: usually no statement of its own
            loaded.event_seq, loaded.event_hash = seq, digest
        else:
            session.execute(update(RunRow).where(RunRow.id == run_id).values(event_seq=seq, event_hash=digest))
    dirty.clear()


# --- verification ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainBreak:
    """The first broken link of a run's chain: at ``seq``, ``expected`` is what an intact chain has there."""

    run_id: str
    seq: int
    problem: str  # "changed" | "missing" | "unexpected" | "head"
    expected: str
    found: str

    def describe(self) -> str:
        return f"run {self.run_id}: event {self.seq} {self.problem}: expected {self.expected}, found {self.found}"


def verify_rows(run_id: str, rows: list[Any], head_seq: int | None, head_hash: str | None) -> ChainBreak | None:
    """Check one run's events (ordered by ``seq``) against the chain and the run's head."""
    previous: str | None = None
    expected_seq = 0
    for row in rows:
        expected_seq += 1
        if row.seq is None or row.seq != expected_seq:
            if row.seq is not None and row.seq > expected_seq:
                return ChainBreak(run_id, expected_seq, "missing", f"event {expected_seq}", f"event {row.seq}")
            return ChainBreak(
                run_id, expected_seq, "unexpected", f"event {expected_seq}", f"seq {row.seq} (id {row.id})"
            )
        want = link(previous, row.seq, content_digest(run_id, row.type, row.step, row.data, row.created_at))
        if row.hash != want:
            return ChainBreak(run_id, row.seq, "changed", f"hash {want}", f"hash {row.hash}")
        previous = row.hash
    if (head_seq or 0) != expected_seq or (head_seq and head_hash != previous):
        return ChainBreak(
            run_id,
            expected_seq + 1 if (head_seq or 0) > expected_seq else expected_seq,
            "missing" if (head_seq or 0) > expected_seq else "head",
            f"{head_seq or 0} events ending in hash {head_hash}",
            f"{expected_seq} events ending in hash {previous}",
        )
    return None


def verify(session: Session, run_id: str) -> ChainBreak | None:
    """The first broken link of ``run_id``'s event chain, or ``None`` when it is intact."""
    runs = RunRow.__table__
    head = session.execute(select(runs.c.event_seq, runs.c.event_hash).where(runs.c.id == run_id)).one_or_none()
    if head is None:
        raise RunNotFound(f"no run with id {run_id!r}")
    rows = list(
        session.execute(
            select(EventRow).where(EventRow.run_id == run_id).order_by(EventRow.seq.nulls_first(), EventRow.id)
        ).scalars()
    )
    return verify_rows(run_id, rows, head.event_seq, head.event_hash)
