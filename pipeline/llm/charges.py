"""What an agent's model requests cost, recorded so that a run's stored cost is never below the provider's bill.

* **Before any request**, the model must have a price (:func:`refuse_unpriced`): a model Rubot cannot bill is
  refused and the run fails with reason ``unpriced_model`` — nothing is sent, so nothing is paid for.
* **A response** is priced from the usage the provider reports (:func:`record_turn`), at half price when it came
  through the Message Batches API.
* **A request whose response was lost** — the worker died while waiting (its lease expired and another delivery
  or the sweeper took the turn over), or the connection broke after the request was sent (a read timeout) — may
  have been billed all the same. Each such *attempt* is recorded once, as an estimated charge under its own ledger
  key ``<step>/turn-<n>/lost-<attempt>`` (:func:`record_lost`): the prompt's tokens counted by the provider's
  token-counting endpoint (or, when that fails or no request can be made, an upper bound counted locally), every
  one priced at the dearest rate it could have been billed at, plus ``max_tokens`` of output — the most the
  provider can have charged. It is marked ``estimated`` in the ledger, the event trail and the run's
  ``estimated_cost_micros``.

Attempts are named before they are sent: the claimed turn row holds the current attempt's id (committed before
the request leaves), so whoever finds the claim dead knows which attempt to charge for.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pipeline.definitions.dsl import AgentStep
from pipeline.engine import recovery, transitions
from pipeline.errors import UnpricedModel
from pipeline.llm import pricing, requests
from pipeline.models import tokens
from pipeline.models.base import ModelRequest, ModelResponse
from pipeline.store import queries
from pipeline.store.tables import DONE, EffectRow, RunRow

if TYPE_CHECKING:
    from pipeline.definitions.agent import Agent
    from pipeline.definitions.workflow import Workflow
    from pipeline.runtime import Runtime

log = logging.getLogger("rubot.charges")


def lost_op(turn_op: str, attempt: str) -> str:
    return f"{turn_op}/lost-{attempt}"


def attempts_of(row: EffectRow | None) -> list[str]:
    """The attempts a claimed turn row names: the current one and any not yet charged from earlier take-overs."""
    result = (row.result or {}) if row is not None else {}
    found = [*result.get("unestimated", []), result.get("attempt")]
    return [a for a in found if isinstance(a, str)]


# --- before a request -----------------------------------------------------------------------------------------


def refuse_unpriced(runtime: Runtime, s: Session, run: RunRow, step: str, agent: type[Agent]) -> bool:
    """Fail the run (True) when the agent's model has no price, before anything is sent to the provider."""
    if not getattr(runtime.model, "bills_requests", True):
        return False  # the offline model: no request costs anything
    model = requests.model_of(runtime, agent)
    try:
        pricing.price_for(model, runtime.settings.prices)
    except UnpricedModel as exc:
        queries.add_event(s, run.id, "model.unpriced", step, model=model)
        transitions.fail(s, run, {**exc.as_dict(), "model": model, "step": step}, step=step)
        return True
    return False


# --- responses --------------------------------------------------------------------------------------------------


def turn_cost(runtime: Runtime, requested: str, response: ModelResponse, *, batch: bool) -> int:
    """The cost of a response; priced as the requested model when the reported name has no entry of its own."""
    prices = runtime.settings.prices
    price = pricing.find_price(response.model, prices) if response.model else None
    return pricing.cost_micros(response.usage, price or _price_or_dearest(requested, prices), batch=batch)


def record_turn(
    runtime: Runtime,
    run_id: str,
    step: str,
    n: int,
    agent: type[Agent],
    response: ModelResponse,
    duration: float | None,
    *,
    batch: bool = False,
) -> ModelResponse:
    cost = turn_cost(runtime, requests.model_of(runtime, agent), response, batch=batch)
    op = requests.turn_op(step, n)
    with runtime.db.transaction() as s:
        run = queries.lock_run(s, run_id)
        row = queries.get_effect(s, run_id, op)
        if row is not None and row.status == DONE:  # recorded by another delivery: that one stands
            return ModelResponse.from_json(row.result)
        record_response(
            s, run, row, op, step=step, n=n, agent=agent, response=response, cost=cost, batch=batch, duration=duration
        )
    return response


def record_response(
    s: Session,
    run: RunRow,
    row: EffectRow | None,
    op: str,
    *,
    step: str,
    n: int,
    agent: type[Agent],
    response: ModelResponse,
    cost: int,
    batch: bool,
    duration: float | None = None,
) -> None:
    usage = response.usage
    transitions.record_model_turn(
        s,
        run,
        row,
        op_key=op,
        step=step,
        turn=n,
        agent=agent.name,
        response=response.to_json(),
        cost_micros=cost,
        usage={
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
            "cache_read_tokens": usage.cache_read_tokens,
            "cache_write_1h_tokens": usage.cache_write_1h_tokens,
        },
        duration_seconds=duration,
        batch=batch,
        tool_calls=[c.name for c in response.tool_calls],
        note=response.text[:200] if response.provider == "offline" else None,
    )


