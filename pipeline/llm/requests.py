"""What an agent turn asks the model: tools, instructions and the conversation rebuilt from the ledger.

Everything here is a pure function of the agent class and the ledger rows recorded before the turn, so the
request of a turn is the same however often it is built — by the turn task, by a delivery that takes over a dead
one, or by the sweeper estimating what a lost request cost.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from pipeline.llm.tool_calls import READ_DATA_TOOL, tool_op
from pipeline.models.base import FINAL_ANSWER_TOOL, ModelRequest, ModelResponse
from pipeline.models.caching import CachePolicy, minimum_for
from pipeline.store.tables import EffectRow

if TYPE_CHECKING:
    from pipeline.definitions.agent import Agent
    from pipeline.runtime import Runtime

NUDGE = "Answer by calling the final_answer tool with fields matching its schema."


def turn_op(step: str, n: int) -> str:
    return f"{step}/turn-{n}"


def model_of(runtime: Runtime, agent: type[Agent]) -> str:
    """The model an agent's turns ask for."""
    return agent.model or runtime.settings.default_model


def cache_policy(runtime: Runtime, agent: type[Agent]) -> CachePolicy:
    model = model_of(runtime, agent)
    return CachePolicy(
        mode=agent.prompt_caching,
        ttl=agent.cache_ttl or runtime.settings.cache_ttl,
        min_tokens=minimum_for(model, runtime.settings.cache_minimums),
    )


def tool_definitions(agent: type[Agent]) -> list[dict[str, Any]]:
    # Built from the agent class only (developer-written descriptions and schemas): this is the prefix shared by
    # every run of the agent, so nothing of a run's input may be interpolated here (see pipeline.models.caching).
    tools = [
        {"name": t.name, "description": t.description, "input_schema": t.json_schema()} for t in agent.tool_classes()
    ]
    if tools:
        tools.append(
            {
                "name": READ_DATA_TOOL,
                "description": "Read a tool result that was too large to show, one page at a time.",
                "input_schema": {
                    "type": "object",
                    "properties": {"token": {"type": "string"}, "page": {"type": "integer", "minimum": 1}},
                    "required": ["token"],
                    "additionalProperties": False,
                },
            }
        )
    tools.append(
        {
            "name": FINAL_ANSWER_TOOL,
            "description": "Give your final answer. Call this exactly once, with fields matching the schema.",
            "input_schema": agent.output_json_schema(),
        }
    )
    return tools


def build_request(
    runtime: Runtime, agent: type[Agent], ledger: dict[str, EffectRow], step: str, n: int
) -> ModelRequest:
    return ModelRequest(
        model=model_of(runtime, agent),
        system=agent.instructions,  # the class attribute: developer text, never run data
        messages=transcript(ledger, step, n),
        tools=tool_definitions(agent),
        max_tokens=agent.max_response_tokens,
        agent=agent,
        cache=cache_policy(runtime, agent),
    )


def transcript(ledger: dict[str, EffectRow], step: str, n: int) -> list[dict[str, Any]]:
    """The conversation before turn ``n``, rebuilt from the ledger (the broker never carries it).

    Tool results appear as the model was shown them (``content``: the tool's ``for_model`` projection, capped),
    never as the full result the ledger also keeps.
    """
    payload = ledger[f"{step}/input"].result
    messages: list[dict[str, Any]] = [{"role": "user", "content": json.dumps(payload, sort_keys=True)}]
    for k in range(1, n):
        response = ModelResponse.from_json(ledger[turn_op(step, k)].result)
        messages.append(_assistant_message(response))
        results = []
        for call in response.tool_calls:
            row = ledger.get(tool_op(step, k, call.id))
            if row is not None and row.result is not None:
                results.append(
                    {
                        "type": "tool_result",
                        "tool_use_id": call.id,
                        "content": row.result["content"],
                        "is_error": bool(row.result.get("is_error")),
                    }
                )
        messages.append({"role": "user", "content": results or NUDGE})
    return messages


def _assistant_message(response: ModelResponse) -> dict[str, Any]:
    blocks: list[dict[str, Any]] = [{"type": "text", "text": response.text}] if response.text else []
    blocks += [{"type": "tool_use", "id": c.id, "name": c.name, "input": c.input} for c in response.tool_calls]
    return {"role": "assistant", "content": blocks or [{"type": "text", "text": "(no answer)"}]}


def transcript_through(ledger: dict[str, EffectRow], step: str, n: int) -> list[dict[str, Any]]:
    """The conversation up to and including turn ``n``'s answer (what an approver of its tool calls reads)."""
    return [*transcript(ledger, step, n), _assistant_message(ModelResponse.from_json(ledger[turn_op(step, n)].result))]
