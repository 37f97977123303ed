"""An agent step as a bounded loop of tasks: one task per model turn, one per tool call.

``begin`` (in the step task) records the agent's validated input under ``<step>/input`` and sends turn 1.
``run_turn`` (task ``rubot.agent_turn``) claims ``<step>/turn-<n>``, checks budgets and cancellation, calls the
model, and records the response — with its usage and cost — *before* any tool runs. Then it either finishes
the step (a valid ``final_answer``), or sends the turn's tool calls as a chord (``rubot.agent_tool``, see
:mod:`pipeline.llm.tool_calls`) whose body is turn ``n + 1``.

Every decision is made from the ledger, so a redelivered turn task does not call the model again: a claimed or
recorded turn is never re-requested, and re-sending the tool calls of a recorded turn is harmless because each
tool call is guarded by its own ledger row. A model without a price is refused before the first request; a request
whose response is lost is charged at an estimate (:mod:`pipeline.llm.charges`). A ``batch=True`` step submits its
turns through the Message Batches API instead (:mod:`pipeline.llm.batch_submit`) and parks until beat's
collector records them (:mod:`pipeline.llm.batch_collect`).

Modules: :mod:`pipeline.llm.requests` builds what a turn asks, :mod:`pipeline.llm.charges` what it costs.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from celery import chain, chord, group

from pipeline.definitions.dsl import AgentStep
from pipeline.engine import bodies, compiler, dispatch, leases, recovery, transitions
from pipeline.engine.hooks import ModelTurnInfo
from pipeline.engine.leases import Claim
from pipeline.errors import InvalidAgentOutput, ModelError
from pipeline.llm import batch_submit, budgets, charges, requests
from pipeline.llm.requests import turn_op
from pipeline.llm.tool_calls import TOOL_TASK, tool_op
from pipeline.models.base import FINAL_ANSWER_TOOL, ModelRequest, ModelResponse
from pipeline.models.batches import supports_batches
from pipeline.store import queries
from pipeline.store.tables import DONE, RUNNING, EffectRow

if TYPE_CHECKING:
    from pipeline.definitions.agent import Agent
    from pipeline.definitions.workflow import Workflow
    from pipeline.runtime import Runtime

log = logging.getLogger("rubot.agent")
TURN_TASK = compiler.TURN_TASK
# The kinds of ledger rows that carry a model charge (a recorded turn, or an estimate for a lost response).
CHARGE_KINDS = ("model_turn", "model_charge_estimate")


@dataclass(frozen=True)
class _Call:
    """A claimed synchronous turn about to be sent: its request, its attempt id, and earlier attempts to charge."""

    request: ModelRequest
    attempt: str
    lost: list[str]


# --- start -------------------------------------------------------------------------------------------------


def begin(runtime: Runtime, run_id: str, spec: AgentStep, data: Any, *, task_id: str | None) -> None:
    """Validate the agent's input, record it, and send the first turn."""
    agent = spec.agent
    payload = agent.input_payload(data)
    last: tuple[int, ModelResponse] | None = None
    with runtime.db.transaction() as s:
        ledger = queries.effects_under(s, run_id, f"{spec.name}/")
        if f"{spec.name}/input" not in ledger:
            run = queries.lock_run(s, run_id)
            if charges.refuse_unpriced(runtime, s, run, spec.name, agent):
                return  # before any request: a model Rubot cannot bill is never called
            transitions.record(s, run, f"{spec.name}/input", "agent_input", payload, task_id=task_id)
            queries.add_event(
                s,
                run_id,
                "agent.started",
                spec.name,
                agent=agent.name,
                model=requests.model_of(runtime, agent),
                provider=runtime.model.name,
                batch=spec.batch,
            )
        else:  # dispatched again (recovery): carry on from the last recorded turn
            done = [
                n
                for n in range(1, agent.max_turns + 2)
                if (row := ledger.get(turn_op(spec.name, n))) is not None and row.status == DONE
            ]
            if done:
                last = done[-1], ModelResponse.from_json(ledger[turn_op(spec.name, done[-1])].result)
    if last is None:
        send_turn(runtime, run_id, spec.name, 1)
    else:
        after_turn(runtime, run_id, spec, last[0], last[1], task_id=task_id)


def send_turn(runtime: Runtime, run_id: str, step: str, n: int) -> None:
    runtime.send(TURN_TASK, run_id, step, n)