# --- lost responses ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    input_tokens: int
    output_tokens: int
    cost_micros: int
    counted_by: str  # "count_tokens" or "local_upper_bound"


def estimate(runtime: Runtime, request: ModelRequest, *, batch: bool, local_only: bool = False) -> Estimate:
    """The most a request can have cost: its prompt counted by the provider (else bounded locally), every token at
    the dearest rate, plus ``max_tokens`` of output."""
    counted, by = None, "local_upper_bound"
    counter = getattr(runtime.model, "count_tokens", None)
    if counter is not None and not local_only:
        try:
            counted, by = int(counter(request)), "count_tokens"
        except Exception as exc:  # the estimate must not fail: fall back to the local bound
            log.warning("counting tokens for an estimate failed (%s); using the local upper bound", exc)
    if counted is None:
        counted = tokens.upper_bound(request.system, request.tools, request.messages)
    price = _price_or_dearest(request.model, runtime.settings.prices)
    cost = pricing.ceiling_micros(counted, request.max_tokens, price, batch=batch)
    return Estimate(counted, request.max_tokens, cost, by)


def record_lost(
    runtime: Runtime,
    run_id: str,
    step: str,
    n: int,
    agent: type[Agent],
    request: ModelRequest,
    attempts: list[str],
    *,
    batch: bool,
    why: str,
) -> None:
    """Charge each attempt of turn ``n`` not charged yet at an estimate (one transaction per attempt)."""
    op = requests.turn_op(step, n)
    for attempt in attempts:
        with runtime.db.transaction() as s:
            if queries.get_effect(s, run_id, lost_op(op, attempt)) is not None:
                continue
        guess = estimate(runtime, request, batch=batch)
        try:
            with runtime.db.transaction() as s:
                run = queries.lock_run(s, run_id)
                if queries.get_effect(s, run_id, lost_op(op, attempt)) is None:
                    charge_estimate(
                        s,
                        run,
                        op,
                        attempt,
                        guess,
                        step=step,
                        n=n,
                        agent=agent,
                        model=request.model,
                        batch=batch,
                        why=why,
                    )
        except IntegrityError:
            pass  # another delivery charged this attempt first: once is enough


def charge_estimate(
    s: Session,
    run: RunRow,
    op: str,
    attempt: str,
    guess: Estimate,
    *,
    step: str,
    n: int,
    agent: type[Agent],
    model: str,
    batch: bool,
    why: str,
) -> None:
    transitions.record_estimated_charge(
        s,
        run,
        lost_op(op, attempt),
        step=step,
        turn=n,
        agent=agent.name,
        model=model,
        usage={"input_tokens": guess.input_tokens, "output_tokens": guess.output_tokens},
        cost_micros=guess.cost_micros,
        counted_by=guess.counted_by,
        attempt=attempt,
        batch=batch,
        why=why,
    )


def _price_or_dearest(model: str, prices: Any) -> pricing.ModelPrice:
    """The model's price; if it vanished from the table since the request, the dearest entry (never under)."""
    price = pricing.find_price(model, prices)
    if price is not None:
        return price
    if not prices:
        raise UnpricedModel(f"no price for model {model!r} and an empty price table")
    return max(prices.values(), key=lambda p: (p.output, max(p.input, p.cache_write_1h_price)))


# --- the sweeper's share ------------------------------------------------------------------------------------------


def swept_claim(runtime: Runtime, s: Session, run: RunRow, workflow: type[Workflow], row: EffectRow) -> None:
    """A dead turn claim found by the sweeper (which holds the run's lock): charge its attempts with the local upper
    bound — no request is made while the lock is held — before the claim is dropped and the run dispatched again."""
    batch = row.kind == "batch_request"
    turn_key = row.op_key.rsplit("/", 1)[0] if batch else row.op_key
    step, _, number = turn_key.rpartition("/turn-")
    spec = workflow.step_named(step)
    if not isinstance(spec, AgentStep) or not number.isdigit():
        return
    attempts = attempts_of(row)
    if batch and (row.result or {}).get("custom_id"):
        attempts = [str(row.result["custom_id"])]
    if not attempts:
        return
    n = int(number)
    ledger = queries.effects_under(s, run.id, f"{step}/")
    request = requests.build_request(runtime, spec.agent, ledger, step, n)
    guess = estimate(runtime, request, batch=batch, local_only=True)
    for attempt in attempts:
        if queries.get_effect(s, run.id, lost_op(turn_key, attempt)) is None:
            charge_estimate(
                s,
                run,
                turn_key,
                attempt,
                guess,
                step=step,
                n=n,
                agent=spec.agent,
                model=request.model,
                batch=batch,
                why="worker lost",
            )


recovery.register_dead_claim("model_turn", swept_claim)
recovery.register_dead_claim("batch_request", swept_claim)
