"""Concurrency caps, enforced in SQL: a run over a cap waits in ``queued`` and starts when a slot frees.

Caps count runs in ``running`` (a run parked for approval holds no slot): at most ``max_running_per_user``
per user (``context["user"]["id"]``, or ``context["user"]`` when it is a string) and ``max_running`` overall
(settings, 5 and 50 by default); a Workflow may set tighter ``max_running`` / ``max_running_per_user`` of its
own, and ``one_active_per_subject = True`` to allow one active run per ``subject``. Admission decisions are
serialized (a Postgres advisory lock; SQLite's write lock), so two workers cannot both take the last slot.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from sqlalchemy import case, func, select, text
from sqlalchemy.orm import Session

from pipeline.engine.hooks import Hooks, RunInfo
from pipeline.store import queries
from pipeline.store.tables import QUEUED, RUNNING, WAITING, RunRow

if TYPE_CHECKING:
    from pipeline.definitions.workflow import Workflow
    from pipeline.runtime import Runtime

ADMISSION_LOCK = 0x72_75_62_6F  # "rubo"


def user_of(context: Any) -> str | None:
    user = context.get("user") if isinstance(context, dict) else None
    if isinstance(user, dict):
        user = user.get("id")
    return str(user)[:200] if user is not None else None


def subject_key(subject: Any) -> str | None:
    return None if subject is None else json.dumps(subject, sort_keys=True)[:500]


def refusal(session: Session, runtime: Runtime, run: RunRow, workflow: type[Workflow]) -> str | None:
    """Why ``run`` cannot start now (``None``: it may). Call with the run row locked."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADMISSION_LOCK})
    settings = runtime.settings
    # A workflow's own caps only ever tighten the deployment's.
    limit = min(settings.max_running, getattr(workflow, "max_running", None) or math.inf)
    per_user = min(settings.max_running_per_user, getattr(workflow, "max_running_per_user", None) or math.inf)
    # One statement counts what the three caps need (running overall, of this workflow, of this user).
    running = RunRow.status == RUNNING
    total, of_workflow, of_user = session.execute(
        select(
            func.count(),
            func.coalesce(func.sum(case((RunRow.workflow == run.workflow, 1), else_=0)), 0),
            func.coalesce(func.sum(case((RunRow.user_id == run.user_id, 1), else_=0)), 0),
        ).where(running)
    ).one()
    if total >= settings.max_running:
        return f"{settings.max_running} runs are running"
    if of_workflow >= limit:
        return f"{limit} {run.workflow} runs are running"
    if run.user_id is not None and of_user >= per_user:
        return f"user {run.user_id} has {per_user} runs running"
    if getattr(workflow, "one_active_per_subject", False) and run.subject_key is not None:
        other = session.execute(
            select(RunRow.id)
            .where(
                RunRow.subject_key == run.subject_key,
                RunRow.status.in_((RUNNING, WAITING)),
                RunRow.id != run.id,
            )
            .limit(1)
        ).scalar_one_or_none()
        if other is not None:
            return f"run {other} is active for the same subject"
    return None


def admit_next(runtime: Runtime, *, limit: int = 50) -> int:
    """Ask queued runs that never started to try again (oldest first); returns how many were nudged.

    Costs one indexed read when nobody waits (the common case), so it can follow every run that frees a slot.
    """
    from pipeline.engine.compiler import RESUME_TASK

    with runtime.db.read() as conn:
        waiting = (
            conn.execute(
                select(RunRow.id)
                .where(RunRow.status == QUEUED, RunRow.dispatch_seq == 0)
                .order_by(RunRow.created_at)
                .limit(limit)
            )
            .scalars()
            .all()
        )
        if not waiting:
            return 0
        free = (
            runtime.settings.max_running
            - conn.execute(select(func.count()).select_from(RunRow).where(RunRow.status == RUNNING)).scalar_one()
        )
    # A few more than the free slots: some of the oldest may still be refused by a per-user or workflow cap.
    nudged = waiting[: max(0, min(limit, free * 2))]
    for run_id in nudged:
        runtime.send(RESUME_TASK, run_id, 0)
    return len(nudged)


class AdmissionHooks(Hooks):
    """A run that leaves ``running`` frees a slot, and one that ends frees its subject: let a waiting run have it
    (after the commit)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def _freed(self, info: RunInfo) -> None:
        if info.previous in (RUNNING, WAITING):
            admit_next(self.runtime)

    run_completed = run_failed = run_cancelled = run_waiting = run_set_aside = _freed


def note_waiting(session: Session, run: RunRow, reason: str) -> None:
    """One event per run the first time it has to wait for a slot."""
    if not any(e.type == "run.waiting_for_slot" for e in queries.events(session, run.id)[-5:]):
        queries.add_event(session, run.id, "run.waiting_for_slot", None, reason=reason)