# --- one turn ----------------------------------------------------------------------------------------------


def run_turn(runtime: Runtime, run_id: str, step: str, n: int, *, task_id: str | None) -> None:
    from pipeline.definitions.registry import workflow_of

    call: _Call | None = None
    submission: batch_submit.Submission | None = None
    response: ModelResponse | None = None
    with runtime.db.transaction() as s:
        run = queries.lock_run(s, run_id)
        workflow = workflow_of(runtime, run.workflow)
        spec = workflow.agent_step(step)
        agent = spec.agent
        ledger = queries.effects_under(s, run_id, f"{step}/")
        step_done = queries.get_effect(s, run_id, step) is not None
        if not step_done:
            if run.status != RUNNING:
                queries.add_event(s, run_id, "agent.turn_skipped", step, turn=n, status=run.status)
                return
            if n > 1 and _missing_tool_results(ledger, step, n - 1):
                return  # a tool call of the previous turn waits for approval; its decision sends this turn again
            row = ledger.get(turn_op(step, n))
            if row is not None and row.status == DONE:
                # A redelivered or re-sent turn: its response is recorded (and paid for); never ask again.
                response = ModelResponse.from_json(row.result)
                queries.add_event(s, run_id, "agent.turn_reused", step, turn=n, task_id=task_id)
            else:
                if charges.refuse_unpriced(runtime, s, run, step, agent):
                    return
                exceeded = _budget_exceeded(s, run, workflow, agent, step, ledger)
                if exceeded is not None:
                    error = exceeded.as_error()
                    queries.add_event(s, run_id, "agent.budget_exceeded", step, turn=n, **error["details"])
                    transitions.fail(s, run, {**error, "step": step}, step=step)
                    return
                if spec.batch and supports_batches(runtime.model):
                    submission = batch_submit.prepare(runtime, s, run, agent, ledger, step, n, task_id=task_id)
                    if submission is None:
                        return  # submitted already (the run waits for the batch), or failed for good
                else:
                    # Claim the turn before calling the model: a concurrent or redelivered copy of this task sees
                    # the live claim and never pays for the same turn twice.
                    call = _claim_turn(runtime, s, run, agent, ledger, step, n, task_id)
                    if call is None:
                        return
    # Outside the transaction from here on: the model call may take long, and continuing the workflow locks
    # the run row again.
    if step_done:
        _continue_workflow(runtime, run_id, step)  # a redelivery after the step finished
        return
    if submission is not None:
        batch_submit.send(runtime, run_id, submission)  # the run now waits for rubot.collect_batches
        return
    if call is not None:
        response = _call_model(runtime, run_id, workflow.name, step, n, agent, call)
    assert response is not None
    after_turn(runtime, run_id, spec, n, response, task_id=task_id)


def _call_model(
    runtime: Runtime, run_id: str, workflow: str, step: str, n: int, agent: type[Agent], call: _Call
) -> ModelResponse:
    request, op = call.request, turn_op(step, n)
    started = time.monotonic()
    try:
        # Everything under the heartbeat, charging lost attempts included: a slow token count must not let the
        # lease lapse while this delivery still means to send.
        with leases.heartbeat(runtime, run_id, op):
            if call.lost:  # earlier attempts of this turn died with their worker: they may have been billed
                charges.record_lost(runtime, run_id, step, n, agent, request, call.lost, batch=False, why="worker lost")
            runtime.hooks.call(
                "model_turn_started",
                ModelTurnInfo(
                    run_id=run_id,
                    workflow=workflow,
                    step=step,
                    turn=n,
                    agent=agent.name,
                    model=request.model,
                    provider=runtime.model.name,
                ),
            )
            started = time.monotonic()
            try:
                response = runtime.model.create_message(request)
            except ModelError as exc:
                if exc.maybe_billed:  # sent, but the answer never came (a read timeout, a dropped connection)
                    why = f"response lost ({(exc.details or {}).get('error', type(exc).__name__)})"
                    charges.record_lost(runtime, run_id, step, n, agent, request, [call.attempt], batch=False, why=why)
                raise
    except BaseException:
        leases.release(runtime, run_id, op)  # no response: the turn is asked again by the task's retry
        raise
    return charges.record_turn(runtime, run_id, step, n, agent, response, time.monotonic() - started)


