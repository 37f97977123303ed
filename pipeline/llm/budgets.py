"""Budgets of an agent step and of a run, checked before every model call.

Limits come from the Agent class (per step: ``max_turns``, ``max_tokens``, ``max_cost``) and the Workflow
class (per run: the same three names, unset by default). Usage is read from the effects ledger and the run
row, which every recorded turn updates in its own transaction, so a retried task sees the same totals.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any


@dataclass(frozen=True)
class Spent:
    turns: int
    tokens: int
    cost_micros: int


@dataclass(frozen=True)
class Exceeded:
    scope: str  # "step" or "run"
    budget: str  # "max_turns", "max_tokens" or "max_cost"
    limit: Any
    used: Any

    def as_error(self) -> dict[str, Any]:
        return {
            "reason": "budget_exceeded",
            "type": "BudgetExceeded",
            "message": f"{self.scope} budget {self.budget} exhausted: used {self.used} of {self.limit}",
            "details": {"scope": self.scope, "budget": self.budget, "limit": self.limit, "used": self.used},
        }


def to_micros(usd: float | Decimal | None) -> int | None:
    return None if usd is None else int(Decimal(str(usd)) * 1_000_000)


def check(owner: Any, scope: str, spent: Spent) -> Exceeded | None:
    """The first limit of ``owner`` (Agent or Workflow class) that another model call would break."""
    max_turns = getattr(owner, "max_turns", None)
    if max_turns is not None and spent.turns >= max_turns:
        return Exceeded(scope, "max_turns", max_turns, spent.turns)
    max_tokens = getattr(owner, "max_tokens", None)
    if max_tokens is not None and spent.tokens >= max_tokens:
        return Exceeded(scope, "max_tokens", max_tokens, spent.tokens)
    max_cost = to_micros(getattr(owner, "max_cost", None))
    if max_cost is not None and spent.cost_micros >= max_cost:
        return Exceeded(scope, "max_cost", f"{max_cost} micro-USD", f"{spent.cost_micros} micro-USD")
    return None
