"""Operational metrics computed from SQL, so every web process, worker and CLI agrees on the same numbers.

:func:`collect` answers, per workflow and per agent, for the runs created in a time window: runs by status, turns
per run (p50/p95), tokens and cost per run, the tool error rate, failure reasons and how long approvals waited.
``rubot stats``, the console's dashboard and the Prometheus ``/metrics`` endpoint all call it.

Why SQL and not in-process counters: Rubot runs in many worker processes on many machines; counters kept in one
process would each see a slice. The ledger and the event trail already hold every fact, so a query at read time
is the one source everybody shares.

Percentiles are *nearest rank* (the value at position ``ceil(p/100 * n)`` of the sorted values), computed in SQL
with window functions that SQLite and Postgres both have, so the answer never depends on the database.
A run's turns are its recorded model turns (``rubot_effects`` rows of kind ``model_turn``); an agent's are the
``model.turn`` events that name it, grouped per run and step.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Integer, Select, and_, case, cast, func, literal, or_, select
from sqlalchemy.orm import Session

from pipeline.errors import ConfigurationError
from pipeline.store.tables import (
    DEAD_LETTER,
    DONE,
    FAILED,
    PENDING,
    RUN_STATUSES,
    ApprovalRow,
    EffectRow,
    EventRow,
    RunRow,
    utcnow,
)

#: Statuses counted as failures (with their ``error.reason``).
FAILURE_STATUSES = (FAILED, DEAD_LETTER)
QUANTILES = (50, 95)
_SPAN = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$")
_UNIT = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """``24h``, ``30m``, ``7d``, ``2w`` (that long before ``now``) or an ISO date/datetime (UTC unless it says).

    Anything else is a :class:`~pipeline.errors.ConfigurationError` naming the accepted forms.
    """
    now = now or utcnow()
    match = _SPAN.match(text or "")
    if match:
        amount = int(match[1])
        if amount <= 0:
            raise ConfigurationError(f"--since {text!r} must be a positive span such as 24h or 7d")
        return now - timedelta(**{_UNIT[match[2]]: amount})
    try:
        moment = datetime.fromisoformat((text or "").strip())
    except ValueError:
        raise ConfigurationError(
            f"--since {text!r} is not a span (30m, 24h, 7d, 2w) or an ISO date (2026-11-01, 2026-11-01T08:00)"
        ) from None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    if moment > now:
        raise ConfigurationError(f"--since {text!r} is in the future")
    return moment


@dataclass(frozen=True)
class Quantiles:
    """Nearest-rank p50 and p95 (``None`` without values)."""

    p50: float | None = None
    p95: float | None = None


@dataclass(frozen=True)
class WorkflowStats:
    workflow: str
    runs: int
    by_status: dict[str, int]
    turns_per_run: Quantiles
    tokens: int
    cost_micros: int
    cost_per_run_micros: Quantiles
    tool_calls: int
    tool_errors: int
    failures: dict[str, int]
    approvals_decided: int
    approvals_pending: int
    approval_wait_seconds: Quantiles

    @property
    def tokens_per_run(self) -> float:
        return self.tokens / self.runs if self.runs else 0.0

    @property
    def cost_per_run_usd(self) -> float:
        return self.cost_micros / self.runs / 1_000_000 if self.runs else 0.0

    @property
    def tool_error_rate(self) -> float:
        return self.tool_errors / self.tool_calls if self.tool_calls else 0.0


@dataclass(frozen=True)
class AgentStats:
    """An agent's turns, grouped per agent step of a run (``runs``: how many such step runs)."""

    agent: str
    runs: int
    turns: int
    turns_per_run: Quantiles
    tokens: int
    cost_micros: int
    tool_calls: int
    tool_errors: int

    @property
    def tool_error_rate(self) -> float:
        return self.tool_errors / self.tool_calls if self.tool_calls else 0.0