def _claim_turn(
    runtime: Runtime,
    s: Any,
    run: Any,
    agent: type[Agent],
    ledger: dict[str, EffectRow],
    step: str,
    n: int,
    task_id: str | None,
) -> _Call | None:
    """Claim turn ``n`` and name the attempt about to be sent (committed before the request leaves)."""
    claim, row = leases.claim(
        s, run.id, turn_op(step, n), "model_turn", task_id=task_id, lease_seconds=runtime.settings.lease_seconds
    )
    lost: list[str] = []
    if claim is Claim.HELD:
        log.info("run %s: turn %s/%s is held by another delivery; not calling the model", run.id, step, n)
        return None
    if claim is Claim.EXPIRED:
        # The worker calling the model died. Its request may have been billed (charged below, at an estimate);
        # asking again is the only way forward, and it counts as a recovery.
        lost = charges.attempts_of(row)
        if not recovery.count_recovery(s, run, turn_op(step, n), "lease expired", runtime.settings.max_recoveries):
            from pipeline.definitions.registry import workflow_of

            charges.swept_claim(runtime, s, run, workflow_of(runtime, run.workflow), row)  # set aside: charge now
            return None
        leases.take_over(row, task_id=task_id, lease_seconds=runtime.settings.lease_seconds)
    attempt = queries.new_id("att")[4:20]
    row.result = {"attempt": attempt, "unestimated": lost}
    return _Call(requests.build_request(runtime, agent, ledger, step, n), attempt, lost)


def _missing_tool_results(ledger: dict[str, EffectRow], step: str, n: int) -> bool:
    row = ledger.get(turn_op(step, n))
    if row is None or row.status != DONE:
        return True
    response = ModelResponse.from_json(row.result)
    return any(
        ledger.get(tool_op(step, n, call.id)) is None or ledger[tool_op(step, n, call.id)].status != DONE
        for call in response.tool_calls
        if call.name != FINAL_ANSWER_TOOL
    )


def _budget_exceeded(
    session: Any, run: Any, workflow: type[Workflow], agent: type[Agent], step: str, ledger: dict[str, EffectRow]
) -> budgets.Exceeded | None:
    turns = [r for k, r in ledger.items() if r.kind == "model_turn" and r.status == DONE and "/tool-" not in k]
    charged = [r for r in ledger.values() if r.kind in CHARGE_KINDS and r.status == DONE]
    step_spent = budgets.Spent(
        turns=len(turns),
        tokens=sum(ModelResponse.from_json(r.result).usage.total_tokens for r in turns),
        cost_micros=sum((r.result or {}).get("cost_micros", 0) for r in charged),  # estimates count, too
    )
    exceeded = budgets.check(agent, "step", step_spent)
    if exceeded is not None:
        return exceeded
    run_turns = (
        session.query(EffectRow)
        .filter(EffectRow.run_id == run.id, EffectRow.kind == "model_turn", EffectRow.status == DONE)
        .count()
    )
    run_spent = budgets.Spent(
        turns=run_turns,
        tokens=run.input_tokens + run.output_tokens + run.cache_write_tokens + run.cache_read_tokens,
        cost_micros=run.cost_micros,
    )
    return budgets.check(workflow, "run", run_spent)


# --- after a turn ------------------------------------------------------------------------------------------


def after_turn(
    runtime: Runtime, run_id: str, spec: AgentStep, n: int, response: ModelResponse, *, task_id: str | None
) -> None:
    """What a recorded turn leads to: the step's end (a valid final answer), its tool calls, or the next turn."""
    step, agent = spec.name, spec.agent
    final = next((c for c in response.tool_calls if c.name == FINAL_ANSWER_TOOL), None)
    if final is not None:
        try:
            answer = agent.validate_output(final.input)
        except InvalidAgentOutput as exc:
            if _reject_answer(runtime, run_id, step, n, final.id, exc, agent):
                return
        else:
            _finish(runtime, run_id, step, n, answer, task_id)
            return
    elif not response.tool_calls and _count_attempt(runtime, run_id, step, n, agent):
        return
    calls = [c for c in response.tool_calls if c.name != FINAL_ANSWER_TOOL]
    next_turn = runtime.app.signature(
        TURN_TASK, args=(run_id, step, n + 1), immutable=True, queue=runtime.settings.queue
    )
    tool_sigs = [
        runtime.app.signature(
            TOOL_TASK, args=(run_id, step, n, c.id), immutable=True, queue=runtime.settings.queue
        ).set(ignore_result=False)
        for c in calls
    ]
    if not tool_sigs:
        next_turn.apply_async()
    elif len(tool_sigs) == 1:
        chain(tool_sigs[0].set(ignore_result=True), next_turn).apply_async()
    else:
        join = runtime.app.signature(compiler.FORGET_TASK, queue=runtime.settings.queue)
        chain(chord(group(tool_sigs), join), next_turn).apply_async()


