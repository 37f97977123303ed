"""What a schedule's tick does on a worker (``rubot.scheduled``), and batches: one tick fanned out over many
subjects.

1. The tick's run id (or batch id) is derived from the schedule and the tick (:mod:`pipeline.schedules`), so a
   second beat sending the same tick, or a redelivered message, launches nothing new.
2. A plain schedule launches one run (``pipeline.api.create`` under that id; the insert that loses a race is
   not an error).
3. A batch (a workflow whose ``batch(tick)`` returns items, or a settings entry with ``batch``) first records the
   batch (``launching``), then creates one run per item under an id derived from the batch and the item's
   subject, then marks it ``launched`` with its total. A worker that dies halfway leaves a ``launching`` batch;
   the redelivered message carries on where it stopped (existing runs are found by id). The runs start under
   the concurrency caps like any other: a run over a cap waits in ``queued``.

Progress — how many runs of a batch are queued, running, waiting, completed, failed — is counted from
``rubot_runs`` (:func:`progress`), shown by ``rubot batches`` / ``rubot batch show ID`` and the console's
Batches page.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from pipeline import api, schedules
from pipeline.definitions.registry import workflow_of
from pipeline.engine import transitions
from pipeline.errors import ConfigurationError, RunNotFound
from pipeline.runtime import Runtime
from pipeline.store.tables import LAUNCHING, BatchRow, RunRow

log = logging.getLogger("rubot.batches")


def fire(runtime: Runtime, name: str, tick: str | None = None) -> str:
    """Launch schedule ``name``'s tick (default: the current one); returns the run or batch id."""
    item = schedules.find(runtime, name)
    tick = tick or schedules.stamp_tick(item.schedule)
    moment = datetime.fromisoformat(tick)
    items = _items(runtime, item, moment)
    context = {**(item.context or {}), "schedule": {"name": name, "tick": tick}}
    if items is None:
        run_id = schedules.run_id_for(name, tick)
        return api.create(
            runtime,
            item.workflow,
            input=item.input,
            subject=item.subject,
            context=context,
            run_id=run_id,
            record_invalid=True,
        )
    return launch_batch(runtime, item, moment, tick, items, context)


def _items(runtime: Runtime, item: schedules.Scheduled, tick: datetime) -> Iterable[Any] | None:
    if item.batch:
        module, _, attribute = item.batch.partition(":")
        try:
            function = getattr(importlib.import_module(module), attribute)
        except (ImportError, AttributeError) as exc:
            raise ConfigurationError(f"schedule {item.name!r}: cannot load batch {item.batch!r}: {exc}") from exc
        return function(tick)
    return workflow_of(runtime, item.workflow).batch(tick)


def launch_batch(
    runtime: Runtime, item: schedules.Scheduled, moment: datetime, tick: str, items: Iterable[Any], context: Any
) -> str:
    batch_id = schedules.batch_id_for(item.name, tick)
    try:
        with runtime.db.transaction() as s:
            existing = s.get(BatchRow, batch_id)
            if existing is not None and existing.status != LAUNCHING:
                return batch_id  # this tick was launched already
            if existing is None:
                transitions.start_batch(s, batch_id, schedule=item.name, workflow=item.workflow, tick=moment)
    except IntegrityError:
        return batch_id  # another beat's message for the same tick won the race and launches it
    total = 0
    try:
        for entry in items:
            subject, input = entry if isinstance(entry, tuple) and len(entry) == 2 else (entry, item.input)
            run_id = f"run_{_digest(batch_id, json.dumps(subject, sort_keys=True, default=str))}"
            api.create(
                runtime,
                item.workflow,
                input=input,
                subject=subject,
                context=context,
                run_id=run_id,
                record_invalid=True,
                batch_id=batch_id,
            )
            total += 1
    except Exception as exc:
        with runtime.db.transaction() as s:
            transitions.batch_failed(
                s, s.get_one(BatchRow, batch_id), {"reason": "batch_failed", "message": f"{type(exc).__name__}: {exc}"}
            )
        log.exception("batch %s of schedule %s failed after %d runs", batch_id, item.name, total)
        return batch_id
    with runtime.db.transaction() as s:
        transitions.batch_launched(s, s.get_one(BatchRow, batch_id), total=total)
    return batch_id


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class BatchView:
    """A batch and how far its runs got (counts by run status)."""

    id: str
    schedule: str
    workflow: str
    tick: datetime | None
    status: str
    total: int | None
    error: Any
    created_at: datetime
    finished_at: datetime | None
    counts: dict[str, int]

    @property
    def launched(self) -> int:
        return sum(self.counts.values())

    @property
    def finished(self) -> int:
        from pipeline.store.tables import TERMINAL

        return sum(n for status, n in self.counts.items() if status in TERMINAL)

    @property
    def done(self) -> bool:
        return self.status != LAUNCHING and self.finished == self.launched


def _view(row: BatchRow, counts: dict[str, int]) -> BatchView:
    return BatchView(
        row.id,
        row.schedule,
        row.workflow,
        row.tick,
        row.status,
        row.total,
        row.error,
        row.created_at,
        row.finished_at,
        counts,
    )


def progress(runtime: Runtime, batch_id: str) -> BatchView:
    """One batch with its run counts; ``RunNotFound`` if there is none."""
    with runtime.db.transaction() as s:
        row = s.get(BatchRow, batch_id)
        if row is None:
            raise RunNotFound(f"no batch with id {batch_id!r}", reason="batch_not_found")
        counts = dict(
            s.execute(
                select(RunRow.status, func.count()).where(RunRow.batch_id == batch_id).group_by(RunRow.status)
            ).all()
        )
        return _view(row, counts)


def list_batches(runtime: Runtime, *, limit: int = 50) -> list[BatchView]:
    """The newest batches first, each with its run counts."""
    with runtime.db.transaction() as s:
        rows = list(s.execute(select(BatchRow).order_by(BatchRow.created_at.desc()).limit(limit)).scalars())
        counts: dict[str, dict[str, int]] = {row.id: {} for row in rows}
        if rows:
            query = (
                select(RunRow.batch_id, RunRow.status, func.count())
                .where(RunRow.batch_id.in_(list(counts)))
                .group_by(RunRow.batch_id, RunRow.status)
            )
            for batch_id, status, n in s.execute(query):
                counts[str(batch_id)][status] = n
        return [_view(row, counts[row.id]) for row in rows]


def runs_of(runtime: Runtime, batch_id: str, *, limit: int = 200) -> list[Any]:
    """The runs of a batch, oldest first."""
    from pipeline.runs import Run

    with runtime.db.transaction() as s:
        rows = s.execute(
            select(RunRow).where(RunRow.batch_id == batch_id).order_by(RunRow.created_at, RunRow.id).limit(limit)
        ).scalars()
        return [Run(runtime, row) for row in rows]
