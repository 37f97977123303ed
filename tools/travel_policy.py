"""Company travel policies (budgets and allowed conference topics) and the ``LoadTravelPolicy`` tool.

The reference app reads policies from a small seeded JSON store, ``tools/data/travel_policies.json``: one
entry per employee with a budget in cents, the topics they may attend conferences about, and optional
per-conference overrides (a different budget, extra topics). A real deployment would swap
:class:`TravelPolicyRepository` for its HR system; the tool's contract stays the same.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, ClassVar, TypedDict

from marshmallow import fields

from pipeline.definitions.tool import Tool
from pipeline.errors import ToolError

POLICIES_FILE = Path(__file__).resolve().parent / "data" / "travel_policies.json"


class TravelPolicy(TypedDict):
    """What the repository answers for one employee and conference."""

    budget_limit_cents: int
    allowed_topics: list[str]


@functools.cache
def _read(path: Path) -> dict[str, Any]:
    employees = json.loads(path.read_text(encoding="utf-8"))["employees"]
    if not isinstance(employees, dict):
        raise ValueError(f"{path}: 'employees' must be an object keyed by employee id")
    return employees


class TravelPolicyRepository:
    """Read-only access to the seeded travel policies; ``path`` may name another file of the same shape."""

    path: ClassVar[Path] = POLICIES_FILE

    @classmethod
    def employee_ids(cls) -> list[str]:
        """Ids of every employee with a policy, sorted."""
        return sorted(_read(cls.path))

    @classmethod
    def fetch(cls, *, employee_id: str, conference_name: str) -> TravelPolicy:
        """The budget and allowed topics for ``employee_id`` attending ``conference_name``.

        A conference override (matched case-insensitively on the name) replaces the budget and appends its
        extra topics. Raises ``ToolError`` for an employee with no policy.
        """
        employees = _read(cls.path)
        entry = employees.get(employee_id)
        if entry is None:
            raise ToolError(
                f"No travel policy found for employee {employee_id!r}; "
                f"the policy store knows {', '.join(sorted(employees))}.",
                details={"employee_id": employee_id},
            )
        budget = int(entry["budget_limit_cents"])
        topics = list(entry["allowed_topics"])
        overrides = {name.casefold(): value for name, value in entry.get("conference_overrides", {}).items()}
        override = overrides.get(conference_name.strip().casefold(), {})
        if "budget_limit_cents" in override:
            budget = int(override["budget_limit_cents"])
        topics += [topic for topic in override.get("extra_topics", []) if topic not in topics]
        return {"budget_limit_cents": budget, "allowed_topics": topics}


class LoadTravelPolicy(Tool):
    """The §3 contract's first step: the employee's budget and allowed topics, echoed with the request."""

    description = "Load company travel policy and budget rules."
    input_schema = {
        "employee_id": fields.String(required=True),
        "conference_name": fields.String(required=True),
        "conference_url": fields.String(required=True),
        "estimated_cost_cents": fields.Integer(required=True),
    }
    output_schema = {
        **input_schema,
        "budget_limit_cents": fields.Integer(required=True),
        "allowed_topics": fields.List(fields.String(), required=True),
    }

    def call(self, *, employee_id, conference_name, conference_url, estimated_cost_cents):
        policy = TravelPolicyRepository.fetch(employee_id=employee_id, conference_name=conference_name)
        return {
            "employee_id": employee_id,
            "conference_name": conference_name,
            "conference_url": conference_url,
            "estimated_cost_cents": estimated_cost_cents,
            "budget_limit_cents": policy["budget_limit_cents"],
            "allowed_topics": policy["allowed_topics"],
        }