@dataclass(frozen=True)
class Stats:
    since: datetime
    until: datetime
    workflows: list[WorkflowStats] = field(default_factory=list)
    agents: list[AgentStats] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON: what ``rubot stats --json`` prints."""

        def workflow(w: WorkflowStats) -> dict[str, Any]:
            return {
                **asdict(w),
                "tokens_per_run": w.tokens_per_run,
                "cost_usd": w.cost_micros / 1_000_000,
                "cost_per_run_usd": w.cost_per_run_usd,
                "tool_error_rate": w.tool_error_rate,
            }

        def agent(a: AgentStats) -> dict[str, Any]:
            return {**asdict(a), "cost_usd": a.cost_micros / 1_000_000, "tool_error_rate": a.tool_error_rate}

        return {
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "workflows": [workflow(w) for w in self.workflows],
            "agents": [agent(a) for a in self.agents],
        }


def collect(session: Session, *, since: datetime, until: datetime | None = None, workflow: str | None = None) -> Stats:
    """The metrics of the runs created in ``[since, until)`` (optionally of one workflow): eight queries."""
    until = until or utcnow()
    in_window = [RunRow.created_at >= since, RunRow.created_at < until]
    if workflow:
        in_window.append(RunRow.workflow == workflow)

    totals: dict[str, dict[str, Any]] = defaultdict(lambda: {"runs": 0, "by_status": {}, "tokens": 0, "cost": 0})
    tokens = RunRow.input_tokens + RunRow.output_tokens + RunRow.cache_write_tokens + RunRow.cache_read_tokens
    for name, status, count, tok, cost in session.execute(
        select(RunRow.workflow, RunRow.status, func.count(), func.sum(tokens), func.sum(RunRow.cost_micros))
        .where(*in_window)
        .group_by(RunRow.workflow, RunRow.status)
    ):
        entry = totals[name]
        entry["runs"] += count
        entry["by_status"][status] = count
        entry["tokens"] += int(tok or 0)
        entry["cost"] += int(cost or 0)

    turns = (
        select(EffectRow.run_id, func.count().label("n"))
        .where(EffectRow.kind == "model_turn", EffectRow.status == DONE)
        .group_by(EffectRow.run_id)
        .subquery()
    )
    turn_quantiles = quantiles(
        session,
        select(RunRow.workflow.label("key"), func.coalesce(turns.c.n, 0).label("value"))
        .select_from(RunRow)
        .outerjoin(turns, turns.c.run_id == RunRow.id)
        .where(*in_window),
    )
    cost_quantiles = quantiles(
        session, select(RunRow.workflow.label("key"), RunRow.cost_micros.label("value")).where(*in_window)
    )

    tool_calls: dict[str, tuple[int, int]] = {}
    is_error = EffectRow.result["is_error"].as_boolean()
    for name, calls, errors in session.execute(
        select(RunRow.workflow, func.count(), func.sum(case((is_error, 1), else_=0)))
        .join(EffectRow, EffectRow.run_id == RunRow.id)
        .where(*in_window, EffectRow.kind == "tool_call", EffectRow.status == DONE)
        .group_by(RunRow.workflow)
    ):
        tool_calls[name] = (int(calls), int(errors or 0))

    failures: dict[str, dict[str, int]] = defaultdict(dict)
    reason = func.coalesce(RunRow.error["reason"].as_string(), literal("unknown"))
    for name, why, count in session.execute(
        select(RunRow.workflow, reason, func.count())
        .where(*in_window, RunRow.status.in_(FAILURE_STATUSES))
        .group_by(RunRow.workflow, reason)
    ):
        failures[name][why] = count

    approvals: dict[str, tuple[int, int]] = {}
    for name, decided, pending in session.execute(
        select(
            RunRow.workflow,
            func.sum(case((ApprovalRow.decided_at.is_not(None), 1), else_=0)),
            func.sum(case((ApprovalRow.status == PENDING, 1), else_=0)),
        )
        .join(ApprovalRow, ApprovalRow.run_id == RunRow.id)
        .where(*in_window)
        .group_by(RunRow.workflow)
    ):
        approvals[name] = (int(decided or 0), int(pending or 0))
    wait_quantiles = quantiles(
        session,
        select(
            RunRow.workflow.label("key"),
            seconds_between(session, ApprovalRow.created_at, ApprovalRow.decided_at).label("value"),
        )
        .join(ApprovalRow, ApprovalRow.run_id == RunRow.id)
        .where(*in_window, ApprovalRow.decided_at.is_not(None)),
    )

    workflows = [
        WorkflowStats(
            workflow=name,
            runs=entry["runs"],
            by_status={s: entry["by_status"][s] for s in RUN_STATUSES if s in entry["by_status"]},
            turns_per_run=turn_quantiles.get(name, Quantiles()),
            tokens=entry["tokens"],
            cost_micros=entry["cost"],
            cost_per_run_micros=cost_quantiles.get(name, Quantiles()),
            tool_calls=tool_calls.get(name, (0, 0))[0],
            tool_errors=tool_calls.get(name, (0, 0))[1],
            failures=dict(sorted(failures.get(name, {}).items())),
            approvals_decided=approvals.get(name, (0, 0))[0],
            approvals_pending=approvals.get(name, (0, 0))[1],
            approval_wait_seconds=wait_quantiles.get(name, Quantiles()),
        )
        for name, entry in sorted(totals.items())
    ]
    return Stats(since=since, until=until, workflows=workflows, agents=agent_stats(session, in_window))


def agent_stats(session: Session, in_window: Iterable[Any]) -> list[AgentStats]:
    """Per agent: its step runs (one agent step of one run), turns, tokens, cost and tool calls."""
    in_window = list(in_window)
    agent = func.coalesce(EventRow.data["agent"].as_string(), EventRow.step)
    usage = [EventRow.data[("usage", k)].as_integer() for k in ("input_tokens", "output_tokens")]
    usage += [EventRow.data[("usage", k)].as_integer() for k in ("cache_write_tokens", "cache_read_tokens")]
    step_runs = (
        select(
            EventRow.run_id.label("run_id"),
            EventRow.step.label("step"),
            agent.label("agent"),
            func.count().label("turns"),
            func.sum(sum((func.coalesce(u, 0) for u in usage), cast(literal(0), Integer))).label("tokens"),
            func.sum(func.coalesce(EventRow.data["cost_micros"].as_integer(), 0)).label("cost"),
        )
        .join(RunRow, RunRow.id == EventRow.run_id)
        .where(*in_window, EventRow.type == "model.turn")
        .group_by(EventRow.run_id, EventRow.step, agent)
        .subquery()
    )
    found: dict[str, dict[str, int]] = {}
    for name, runs, turns, tokens, cost in session.execute(
        select(
            step_runs.c.agent,
            func.count(),
            func.sum(step_runs.c.turns),
            func.sum(step_runs.c.tokens),
            func.sum(step_runs.c.cost),
        ).group_by(step_runs.c.agent)
    ):
        found[name] = {"runs": runs, "turns": int(turns or 0), "tokens": int(tokens or 0), "cost": int(cost or 0)}
    per_run = quantiles(session, select(step_runs.c.agent.label("key"), step_runs.c.turns.label("value")))
    is_error = EffectRow.result["is_error"].as_boolean()
    calls: dict[str, tuple[int, int]] = {}
    for name, count, errors in session.execute(
        select(step_runs.c.agent, func.count(), func.sum(case((is_error, 1), else_=0)))
        .join(
            EffectRow,
            and_(
                EffectRow.run_id == step_runs.c.run_id,
                EffectRow.op_key.like(step_runs.c.step + literal("/turn-%")),
            ),
        )
        .where(EffectRow.kind == "tool_call", EffectRow.status == DONE)
        .group_by(step_runs.c.agent)
    ):
        calls[name] = (int(count), int(errors or 0))
    return [
        AgentStats(
            agent=name,
            runs=entry["runs"],
            turns=entry["turns"],
            turns_per_run=per_run.get(name, Quantiles()),
            tokens=entry["tokens"],
            cost_micros=entry["cost"],
            tool_calls=calls.get(name, (0, 0))[0],
            tool_errors=calls.get(name, (0, 0))[1],
        )
        for name, entry in sorted(found.items())
    ]


def quantiles(session: Session, values: Select[Any, Any]) -> dict[str, Quantiles]:
    """Nearest-rank p50/p95 of ``values`` (columns ``key`` and ``value``) per key, in one query."""
    sub = values.subquery()
    ranked = select(
        sub.c.key,
        sub.c.value,
        func.row_number().over(partition_by=sub.c.key, order_by=sub.c.value).label("rn"),
        func.count().over(partition_by=sub.c.key).label("n"),
    ).subquery()
    ranks = {p: (ranked.c.n * p + 99) // 100 for p in QUANTILES}
    found: dict[str, dict[int, float]] = defaultdict(dict)
    for key, value, rn, n in session.execute(
        select(ranked.c.key, ranked.c.value, ranked.c.rn, ranked.c.n).where(
            or_(*(ranked.c.rn == r for r in ranks.values()))
        )
    ):
        for p in QUANTILES:
            if rn == (n * p + 99) // 100:
                found[key][p] = float(value) if value is not None else None  # type: ignore[assignment]
    return {key: Quantiles(p50=q.get(50), p95=q.get(95)) for key, q in found.items()}


def seconds_between(session: Session, start: Any, end: Any) -> Any:
    """``end - start`` in seconds as a SQL expression (Postgres: epoch of the interval; SQLite: Julian days)."""
    if session.get_bind().dialect.name == "postgresql":
        return func.extract("epoch", end - start)
    return (func.julianday(end) - func.julianday(start)) * 86400.0


def spend_today(session: Session, *, now: datetime | None = None) -> dict[str, int]:
    """Micro-dollars charged since midnight UTC per workflow (recorded and estimated model turns)."""
    midnight = (now or utcnow()).astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    cost = func.coalesce(EventRow.data["cost_micros"].as_integer(), 0)
    rows = session.execute(
        select(RunRow.workflow, func.sum(cost))
        .join(RunRow, RunRow.id == EventRow.run_id)
        .where(EventRow.type.in_(("model.turn", "model.turn_estimated")), EventRow.created_at >= midnight)
        .group_by(RunRow.workflow)
    )
    return {name: int(total or 0) for name, total in rows}