def _reject_answer(
    runtime: Runtime, run_id: str, step: str, n: int, call_id: str, exc: InvalidAgentOutput, agent: type[Agent]
) -> bool:
    """Record the invalid answer as an error result for the model; True if the step failed for good."""
    content = (
        f"Your final answer does not match the schema: {json.dumps(exc.details, sort_keys=True)}. "
        "Call final_answer again with every field corrected."
    )
    with runtime.db.transaction() as s:
        if queries.get_effect(s, run_id, tool_op(step, n, call_id)) is None:
            run = queries.lock_run(s, run_id)
            transitions.answer_tool_call(
                s,
                run,
                tool_op(step, n, call_id),
                FINAL_ANSWER_TOOL,
                {"content": content, "is_error": True},
                event="agent.invalid_output",
                turn=n,
                errors=exc.details,
            )
    return _count_attempt(runtime, run_id, step, n, agent, error=exc)


def _count_attempt(
    runtime: Runtime, run_id: str, step: str, n: int, agent: type[Agent], *, error: InvalidAgentOutput | None = None
) -> bool:
    """Count a turn that did not give a valid answer; fail the step after ``max_output_retries`` of them."""
    with runtime.db.transaction() as s:
        run = queries.lock_run(s, run_id)
        ledger = queries.effects_under(s, run_id, f"{step}/")
        attempts = sum(1 for k in range(1, n + 1) if _is_failed_attempt(ledger, step, k))
        if attempts <= agent.max_output_retries:
            return False
        failure = error or InvalidAgentOutput(f"agent {agent.name!r} gave no valid final answer")
        transitions.fail(
            s,
            run,
            {**failure.as_dict(), "reason": "invalid_agent_output", "step": step, "attempts": attempts},
            step=step,
        )
    return True


def _is_failed_attempt(ledger: dict[str, EffectRow], step: str, k: int) -> bool:
    row = ledger.get(turn_op(step, k))
    if row is None or row.status != DONE:
        return False
    response = ModelResponse.from_json(row.result)
    if not response.tool_calls:
        return True
    final = next((c for c in response.tool_calls if c.name == FINAL_ANSWER_TOOL), None)
    return final is not None and tool_op(step, k, final.id) in ledger


def _finish(runtime: Runtime, run_id: str, step: str, n: int, answer: Any, task_id: str | None) -> None:
    from pipeline.definitions.registry import workflow_of

    with runtime.db.transaction() as s:
        run = queries.lock_run(s, run_id)
        spec = workflow_of(runtime, run.workflow).step_named(step)
        delta = {"set": {spec.state_key if spec is not None else step: answer}, "unset": []}
        if queries.get_effect(s, run_id, step) is None:
            transitions.complete_step(
                s, run, step, "agent", delta, task_id=task_id, extra={"resume_seq": run.dispatch_seq}, turns=n
            )
    _continue_workflow(runtime, run_id, step)


def _continue_workflow(runtime: Runtime, run_id: str, step: str) -> None:
    """Dispatch the rest of the plan; the recorded seq makes a repeated call (redelivery) a no-op."""
    with runtime.db.transaction() as s:
        row = queries.get_effect(s, run_id, step)
        seq = (row.result or {}).get("resume_seq") if row is not None else None
    if seq is not None:
        dispatch.resume(runtime, run_id, seq)


def model_error_to_failure(runtime: Runtime, run_id: str, step: str, exc: ModelError) -> None:
    with runtime.db.transaction() as s:
        run = queries.lock_run(s, run_id)
        queries.add_event(s, run_id, "model.error", step, **exc.as_dict())
        transitions.fail(s, run, {**exc.as_dict(), "step": step}, step=step)


bodies.register_deferred(AgentStep, begin)
