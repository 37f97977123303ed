"""``rubot seed``: fill a database with made-up but consistent runs, for the console, ``rubot stats`` and demos.

Rows are written straight into Rubot's tables through SQLAlchemy bulk inserts (thousands of runs a second): each
run gets the rows the engine would have left — its status, tokens and cost totals, the ``run.*``/``step.*``
event trail, ``model.turn`` events and ledger rows for each model turn (with usage, cost and the agent's name),
tool calls with their results (some errors), approvals with who decided and when, and failure reasons. Nothing is
dispatched: a seeded run never moves. Use a database of its own (``RUBOT_DATABASE_URL``), never production's.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert

from pipeline.store.tables import (
    ApprovalRow,
    BlobRow,
    EffectRow,
    EventRow,
    RunRow,
    utcnow,
)

#: (step, kind, agent or approval role) of each seeded workflow, in order.
PLANS: dict[str, list[tuple[str, str, str | None]]] = {
    "ConferenceTravelReviewWorkflow": [
        ("policy", "tool", None),
        ("conference_site", "tool", None),
        ("conference_review", "agent", "review_conference_fit"),
        ("finalize", "step", None),
    ],
    "ConferenceTravelManualApprovalWorkflow": [
        ("hydrate_review", "step", None),
        ("manager_review", "approval", "engineering_manager"),
        ("finalize", "step", None),
    ],
    "SupportDesk": [
        ("load_ticket", "tool", None),
        ("support", "agent", "support_agent"),
        ("lead_review", "approval", "support_lead"),
        ("reply", "tool", None),
    ],
}
STATUSES = (
    ("completed", 55),
    ("failed", 14),
    ("waiting_for_approval", 9),
    ("running", 7),
    ("queued", 5),
    ("cancelled", 5),
    ("dead_letter", 3),
    ("needs_reconciliation", 2),
)
FAILURES = ("model_error", "budget_exceeded", "invalid_output", "rejected", "tool_error")
TOOLS = ("lookup_order", "refund_order", "read_data", "search_policy")
USERS = ("u_ada", "u_bo", "u_cy", "u_dee", "u_eli", "u_fay")
MANAGERS = ("mia@example.com", "sam@example.com", "lee@example.com")


@dataclass
class Seeded:
    runs: int
    events: int
    effects: int
    approvals: int


def seed(runtime: Any, runs: int = 300, *, days: float = 7.0, seed: int = 0, prefix: str = "seed") -> Seeded:
    """Insert ``runs`` runs created over the last ``days`` days (deterministic for a given ``seed``)."""
    rng = random.Random(seed)
    now = utcnow()
    rows: dict[str, list[dict[str, Any]]] = {"runs": [], "events": [], "effects": [], "approvals": [], "blobs": []}
    for i in range(runs):
        _one(rng, now, days, f"{prefix}_{seed}_{i:06d}", rows)
    with runtime.db.transaction() as s:
        tables = ((RunRow, "runs"), (EventRow, "events"), (EffectRow, "effects"), (ApprovalRow, "approvals"))
        for table, key in (*tables, (BlobRow, "blobs")):
            batch = rows[key]
            for start in range(0, len(batch), 5000):
                s.execute(insert(table), batch[start : start + 5000])
    return Seeded(len(rows["runs"]), len(rows["events"]), len(rows["effects"]), len(rows["approvals"]))


def _one(rng: random.Random, now: datetime, days: float, run_id: str, rows: dict[str, list[dict[str, Any]]]) -> None:
    workflow = rng.choice(sorted(PLANS))
    plan = PLANS[workflow]
    status = rng.choices([s for s, _ in STATUSES], weights=[w for _, w in STATUSES])[0]
    has_approval = any(kind == "approval" for _, kind, _ in plan)
    if status == "waiting_for_approval" and not has_approval:
        status = "running"
    created = now - timedelta(seconds=rng.uniform(60, days * 86400))
    user = rng.choice(USERS)
    subject = {"type": "ticket", "id": rng.randint(1000, 9999)}
    clock = [created]

    def tick(low: float = 0.2, high: float = 20.0) -> datetime:
        clock[0] = min(clock[0] + timedelta(seconds=rng.uniform(low, high)), now)
        return clock[0]

    def event(type_: str, step: str | None = None, /, **data: Any) -> None:
        rows["events"].append(
            {"run_id": run_id, "type": type_, "step": step, "data": data or None, "created_at": tick()}
        )

    totals = {"input_tokens": 0, "output_tokens": 0, "cache_write_tokens": 0, "cache_read_tokens": 0, "cost": 0}
    state: dict[str, Any] = {}
    error: dict[str, Any] | None = None
    event("run.enqueued", None, workflow=workflow, subject=subject)
    stop_at = len(plan) if status == "completed" else rng.randrange(len(plan)) if status != "queued" else -1
    if status == "waiting_for_approval":
        stop_at = next(i for i, (_, kind, _) in enumerate(plan) if kind == "approval")
    started = None
    if stop_at >= 0:
        started = tick()
        event("run.started", None, workflow=workflow)
    for index, (step, kind, extra) in enumerate(plan):
        if index > stop_at or (index == stop_at and status not in ("failed", "waiting_for_approval")):
            break
        event("step.started", step, kind=kind)
        if kind == "agent":
            _agent_turns(rng, run_id, step, str(extra), event, tick, rows, totals)
        if kind == "approval":
            _approval(rng, run_id, step, str(extra), status if index == stop_at else "approved", tick, event, rows)
            if index == stop_at and status == "waiting_for_approval":
                event("run.waiting_for_approval", step)
                break
        if index == stop_at and status == "failed":
            reason = {
                "approval": "rejected",
                "agent": rng.choice(("model_error", "budget_exceeded", "invalid_output")),
                "tool": "tool_error",
            }.get(kind, "step_error")
            error = {"reason": reason, "message": f"{step} failed: {reason.replace('_', ' ')}", "step": step}
            event("step.failed", step, **error)
            break
        state[step] = {"ok": True, "n": index}
        rows["effects"].append(
            {
                "run_id": run_id,
                "op_key": step,
                "kind": kind,
                "status": "done",
                "result": {"set": {step: state[step]}, "unset": []},
                "created_at": tick(),
            }
        )
        event("step.completed", step, keys=[step])
    finished = None
    if status == "completed":
        event("run.completed")
    elif status == "failed":
        error = error or {"reason": rng.choice(FAILURES), "message": "failed"}
        event("run.failed", error.get("step"), **error)
    elif status == "cancelled":
        error = {"reason": "cancelled", "message": "no longer needed", "by": user}
        event("run.cancelled", None, by=user, reason="no longer needed")
    elif status in ("dead_letter", "needs_reconciliation"):
        reason = "too_many_recoveries" if status == "dead_letter" else "interrupted_side_effect"
        error = {"reason": reason, "message": reason.replace("_", " "), "op_key": plan[max(stop_at, 0)][0]}
        event(f"run.{status}", error["op_key"], **error)
    if status in ("completed", "failed", "cancelled", "dead_letter", "needs_reconciliation"):
        finished = clock[0]
    rows["runs"].append(
        {
            "id": run_id,
            "workflow": workflow,
            "status": status,
            "input": {"ticket": subject["id"]},
            "context": {"user": {"id": user}},
            "subject": subject,
            "user_id": user,
            "subject_key": json.dumps(subject, sort_keys=True),
            "state": state,
            "output": state.get(plan[-1][0]) if status == "completed" else None,
            "error": error,
            "dispatch_seq": 1,
            "recoveries": 6 if status == "dead_letter" else 0,
            "input_tokens": totals["input_tokens"],
            "output_tokens": totals["output_tokens"],
            "cache_write_tokens": totals["cache_write_tokens"],
            "cache_read_tokens": totals["cache_read_tokens"],
            "cost_micros": totals["cost"],
            "estimated_cost_micros": 0,
            "counters": None,
            "created_at": created,
            "updated_at": clock[0],
            "started_at": started,
            "finished_at": finished,
        }
    )


def _agent_turns(rng, run_id, step, agent, event, tick, rows, totals) -> None:  # type: ignore[no-untyped-def]
    for n in range(1, rng.randint(1, 9) + 1):
        last = rng.random() < 0.3 or n >= 6
        calls = (
            []
            if last
            else [
                {
                    "id": f"toolu_{run_id[-6:]}_{n}_{k}",
                    "name": rng.choice(TOOLS),
                    "input": {"order_id": rng.randint(1, 99)},
                }
                for k in range(rng.randint(1, 2))
            ]
        )
        usage = {
            "input_tokens": rng.randint(200, 3000),
            "output_tokens": rng.randint(20, 600),
            "cache_write_tokens": rng.choice((0, 0, 1024)),
            "cache_read_tokens": rng.choice((0, 2048, 4096)),
        }
        cost = rng.randint(500, 25_000)
        for key in usage:
            totals[key] += usage[key]
        totals["cost"] += cost
        text = "Looking the order up." if calls else "The request is within policy; approving the refund."
        op = f"{step}/turn-{n}"
        rows["effects"].append(
            {
                "run_id": run_id,
                "op_key": op,
                "kind": "model_turn",
                "status": "done",
                "result": {
                    "model": "claude-sonnet-4-6",
                    "provider": "anthropic",
                    "text": text,
                    "stop_reason": "tool_use" if calls else "end_turn",
                    "tool_calls": calls,
                    "usage": usage,
                    "id": f"msg_{run_id[-6:]}_{n}",
                    "cost_micros": cost,
                },
                "created_at": tick(),
            }
        )
        event(
            "model.turn",
            step,
            turn=n,
            agent=agent,
            provider="anthropic",
            model="claude-sonnet-4-6",
            stop_reason="tool_use" if calls else "end_turn",
            cost_micros=cost,
            usage=usage,
            tool_calls=[c["name"] for c in calls],
        )
        for call in calls:
            failed = rng.random() < 0.12
            content = "order not found" if failed else json.dumps({"order_id": call["input"]["order_id"], "ok": True})
            if not failed and rng.random() < 0.05:  # a result too large for the model, stored for read_data
                token = f"blob_{run_id}_{n}_{call['id'][-1]}"
                body = json.dumps({"orders": [{"id": k, "status": "delivered"} for k in range(400)]})
                rows["blobs"].append(
                    {
                        "id": token,
                        "run_id": run_id,
                        "op_key": f"{op}/tool-{call['id']}",
                        "content": body,
                        "size": len(body),
                        "created_at": clock_now(tick),
                    }
                )
                content = json.dumps({"stored_result": token, "size": len(body), "note": "Call read_data."})
            rows["effects"].append(
                {
                    "run_id": run_id,
                    "op_key": f"{op}/tool-{call['id']}",
                    "kind": "tool_call",
                    "status": "done",
                    "result": {"content": content, "is_error": failed},
                    "created_at": tick(),
                }
            )
            event(
                "tool.failed" if failed else "tool.completed",
                step,
                op_key=f"{op}/tool-{call['id']}",
                tool=call["name"],
                is_error=failed,
            )
        if last:
            break


def clock_now(tick: Any) -> datetime:
    return tick(0, 0.001)


def _approval(rng, run_id, step, role, outcome, tick, event, rows) -> None:  # type: ignore[no-untyped-def]
    asked = tick()
    event("approval.requested", step, role=role)
    row: dict[str, Any] = {
        "id": f"apr_{run_id}",
        "run_id": run_id,
        "step": step,
        "role": role,
        "reason": "Needs a person's approval.",
        "status": "pending",
        "kind": "step",
        "created_at": asked,
    }
    if outcome != "waiting_for_approval":
        decided = tick(30, 4 * 3600)
        who = rng.choice(MANAGERS)
        verdict = "rejected" if outcome == "failed" else "approved"
        principal = {"id": who, "display_name": who.split("@")[0].title(), "roles": [role], "via": "proxy"}
        row.update(status=verdict, decided_by=who, decided_at=decided, principal=principal)
        event(f"approval.{verdict}", step, principal=principal)
    rows["approvals"].append(row)
