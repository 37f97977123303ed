"""Plain-text formatting of runs, approvals, ledger rows and event trails for the ``rubot`` command line.

Everything here returns lines (``list[str]``) or strings and never prints, so the commands, the demo and the
tests share one rendering. Columns are aligned with spaces; no colour is needed to read the output.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from pipeline.redact import redact
from pipeline.runs import Approval, Effect, Event, Run

# Event keys that identify plumbing (which Celery task ran a step) rather than what happened.
NOISY_EVENT_KEYS = frozenset({"task_id"})
SHORT = 72
LONG_STRING = 160


def when(moment: datetime | None) -> str:
    """``2025-05-01 09:30:12Z``; SQLite hands back naive datetimes, which Rubot always writes in UTC."""
    if moment is None:
        return "-"
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def cost(run: Run) -> str:
    """Cost and token totals in one cell, e.g. ``$0.0123 / 4,210 tok`` (``~$`` when part of it is estimated)."""
    mark = "~" if run.estimated_cost_micros else ""
    return f"{mark}${run.cost_usd:.4f} / {run.tokens.total:,} tok"


def clip(text: str, width: int = SHORT) -> str:
    """``text`` on one line, cut to ``width`` characters with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: max(width - 3, 1)] + "..."


def compact(value: Any, width: int = SHORT) -> str:
    """A one-line JSON rendering of ``value`` (secrets redacted), clipped to ``width``."""
    value = redact(value)
    if isinstance(value, str):
        return clip(value, width)
    return clip(json.dumps(value, default=str, ensure_ascii=False), width)


def shorten(value: Any, limit: int = LONG_STRING) -> Any:
    """A copy of ``value`` with strings longer than ``limit`` cut (``... (+N chars)``), for readable JSON."""
    if isinstance(value, dict):
        return {key: shorten(item, limit) for key, item in value.items()}
    if isinstance(value, list):
        return [shorten(item, limit) for item in value]
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]}... (+{len(value) - limit} chars)"
    return value


