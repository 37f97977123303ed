"""Checking the event trail: :func:`verify` walks each run's hash chain (see :mod:`pipeline.store.chain`)."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

from sqlalchemy import select
from sqlalchemy.orm import Session

from pipeline import runtime
from pipeline.runs import Run
from pipeline.store import chain
from pipeline.store.chain import ChainBreak
from pipeline.store.tables import RunRow

__all__ = ["ChainBreak", "verify"]


def _run_ids(rt: runtime.Runtime, batch: int = 500) -> Iterator[str]:
    after = ""
    while True:

        def page(s: Session, after: str = after) -> list[str]:
            return list(
                s.execute(select(RunRow.id).where(RunRow.id > after).order_by(RunRow.id).limit(batch)).scalars()
            )

        ids = rt.db.reading(page)
        yield from ids
        if len(ids) < batch:
            return
        after = ids[-1]


def verify(run: Run | str | None = None) -> list[ChainBreak]:
    """Check the event chain of ``run`` (or of every run): the first broken link of each run that has one.

    An empty list means every chain checked is intact: no event was changed, removed or inserted behind
    Rubot's back. ``RunNotFound`` when ``run`` names no run.
    """
    rt = runtime.current()
    ids = [run if isinstance(run, str) else run.id] if run is not None else _run_ids(rt)
    broken = []
    for run_id in ids:
        found = rt.db.reading(partial(chain.verify, run_id=run_id))
        if found is not None:
            broken.append(found)
    return broken
