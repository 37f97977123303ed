"""Replays and forks, as data: which recorded ledger rows a replay reuses, and where two runs' records part.

A fork point is ``None`` (reuse every recorded result), a step name (reuse every step declared before it), or an
agent turn ``"<step>/turn-<n>"`` (also reuse that agent's input and its turns 1 .. n-1 with their tool calls).
Reused rows are copied into the new run's ledger before it is dispatched (:func:`transitions.seed_replay`), so
the one engine path skips them like any recorded work: no model request and no tool call is made for them.

:func:`departure` compares two runs' ledgers in the first run's order and names the first operation whose
recorded output differs (model turns by their text and tool calls, not by provider ids or usage).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pipeline.errors import InvalidForkPoint
from pipeline.redact import redact
from pipeline.store.tables import DONE, EffectRow

_TURN = re.compile(r"^(?P<step>[^/]+)/turn-(?P<n>\d+)(?P<rest>/.*)?$")
#: Ledger kinds that record what a run paid, not what it did: never reused, never compared.
_NOT_REUSED = frozenset({"model_charge_estimate"})


@dataclass(frozen=True)
class ForkPoint:
    """Where a replay starts to run live: before ``step`` (and, for an agent turn, before its turn ``turn``)."""

    step: str | None
    turn: int | None = None

    @property
    def label(self) -> str:
        if self.step is None:
            return "(end)"
        return self.step if self.turn is None else f"{self.step}/turn-{self.turn}"


def parse(workflow: Any, from_step: str | None, source_rows: list[EffectRow]) -> ForkPoint:
    """Check ``from_step`` against the workflow and the source's ledger; ``InvalidForkPoint`` when it is wrong."""
    if from_step is None:
        return ForkPoint(None)
    match = _TURN.match(from_step)
    step, turn = (match["step"], int(match["n"])) if match and not match["rest"] else (from_step, None)
    spec = workflow.step_named(step)
    if spec is None:
        raise InvalidForkPoint(
            f"{workflow.name} has no step {step!r}; its steps are {', '.join(workflow.step_names())}",
            details={"from_step": from_step},
        )
    if turn is None:
        return ForkPoint(step)
    if spec.kind != "agent":
        raise InvalidForkPoint(f"step {step!r} is a {spec.kind} step; only agent steps have turns")
    recorded = {r.op_key for r in source_rows if r.status == DONE}
    if turn < 1 or f"{step}/turn-{turn}" not in recorded:
        raise InvalidForkPoint(
            f"the source run has no recorded turn {turn} of {step!r} to fork at", details={"from_step": from_step}
        )
    return ForkPoint(step, turn)


def reused(workflow: Any, point: ForkPoint, source_rows: list[EffectRow]) -> list[EffectRow]:
    """The source's recorded rows (in the order they were written) that a replay from ``point`` reuses."""
    names = workflow.step_names()
    before = set(names if point.step is None else names[: names.index(point.step)])
    kept = []
    for row in source_rows:
        if row.status != DONE or row.kind in _NOT_REUSED:
            continue
        top = row.op_key.split("/")[0]
        if top in before or (top == point.step and _before_turn(row.op_key, point)):
            kept.append(row)
    return kept


def _before_turn(op_key: str, point: ForkPoint) -> bool:
    if point.turn is None or op_key == point.step:
        return False
    if op_key == f"{point.step}/input":
        return True
    match = _TURN.match(op_key)
    return match is not None and int(match["n"]) < point.turn


# --- where two runs part ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Departure:
    """The first operation whose recorded output differs between run ``a`` and run ``b`` (``None``: absent)."""

    op_key: str
    step: str
    turn: int | None
    a: Any
    b: Any

    def describe(self) -> str:
        where = f"turn {self.turn} of step {self.step}" if self.turn is not None else f"step {self.step}"
        if self.b is None:
            return f"{self.op_key} ({where}): recorded in the first run only"
        if self.a is None:
            return f"{self.op_key} ({where}): recorded in the second run only"
        return f"{self.op_key} ({where}) differs"


def comparable(row: EffectRow) -> Any:
    """What a row's recorded output means, without what varies from call to call (ids, usage, cost, timing)."""
    result = row.result
    if row.kind == "model_turn" and isinstance(result, dict):
        return {
            "text": result.get("text", ""),
            "stop_reason": result.get("stop_reason"),
            "tool_calls": [{"name": c.get("name"), "input": c.get("input")} for c in result.get("tool_calls") or []],
        }
    if isinstance(result, dict):
        return {k: v for k, v in result.items() if k not in ("resume_seq", "cost_micros", "attempt")}
    return result


def _keyed(rows: list[EffectRow]) -> dict[str, EffectRow]:
    """Rows by op key, a tool call's key naming its position in its turn rather than the provider's call id
    (a model that answers the same twice gives its calls new ids)."""
    done = [r for r in rows if r.status == DONE and r.kind not in _NOT_REUSED]
    by_key = {r.op_key: r for r in done}
    keyed: dict[str, EffectRow] = {}
    for row in done:
        match = _TURN.match(row.op_key)
        key = row.op_key
        if match and match["rest"] and match["rest"].startswith("/tool-"):
            turn = by_key.get(f"{match['step']}/turn-{match['n']}")
            ids = [c.get("id") for c in ((turn.result or {}).get("tool_calls") or [])] if turn is not None else []
            call_id = match["rest"][len("/tool-") :]
            if call_id in ids:
                key = f"{match['step']}/turn-{match['n']}/call-{ids.index(call_id) + 1}"
        keyed[key] = row
    return keyed


def departure(a_rows: list[EffectRow], b_rows: list[EffectRow]) -> Departure | None:
    """Where run ``b`` departed from run ``a``: the first op (in ``a``'s order, then ``b``'s) that differs."""
    a_by, b_by = _keyed(a_rows), _keyed(b_rows)
    order = list(a_by) + [k for k in b_by if k not in a_by]
    for op_key in order:
        a, b = a_by.get(op_key), b_by.get(op_key)
        left = comparable(a) if a is not None else None
        right = comparable(b) if b is not None else None
        if a is None or b is None or left != right:
            match = _TURN.match(op_key)
            shown = (a or b).op_key  # type: ignore[union-attr]
            turn = int(match["n"]) if match else None
            return Departure(shown, op_key.split("/")[0], turn, redact(left), redact(right))  # shown, so redacted
    return None
