"""What the console's pages read: the dashboard, the filtered runs list and a run's timeline and transcript.

Every page costs a fixed number of queries whatever the number of runs (counted in ``tests/test_console.py``):
lists are paginated in SQL (``LIMIT``/``OFFSET`` with a ``count(*)`` of the same filter), aggregates are grouped in
SQL, and a run page reads the run, its events, approvals and ledger once each.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pipeline.redact import redact
from pipeline.runs import Run
from pipeline.store import metrics
from pipeline.store.tables import ACTIVE, PENDING, RUN_STATUSES, WAITING, ApprovalRow, RunRow, as_utc, utcnow
from pipeline.web import reads
from pipeline.web.errors import invalid_request

PER_PAGE = 50
DAYS = 14


# --- the runs list ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunFilter:
    """The runs list's filters, from the query string (each optional)."""

    status: str | None = None
    workflow: str | None = None
    subject: str | None = None
    user: str | None = None
    since: date | None = None
    until: date | None = None

    @classmethod
    def from_args(cls, args: Any) -> RunFilter:
        status = args.get("status") or None
        if status is not None and status not in RUN_STATUSES:
            raise invalid_request(f"unknown status {status!r}; use one of {', '.join(RUN_STATUSES)}")
        return cls(
            status=status,
            workflow=(args.get("workflow") or "").strip() or None,
            subject=(args.get("subject") or "").strip() or None,
            user=(args.get("user") or "").strip() or None,
            since=_day(args.get("since"), "since"),
            until=_day(args.get("until"), "until"),
        )

    def where(self) -> list[Any]:
        clauses: list[Any] = []
        if self.status:
            clauses.append(RunRow.status == self.status)
        if self.workflow:
            clauses.append(RunRow.workflow == self.workflow)
        if self.user:
            clauses.append(RunRow.user_id == self.user)
        if self.subject:
            clauses.append(RunRow.subject_key.contains(self.subject, autoescape=True))
        if self.since:
            clauses.append(RunRow.created_at >= datetime.combine(self.since, datetime.min.time(), UTC))
        if self.until:
            end = datetime.combine(self.until + timedelta(days=1), datetime.min.time(), UTC)
            clauses.append(RunRow.created_at < end)
        return clauses

    def args(self) -> dict[str, str]:
        """The filters as query arguments (for the pager's links)."""
        values = {"status": self.status, "workflow": self.workflow, "subject": self.subject, "user": self.user}
        values.update(since=self.since.isoformat() if self.since else None)
        values.update(until=self.until.isoformat() if self.until else None)
        return {k: v for k, v in values.items() if v}


def _day(raw: str | None, name: str) -> date | None:
    if not raw:
        return None
    try:
        return date.fromisoformat(raw.strip())
    except ValueError:
        raise invalid_request(f"{name} must be a date like 2026-11-23, got {raw!r}") from None


@dataclass(frozen=True)
class RunPage:
    runs: list[Run]
    total: int
    page: int
    per_page: int
    workflows: list[str]

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


