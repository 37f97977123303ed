"""Replay and fork: ``pipeline.replay`` starts a new run from another run's records; ``pipeline.diff`` says
where two runs' records part (see :mod:`pipeline.engine.forks`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from pipeline import runtime
from pipeline.api import create, get_run
from pipeline.definitions import registry
from pipeline.engine import forks, transitions
from pipeline.engine.forks import Departure
from pipeline.runs import Run
from pipeline.store import queries
from pipeline.store.tables import PENDING, RunRow

__all__ = ["Departure", "diff", "replay"]


def _id(run: Run | str) -> str:
    return run if isinstance(run, str) else run.id


def replay(run: Run | str, from_step: str | None = None) -> Run:
    """Start a new run of ``run``'s workflow, with its input, context and subject, linked to it (``replay_of``).

    Everything the source recorded before ``from_step`` is reused — model responses, tool results, step
    results and decided approvals — without calling the model or any tool again; from there on the new run runs
    live. ``from_step`` is a step name, an agent turn (``"research/turn-4"``: that agent's turns 1-3 and their
    tool calls are reused), or ``None`` (reuse every recorded result: the new run ends as far as the source
    got). Returns at once, like :func:`pipeline.enqueue`; ``InvalidForkPoint`` when ``from_step`` is wrong.
    """
    rt = runtime.current()
    source_id = _id(run)

    def read(s: Session) -> tuple[RunRow, list[Any], list[Any]]:
        return queries.get_run(s, source_id), queries.effects(s, source_id), queries.approvals(s, source_id)

    source, rows, approvals = rt.db.reading(read)
    workflow = registry.workflow_of(rt, source.workflow)
    point = forks.parse(workflow, from_step, rows)
    reused = forks.reused(workflow, point, rows)
    keys = {r.op_key for r in reused}
    decided = [a for a in approvals if a.step in keys and a.status != PENDING]

    def seed(s: Session, row: RunRow) -> None:
        transitions.seed_replay(s, row, source, from_step=point.label, rows=reused, approvals=decided)

    new_id = create(rt, workflow, input=source.input, subject=source.subject, context=source.context, seed=seed)
    return get_run(new_id)


def diff(a: Run | str, b: Run | str, *, rt: runtime.Runtime | None = None) -> Departure | None:
    """Where run ``b`` departed from run ``a``: the first step, agent turn or tool call (in the order ``a``
    recorded them) whose recorded output differs or that only one of them recorded; ``None`` when none does.
    ``rt``: the runtime to read (default: the process's current one)."""
    rt = rt or runtime.current()
    a_rows = rt.db.reading(lambda s: (queries.get_run(s, _id(a)), queries.effects(s, _id(a)))[1])
    b_rows = rt.db.reading(lambda s: (queries.get_run(s, _id(b)), queries.effects(s, _id(b)))[1])
    return forks.departure(a_rows, b_rows)