def pretty(value: Any, *, full: bool = False, indent: str = "  ") -> list[str]:
    """Indented JSON lines for ``value`` (secrets redacted); long strings are cut unless ``full``."""
    value = redact(value)
    shown = value if full else shorten(value)
    text = json.dumps(shown, indent=2, default=str, ensure_ascii=False, sort_keys=False)
    return [indent + line for line in text.splitlines()]


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, indent: str = "") -> list[str]:
    """Left-aligned columns separated by two spaces; the last column is not padded."""
    body = [[str(cell) for cell in row] for row in rows]
    widths = [max([len(headers[i]), *(len(row[i]) for row in body)]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        padded = [cell.ljust(width) for cell, width in zip(cells[:-1], widths[:-1], strict=True)]
        return (indent + "  ".join([*padded, cells[-1]])).rstrip()

    return [line(headers), line(["-" * width for width in widths]), *(line(row) for row in body)]


def key_values(pairs: Sequence[tuple[str, str]], *, indent: str = "") -> list[str]:
    """``label  value`` lines with the values aligned."""
    width = max((len(label) for label, _ in pairs), default=0)
    return [f"{indent}{label.ljust(width)}  {value}" for label, value in pairs]


def event_data(data: dict[str, Any], *, width: int = SHORT) -> str:
    """An event's data as ``key=value`` pairs (secrets redacted), without plumbing keys and empty values."""
    data = redact(data)
    pairs = [
        f"{key}={compact(value, 40)}"
        for key, value in data.items()
        if key not in NOISY_EVENT_KEYS and value not in (None, "", [], {})
    ]
    return clip(" ".join(pairs), width)


def event_lines(events: Sequence[Event], *, indent: str = "  ", width: int = SHORT) -> list[str]:
    """The event trail as aligned rows: offset from the first event, type, step, short data."""
    if not events:
        return [f"{indent}(no events)"]
    start = events[0].created_at
    rows = [
        [
            f"+{(event.created_at - start).total_seconds():.3f}s",
            event.type,
            event.step or "-",
            event_data(event.data, width=width),
        ]
        for event in events
    ]
    return table(["at", "event", "step", "data"], rows, indent=indent)


def approval_lines(approvals: Sequence[Approval], *, indent: str = "  ") -> list[str]:
    if not approvals:
        return [f"{indent}(none)"]
    rows = [
        [
            a.id,
            a.step,
            a.role,
            a.status,
            _decider(a),
            when(a.decided_at),
            clip(a.comment or a.summary or a.reason or "", 48),
        ]
        for a in approvals
    ]
    return table(["id", "step", "role", "status", "by", "decided", "comment / reason"], rows, indent=indent)


def _estimated(run: Run) -> str:
    if not run.estimated_cost_micros:
        return ""
    return f" (includes ${run.estimated_cost_usd:.6f} estimated for requests whose response was lost)"


def _decider(approval: Approval) -> str:
    if not approval.decided_by:
        return "-"
    via = (approval.principal or {}).get("via")
    return f"{approval.decided_by} ({via})" if via else approval.decided_by


def token_table(tokens: Sequence[Any]) -> list[str]:
    """The ``rubot tokens list`` listing (never a secret)."""
    rows = [
        [
            t.id,
            t.name,
            t.user_id,
            ",".join(t.roles) or "-",
            when(t.created_at),
            when(t.last_used_at) if t.last_used_at else "never",
            when(t.revoked_at) if t.revoked_at else "active",
        ]
        for t in tokens
    ]
    return table(["id", "name", "user", "roles", "created", "last used", "revoked"], rows)


def effect_lines(effects: Sequence[Effect], *, indent: str = "  ") -> list[str]:
    if not effects:
        return [f"{indent}(none)"]
    rows = [
        [e.op_key, e.kind + (" (estimated)" if e.kind == "model_charge_estimate" else ""), when(e.created_at)]
        for e in effects
    ]
    return table(["op_key", "kind", "recorded"], rows, indent=indent)


def run_table(runs: Sequence[Run]) -> list[str]:
    """The ``rubot runs`` listing."""
    if not runs:
        return ["No runs match."]
    rows = [[run.id, run.workflow, run.status, when(run.created_at), cost(run)] for run in runs]
    return table(["id", "workflow", "status", "created", "cost / tokens"], rows)


def run_detail(run: Run, *, full: bool = False) -> list[str]:
    """Everything ``rubot show`` prints about one run."""
    usage = run.tokens
    head = [
        ("run", run.id),
        ("workflow", run.workflow),
        ("status", run.status),
        ("created", when(run.created_at)),
        ("started", when(run.started_at)),
        ("finished", when(run.finished_at)),
        ("cost", f"${run.cost_usd:.6f}" + _estimated(run)),
        (
            "tokens",
            f"{usage.total:,} (input {usage.input_tokens:,}, output {usage.output_tokens:,}, "
            f"cache write {usage.cache_write_tokens:,}, cache read {usage.cache_read_tokens:,})",
        ),
    ]
    if run.subject is not None:
        head.append(("subject", compact(run.subject)))
    if run.parent_run_id is not None:
        head.append(("parent", run.parent_run_id))
    if run.replay_of is not None:
        head.append(("replay of", run.replay_of))
    lines = key_values(head)
    sections: list[tuple[str, Any]] = [
        ("input", run.input),
        ("context", run.context or None),
        ("state", run.state or None),
        ("output", run.output),
        ("error", run.error),
    ]
    for title, value in sections:
        if value is not None:
            lines += ["", f"{title}:", *pretty(value, full=full)]
    pending = run.pending_approval
    lines += [
        "",
        "approvals:" + (f"  (pending: {pending.role} - {pending.reason})" if pending else ""),
        *approval_lines(run.approvals),
    ]
    children = run.children
    if children:
        lines += ["", "children:", *table(["run", "workflow", "status", "created"], child_rows(children), indent="  ")]
    lines += ["", "ledger:", *effect_lines(run.effects)]
    lines += ["", "events:", *event_lines(run.events, width=200 if full else SHORT)]
    return lines


def child_rows(children: Sequence[Run]) -> list[list[str]]:
    """The runs an Operation's run launched, one row each, oldest first."""
    return [[c.id, c.workflow, c.status, when(c.created_at)] for c in children]


def progress(batch: Any) -> str:
    """``3 of 5 finished (completed 2, failed 1, running 2)`` for a batch view."""
    counts = ", ".join(f"{status} {n}" for status, n in sorted(batch.counts.items())) or "no runs yet"
    planned = batch.total if batch.total is not None else f"{batch.launched}+"
    return f"{batch.finished} of {planned} finished ({counts})"


def batch_table(batches: Sequence[Any]) -> list[str]:
    """The ``rubot batches`` listing."""
    if not batches:
        return ["No batches yet."]
    rows = [[b.id, b.schedule, b.status, when(b.tick), progress(b)] for b in batches]
    return table(["id", "schedule", "status", "tick", "progress"], rows)


def batch_detail(batch: Any, runs: Sequence[Run]) -> list[str]:
    """``rubot batch show``: the batch, its progress, and its runs."""
    lines = key_values(
        [
            ("batch", batch.id),
            ("schedule", batch.schedule),
            ("workflow", batch.workflow),
            ("tick", when(batch.tick)),
            ("status", batch.status + (" (every run finished)" if batch.done else "")),
            ("progress", progress(batch)),
            ("created", when(batch.created_at)),
        ]
    )
    if batch.error:
        lines.append(f"error     {compact(batch.error)}")
    return [*lines, "", *run_table(runs)]