def runs_page(where: RunFilter, *, page: int = 1, per_page: int = PER_PAGE) -> RunPage:
    """One page of the filtered runs, newest first, with the filter's total and the workflows to choose from."""
    rt = reads.runtime()
    with rt.db.transaction() as s:
        clauses = where.where()
        total = s.execute(select(func.count()).select_from(RunRow).where(*clauses)).scalar_one()
        page = min(page, max(1, -(-total // per_page)))
        rows = s.execute(
            select(RunRow)
            .where(*clauses)
            .order_by(RunRow.created_at.desc(), RunRow.id.desc())
            .limit(per_page)
            .offset((page - 1) * per_page)
        ).scalars()
        runs = [Run(rt, row) for row in rows]
        workflows = list(s.execute(select(RunRow.workflow).distinct().order_by(RunRow.workflow)).scalars())
    return RunPage(runs=runs, total=total, page=page, per_page=per_page, workflows=workflows)


# --- the dashboard ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dashboard:
    by_status: dict[str, int]
    days: list[tuple[date, dict[str, int]]]
    pending: int
    oldest_pending: list[tuple[str, str, str, datetime]]
    spend_today: dict[str, int]
    stats: metrics.Stats
    failing: list[metrics.WorkflowStats] = field(default_factory=list)

    @property
    def busiest_day(self) -> int:
        return max((sum(counts.values()) for _, counts in self.days), default=0) or 1


def dashboard(*, now: datetime | None = None) -> Dashboard:
    """Runs by status now and per day (the last two weeks), pending approvals, spend today, the last 24 hours'
    metrics and the workflows failing most."""
    rt = reads.runtime()
    now = now or utcnow()
    first = (now - timedelta(days=DAYS - 1)).date()
    with rt.db.transaction() as s:
        by_status = dict(s.execute(select(RunRow.status, func.count()).group_by(RunRow.status)).all())
        per_day: dict[date, dict[str, int]] = {first + timedelta(days=i): {} for i in range(DAYS)}
        day = _day_of(s, RunRow.created_at)
        for when, status, count in s.execute(
            select(day, RunRow.status, func.count())
            .where(RunRow.created_at >= datetime.combine(first, datetime.min.time(), UTC))
            .group_by(day, RunRow.status)
        ):
            key = when if isinstance(when, date) else date.fromisoformat(str(when)[:10])
            if key in per_day:
                per_day[key][status] = count
        waiting = (ApprovalRow.status == PENDING, RunRow.status == WAITING)
        pending = s.execute(
            select(func.count()).select_from(ApprovalRow).join(RunRow, RunRow.id == ApprovalRow.run_id).where(*waiting)
        ).scalar_one()
        oldest = [
            (run_id, workflow, step, as_utc(created))
            for run_id, workflow, step, created in s.execute(
                select(RunRow.id, RunRow.workflow, ApprovalRow.step, ApprovalRow.created_at)
                .join(RunRow, RunRow.id == ApprovalRow.run_id)
                .where(*waiting)
                .order_by(ApprovalRow.created_at)
                .limit(5)
            )
        ]
        spend = metrics.spend_today(s, now=now)
        stats = metrics.collect(s, since=now - timedelta(days=1), until=now)
    failing = sorted(
        (w for w in stats.workflows if w.failures),
        key=lambda w: (-sum(w.failures.values()) / max(w.runs, 1), w.workflow),
    )
    return Dashboard(
        by_status={k: by_status[k] for k in RUN_STATUSES if k in by_status},
        days=sorted(per_day.items()),
        pending=pending,
        oldest_pending=[o for o in oldest if o[3] is not None],  # type: ignore[misc]
        spend_today=spend,
        stats=stats,
        failing=failing[:5],
    )


def _day_of(s: Session, column: Any) -> Any:
    """The UTC calendar day of a timestamp column, in SQL."""
    if s.get_bind().dialect.name == "postgresql":
        return func.date(func.timezone("UTC", column))
    return func.date(column)


# --- a run's page -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimelineEntry:
    number: int
    event: Any
    who: str | None
    duration: float | None


@dataclass(frozen=True)
class StepSpan:
    step: str
    kind: str | None
    started: datetime | None
    ended: datetime | None
    outcome: str

    @property
    def seconds(self) -> float | None:
        if self.started is None or self.ended is None:
            return None
        return (self.ended - self.started).total_seconds()


def timeline(run: Run) -> tuple[list[TimelineEntry], list[StepSpan]]:
    """The run's events numbered 1, 2, 3 ... in order, with who acted and, on a step's end, how long it took;
    and one span per step (first start to its completion or failure)."""
    entries: list[TimelineEntry] = []
    spans: dict[str, dict[str, Any]] = {}
    for number, event in enumerate(run.events, start=1):
        data = event.data or {}
        duration = None
        if event.type == "step.started" and event.step:
            span = spans.setdefault(event.step, {"kind": data.get("kind"), "started": event.created_at})
            span.setdefault("started", event.created_at)
        elif event.type in ("step.completed", "step.failed") and event.step:
            span = spans.setdefault(event.step, {"kind": None, "started": None})
            span["ended"], span["outcome"] = event.created_at, event.type.split(".")[1]
            if span.get("started") is not None:
                duration = (as_utc(event.created_at) - as_utc(span["started"])).total_seconds()  # type: ignore[operator]
        elif event.type == "model.turn" and event.step:
            spans.setdefault(event.step, {"kind": "agent", "started": event.created_at})
        entries.append(TimelineEntry(number, event, _who(event.type, data, run), duration))
    steps = [
        StepSpan(
            step=name,
            kind=span.get("kind"),
            started=as_utc(span.get("started")),
            ended=as_utc(span.get("ended")),
            outcome=span.get("outcome", "running" if run.status in ACTIVE else "not finished"),
        )
        for name, span in spans.items()
    ]
    return entries, steps


def _who(type_: str, data: dict[str, Any], run: Run) -> str | None:
    principal = data.get("principal")
    if isinstance(principal, dict) and principal.get("id"):
        return f"{principal.get('display_name') or principal['id']} ({principal['id']}, via {principal.get('via')})"
    if data.get("by"):
        return str(data["by"])
    if type_ in ("run.enqueued", "run.rejected") and run.user_id:
        return f"{run.user_id} (launched)"
    if type_ == "model.turn":
        return f"model {data.get('model') or '?'}"
    if type_.startswith("tool.") and data.get("tool"):
        return f"tool {data['tool']}"
    return None


_TURN = re.compile(r"^(?P<step>[^/]+)/turn-(?P<n>\d+)$")
_CALL = re.compile(r"^(?P<turn>[^/]+/turn-\d+)/tool-(?P<id>.+)$")


@dataclass(frozen=True)
class ToolCallView:
    id: str
    name: str
    arguments: Any
    result: Any
    is_error: bool
    stored_token: str | None


@dataclass(frozen=True)
class TurnView:
    step: str
    number: int
    model: str | None
    text: str
    stop_reason: str | None
    usage: dict[str, int]
    cost_micros: int
    calls: list[ToolCallView]


def transcript(run: Run) -> dict[str, list[TurnView]]:
    """Each agent step's turns from the ledger: the model's text, its tool calls with their arguments and what
    they returned (a result too large for the model by its stored token), tokens, cache reads and cost. Redacted."""
    effects = {e.op_key: e for e in run.effects}
    steps: dict[str, list[TurnView]] = {}
    for key, effect in effects.items():
        match = _TURN.match(key)
        if match is None or effect.kind != "model_turn" or not isinstance(effect.result, dict):
            continue
        response = redact(effect.result)
        calls = []
        for call in response.get("tool_calls") or []:
            answer = effects.get(f"{key}/tool-{call.get('id')}")
            result, is_error, token = _answer(answer.result if answer is not None else None)
            calls.append(
                ToolCallView(str(call.get("id")), str(call.get("name")), call.get("input"), result, is_error, token)
            )
        steps.setdefault(match["step"], []).append(
            TurnView(
                step=match["step"],
                number=int(match["n"]),
                model=response.get("model"),
                text=response.get("text") or "",
                stop_reason=response.get("stop_reason"),
                usage={k: int(v or 0) for k, v in (response.get("usage") or {}).items()},
                cost_micros=int(response.get("cost_micros") or 0),
                calls=calls,
            )
        )
    for turns in steps.values():
        turns.sort(key=lambda t: t.number)
    return steps


def _answer(result: Any) -> tuple[Any, bool, str | None]:
    """What a tool call returned to the model: its content (JSON decoded when it is JSON), whether it was an
    error, and the stored-result token of a result too large to show the model."""
    if not isinstance(result, dict):
        return None, False, None
    content = result.get("content")
    try:
        decoded = json.loads(content) if isinstance(content, str) else content
    except ValueError:
        decoded = content
    token = decoded.get("stored_result") if isinstance(decoded, dict) else None
    return redact(decoded), bool(result.get("is_error")), token if isinstance(token, str) else None
