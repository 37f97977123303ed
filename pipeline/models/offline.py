"""The deterministic offline model: answers with the agent's own ``offline()`` rule, says it is offline.

An agent that overrides ``offline_turn(request)`` plays a multi-turn transcript instead: it is asked for every
turn, with the conversation so far, and may call its tools before its final answer (the refund desk's
``SupportAgent`` does).

Used when no model API key is configured, so ``rubot demo`` runs on a machine with no network. It never
pretends to be a language model: every response is marked ``provider="offline"`` and the run's events say so.
"""

from __future__ import annotations

import json
from dataclasses import replace

from pipeline.errors import ModelError
from pipeline.models.base import FINAL_ANSWER_TOOL, ModelRequest, ModelResponse, ToolCall


class OfflineModel:
    name = "offline"
    #: Its answers cost nothing, so an agent naming a model without a price may still run offline (the demo).
    bills_requests = False

    def create_message(self, request: ModelRequest) -> ModelResponse:
        agent = request.agent
        if agent is None or not agent.has_offline_answer():
            raise ModelError(
                f"agent {getattr(agent, 'name', '?')!r} has no offline answer and no model is configured; "
                "set ANTHROPIC_API_KEY to use a real model"
            )
        if agent.plays_offline_turns():
            # A multi-turn transcript: the agent decides each turn from the conversation so far. The response is
            # still marked as the offline provider's, whatever model name it reports for pricing.
            return replace(agent().offline_turn(request), provider=self.name)
        # The first user message carries the agent's validated input as JSON (see pipeline.llm.agent_loop).
        content = request.messages[0]["content"] if request.messages else "{}"
        answer = agent().offline(json.loads(content) if isinstance(content, str) else {})
        return ModelResponse(
            model="offline",
            provider=self.name,
            stop_reason="tool_use",
            text="Offline model: deterministic rule-based answer (no ANTHROPIC_API_KEY configured).",
            tool_calls=[ToolCall(id="offline-1", name=FINAL_ANSWER_TOOL, input=answer)],
        )
