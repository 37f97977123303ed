"""Provider-neutral request and response shapes for one model turn.

An agent step is a loop of turns; each turn sends a :class:`ModelRequest` and gets a :class:`ModelResponse`.
Both are plain data that serialize to JSON, so a turn's response can be recorded in the effects ledger before
any tool it asks for runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pipeline.models.caching import CachePolicy

FINAL_ANSWER_TOOL = "final_answer"


@dataclass(frozen=True)
class Usage:
    """Tokens of one turn as the provider reports them. ``cache_write_tokens`` counts every cache write;
    ``cache_write_1h_tokens`` is the part of it written with the 1-hour TTL (priced higher)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_1h_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens + self.cache_write_tokens + self.cache_read_tokens

    @property
    def prompt_tokens(self) -> int:
        """Every token of the prompt, however it was billed (what long-prompt price tiers look at)."""
        return self.input_tokens + self.cache_write_tokens + self.cache_read_tokens


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    input: dict[str, Any]


@dataclass(frozen=True)
class ModelRequest:
    model: str
    system: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    max_tokens: int
    # The agent class answering; offline and scripted models use it, network providers ignore it.
    agent: Any = None
    # Anthropic's tool_choice, e.g. {"type": "tool", "name": "final_answer"}; None leaves the choice to the model.
    tool_choice: dict[str, Any] | None = None
    # Where prompt-cache breakpoints go (see pipeline.models.caching); None: the provider's old default placement.
    cache: CachePolicy | None = None


@dataclass(frozen=True)
class ModelResponse:
    model: str
    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    stop_reason: str = "end_turn"
    usage: Usage = field(default_factory=Usage)
    provider: str = ""
    # The provider's message id (e.g. "msg_01..."), kept for tracing a turn back to the provider's logs.
    id: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelResponse:
        return cls(
            model=data["model"],
            text=data.get("text", ""),
            stop_reason=data.get("stop_reason", "end_turn"),
            tool_calls=[ToolCall(**c) for c in data.get("tool_calls", [])],
            usage=Usage(**data.get("usage", {})),
            provider=data.get("provider", ""),
            id=data.get("id", ""),
        )


class ModelProvider(Protocol):
    """Answers one model turn. Implementations: ``offline``, ``anthropic`` and the test doubles.

    Optional, looked up with ``getattr``: ``count_tokens(request) -> int`` (the provider's own count of a
    request's prompt tokens, used to estimate a charge whose response was lost), ``bills_requests`` (False for a
    provider whose calls cost nothing, such as the offline model) and the Message Batches methods of
    :class:`~pipeline.models.batches.BatchProvider`.
    """

    name: str

    def create_message(self, request: ModelRequest) -> ModelResponse: ...
