"""Agent steps: model turns, answers to tool calls, estimated charges and Message Batches requests.

Part of the one state machine; see :mod:`pipeline.engine.transitions`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from pipeline.engine import hooks
from pipeline.engine.hooks import ModelTurnInfo, ToolCallInfo
from pipeline.engine.transitions.ledger import record
from pipeline.store import queries
from pipeline.store.tables import (
    EffectRow,
    RunRow,
    utcnow,
)

# --- agent steps -----------------------------------------------------------------------------------------------


def answer_tool_call(
    s: Session,
    run: RunRow,
    op_key: str,
    tool: str,
    result: dict[str, Any],
    *,
    event: str,
    row: EffectRow | None = None,
    **data: Any,
) -> None:
    """Record what a model's tool call returns to the model (a result or an error), with its event."""
    record(s, run, op_key, "tool_call", result, row=row)
    step = op_key.split("/")[0]
    is_error = bool(result.get("is_error"))
    queries.add_event(s, run.id, event, step, op_key=op_key, tool=tool, is_error=is_error, **data)
    hooks.after_commit(
        s,
        "tool_call_answered",
        ToolCallInfo(
            run_id=run.id, workflow=run.workflow, step=step, op_key=op_key, tool=tool, outcome=event, is_error=is_error
        ),
    )


def record_model_turn(
    s: Session,
    run: RunRow,
    row: EffectRow | None,
    *,
    step: str,
    turn: int,
    agent: str,
    response: dict[str, Any],
    usage: dict[str, int],
    cost_micros: int,
    duration_seconds: float | None = None,
    op_key: str | None = None,
    batch: bool = False,
    **data: Any,
) -> None:
    """Record a model's response (claimed ``row`` → done, or a new done row under ``op_key`` for a batch turn)
    and add its usage and cost to the run's totals."""
    result = {**response, "cost_micros": cost_micros, **({"batch": True} if batch else {})}
    record(s, run, row.op_key if row is not None else str(op_key), "model_turn", result, row=row)
    run.input_tokens += usage.get("input_tokens", 0)
    run.output_tokens += usage.get("output_tokens", 0)
    run.cache_write_tokens += usage.get("cache_write_tokens", 0)
    run.cache_read_tokens += usage.get("cache_read_tokens", 0)
    run.cost_micros += cost_micros
    if batch:
        data["batch"] = True
    queries.add_event(
        s,
        run.id,
        "model.turn",
        step,
        turn=turn,
        agent=agent,
        provider=response.get("provider"),
        model=response.get("model"),
        stop_reason=response.get("stop_reason"),
        cost_micros=cost_micros,
        usage=usage,
        **data,
    )
    hooks.after_commit(
        s,
        "model_turn_recorded",
        ModelTurnInfo(
            run_id=run.id,
            workflow=run.workflow,
            step=step,
            turn=turn,
            agent=agent,
            model=response.get("model") or "",
            provider=response.get("provider"),
            usage=dict(usage),
            cost_micros=cost_micros,
            stop_reason=response.get("stop_reason"),
            tool_calls=tuple(data.get("tool_calls") or ()),
            duration_seconds=duration_seconds,
            batch=batch,
        ),
    )


def record_estimated_charge(
    s: Session,
    run: RunRow,
    op_key: str,
    *,
    step: str,
    turn: int,
    agent: str,
    model: str,
    usage: dict[str, int],
    cost_micros: int,
    **data: Any,
) -> None:
    """Record what a request whose response was lost may have cost (``op_key`` is unique per attempt, so an
    attempt is charged once). The estimate counts in ``cost_micros`` and, separately, ``estimated_cost_micros``;
    its tokens are not added to the run's token totals, which hold only what the provider reported."""
    record(
        s,
        run,
        op_key,
        "model_charge_estimate",
        {"estimated": True, "model": model, "usage": usage, "cost_micros": cost_micros, **data},
    )
    run.cost_micros += cost_micros
    run.estimated_cost_micros = (run.estimated_cost_micros or 0) + cost_micros
    queries.add_event(
        s,
        run.id,
        "model.turn_estimated",
        step,
        turn=turn,
        agent=agent,
        model=model,
        estimated=True,
        cost_micros=cost_micros,
        usage=usage,
        op_key=op_key,
        **data,
    )
    hooks.after_commit(
        s,
        "model_turn_estimated",
        ModelTurnInfo(
            run_id=run.id,
            workflow=run.workflow,
            step=step,
            turn=turn,
            agent=agent,
            model=model,
            usage=dict(usage),
            cost_micros=cost_micros,
            batch=bool(data.get("batch")),
            estimated=True,
        ),
    )


def note_batch_submitted(
    s: Session, run: RunRow, row: EffectRow, *, step: str, turn: int, batch_id: str, lease_until: datetime
) -> None:
    """A turn's request is in a Message Batch: its claim now lasts until the batch's results must have been read,
    so the run waits with nothing in flight (no worker, no message) and the sweeper leaves it alone."""
    row.result = {**(row.result or {}), "batch_id": batch_id}
    row.lease_expires_at = lease_until
    run.updated_at = utcnow()
    queries.add_event(
        s, run.id, "model.batch_submitted", step, turn=turn, batch_id=batch_id, custom_id=row.result.get("custom_id")
    )


def settle_batch_request(s: Session, run: RunRow, row: EffectRow, outcome: str, *, step: str, **data: Any) -> None:
    """A submitted batch request ended (``succeeded``, ``errored``, ``expired``, ``canceled`` or ``lost``)."""
    record(s, run, row.op_key, row.kind, {**(row.result or {}), "outcome": outcome, **data}, row=row)
    queries.add_event(s, run.id, f"model.batch_{outcome}", step, op_key=row.op_key, **data)
