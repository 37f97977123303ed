"""Plain-text rendering of ``rubot stats`` (:class:`pipeline.store.metrics.Stats`), one block per workflow."""

from __future__ import annotations

from pipeline.store.metrics import Quantiles, Stats
from rubot_app.scripts.output import table, when


def duration(seconds: float | None) -> str:
    """``45s``, ``12m``, ``3h05m`` or ``-``."""
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def number(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def usd(micros: float | None) -> str:
    return "-" if micros is None else f"${micros / 1_000_000:,.4f}"


def quantiles(q: Quantiles, fmt=number) -> str:  # type: ignore[no-untyped-def]
    return f"p50 {fmt(q.p50)}, p95 {fmt(q.p95)}"


def stats_lines(stats: Stats) -> list[str]:
    lines = [f"Runs created from {when(stats.since)} to {when(stats.until)}"]
    if not stats.workflows:
        return [*lines, "", "No runs in this window."]
    for w in stats.workflows:
        statuses = ", ".join(f"{status} {count}" for status, count in w.by_status.items())
        lines += ["", f"{w.workflow}: {w.runs} runs ({statuses})"]
        lines.append(f"  turns per run    {quantiles(w.turns_per_run)}")
        lines.append(f"  tokens           {w.tokens:,} ({w.tokens_per_run:,.0f} per run)")
        lines.append(
            f"  cost             {usd(w.cost_micros)} ({usd(w.cost_micros / w.runs if w.runs else 0)} per run; "
            f"{quantiles(w.cost_per_run_micros, usd)})"
        )
        lines.append(f"  tool calls       {w.tool_calls:,}, errors {w.tool_errors:,} ({w.tool_error_rate:.1%})")
        failures = ", ".join(f"{reason} {count}" for reason, count in w.failures.items()) or "none"
        lines.append(f"  failures         {failures}")
        lines.append(
            f"  approvals        {w.approvals_decided} decided, {w.approvals_pending} pending; waited "
            f"{quantiles(w.approval_wait_seconds, duration)}"
        )
    if stats.agents:
        lines += ["", "Agents (per agent step of a run)"]
        rows = [
            (
                a.agent,
                f"{a.runs:,}",
                f"{a.turns:,}",
                quantiles(a.turns_per_run),
                f"{a.tokens:,}",
                usd(a.cost_micros),
                f"{a.tool_errors}/{a.tool_calls} ({a.tool_error_rate:.1%})",
            )
            for a in stats.agents
        ]
        lines += table(
            ("agent", "steps", "turns", "turns per step", "tokens", "cost", "tool errors"), rows, indent="  "
        )
    return lines
