"""An agent step's conversation with its model, one recorded turn at a time.

Each turn's response is written to the effects ledger under ``<step>/turn-<n>`` before anything acts on it,
so a retried step task reads the recorded response instead of paying for the turn again. This version runs
the (single) turn inside the step task; the tool-use loop with one task per turn and per tool call builds on
the same records.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from pipeline.dsl import AgentStep
from pipeline.errors import InvalidAgentOutput
from pipeline.models.base import FINAL_ANSWER_TOOL, ModelRequest, ModelResponse
from pipeline.store import queries

if TYPE_CHECKING:
    from pipeline.runtime import Runtime


def build_request(runtime: Runtime, agent: type, payload: dict[str, Any]) -> ModelRequest:
    final = {
        "name": FINAL_ANSWER_TOOL,
        "description": "Give your final answer. Call this exactly once, with fields matching the schema.",
        "input_schema": agent.output_json_schema(),
    }
    tools = [{"name": t.name, "description": t.description, "input_schema": t.json_schema()} for t in agent._tools]
    return ModelRequest(
        model=agent.model or runtime.settings.default_model,
        system=agent.instructions,
        messages=[{"role": "user", "content": json.dumps(payload, sort_keys=True)}],
        tools=[*tools, final],
        max_tokens=agent.max_tokens,
        agent=agent,
    )


def answer(runtime: Runtime, run_id: str, spec: AgentStep, data: Any, *, task_id: str | None) -> dict[str, Any]:
    agent = spec.agent
    loaded = agent.validate_input(data)
    payload = agent._input().dump(loaded) if agent._input is not None else data
    op_key = f"{spec.name}/turn-1"
    with runtime.db.transaction() as s:
        recorded = queries.get_effect(s, run_id, op_key)
        response = ModelResponse.from_json(recorded.result) if recorded else None
    if response is None:
        response = runtime.model.create_message(build_request(runtime, agent, payload))
        response = _record_turn(runtime, run_id, spec.name, op_key, response, task_id)  # type: ignore[arg-type]
    call = next((c for c in response.tool_calls if c.name == FINAL_ANSWER_TOOL), None)
    if call is None:
        raise InvalidAgentOutput(f"agent {agent.name!r} ended its turn without a final answer",
                                 details={"text": response.text[:500]})
    return agent.validate_output(call.input)


def _record_turn(runtime: Runtime, run_id: str, step: str, op_key: str, response: ModelResponse,
                 task_id: str | None) -> ModelResponse:
    with runtime.db.transaction() as s:
        run = queries.lock_run(s, run_id)
        existing = queries.get_effect(s, run_id, op_key)
        if existing is not None:  # another delivery recorded this turn first: its response is the truth
            return ModelResponse.from_json(existing.result)
        queries.add_effect(s, run_id, op_key, "model_turn", response.to_json(), task_id)
        usage = response.usage
        run.input_tokens += usage.input_tokens
        run.output_tokens += usage.output_tokens
        run.cache_write_tokens += usage.cache_write_tokens
        run.cache_read_tokens += usage.cache_read_tokens
        queries.add_event(s, run_id, "model.turn", step, op_key=op_key, provider=response.provider,
                          model=response.model, stop_reason=response.stop_reason,
                          usage={"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens},
                          note=response.text[:200] if response.provider == "offline" else None)
    return response
