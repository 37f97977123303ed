"""``Agent``: instructions, typed input and output, and the tools a model may call."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import marshmallow
from marshmallow import Schema

from pipeline.definitions import registry, schemas
from pipeline.definitions.tool import Tool, assign_name, resolve
from pipeline.errors import DefinitionError, InvalidAgentInput, InvalidAgentOutput

if TYPE_CHECKING:
    from pipeline.models.base import ModelRequest, ModelResponse

#: The model of agents that name none, unless RUBOT_MODEL says otherwise: the newest Sonnet in the SDK's model list
#: that answers without thinking blocks unless asked (Rubot's transcripts do not carry thinking blocks back).
DEFAULT_MODEL = "claude-sonnet-4-6"
CACHE_MODES = ("conversation", "prefix", "off")
CACHE_TTLS = ("5m", "1h")


class Agent:
    """Subclass and declare ``instructions``, ``input_schema`` and ``output_schema``.

    The model advises: an agent step's result is the model's final answer, validated against
    ``output_schema`` before the workflow sees it. ``offline(input)`` may return a deterministic answer used
    by the offline model (demo, no API key); it is never used when a real model is configured.
    """

    name: ClassVar[str]
    instructions: ClassVar[str] = ""
    input_schema: ClassVar[Any] = None
    output_schema: ClassVar[Any] = None
    tools: ClassVar[tuple[Any, ...]] = ()
    model: ClassVar[str | None] = None
    #: The Messages API ``max_tokens`` of each response.
    max_response_tokens: ClassVar[int] = 4096
    #: Budgets of one agent step, checked before every model call.
    max_turns: ClassVar[int] = 12
    max_tokens: ClassVar[int] = 100_000
    max_cost: ClassVar[float | None] = None  # USD
    #: How many times an invalid final answer is sent back with its field errors before the step fails.
    max_output_retries: ClassVar[int] = 2
    #: Tool results larger than this (bytes of JSON) are stored; the model gets a token for ``read_data``.
    result_cap_bytes: ClassVar[int] = 4096
    policy: ClassVar[Any] = None
    #: Prompt caching: "conversation" (tools, system and the growing conversation; see pipeline.models.caching),
    #: "prefix" (system and last tool only, the placement before conversation caching) or "off".
    prompt_caching: ClassVar[str] = "conversation"
    #: Cache lifetime, "5m" or "1h" (None: RUBOT_CACHE_TTL). "1h" keeps the conversation cached across an approval
    #: pause of up to an hour; its cache writes cost 2x the input price instead of 1.25x.
    cache_ttl: ClassVar[str | None] = None

    _input: ClassVar[type[Schema] | None]
    _output: ClassVar[type[Schema] | None]
    _tools: ClassVar[tuple[type[Tool], ...]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        owner = cls.__name__
        assign_name(cls)
        if not isinstance(cls.instructions, str) or not cls.instructions.strip():
            raise DefinitionError(f"{owner}.instructions must be a non-empty string")
        if cls.output_schema is None:
            raise DefinitionError(f"{owner}.output_schema is required: the model's answer is always validated")
        for attr in ("max_response_tokens", "max_turns", "max_tokens", "result_cap_bytes"):
            value = getattr(cls, attr)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise DefinitionError(f"{owner}.{attr} must be a positive integer, got {value!r}")
        if not isinstance(cls.max_output_retries, int) or cls.max_output_retries < 0:
            raise DefinitionError(f"{owner}.max_output_retries must be a non-negative integer")
        if cls.prompt_caching not in CACHE_MODES:
            raise DefinitionError(f"{owner}.prompt_caching must be one of {CACHE_MODES}, got {cls.prompt_caching!r}")
        if cls.cache_ttl is not None and cls.cache_ttl not in CACHE_TTLS:
            raise DefinitionError(f"{owner}.cache_ttl must be one of {CACHE_TTLS} or None, got {cls.cache_ttl!r}")
        cls._input = schemas.make_schema(cls.input_schema, owner=owner, attribute="input_schema")
        cls._output = schemas.make_schema(cls.output_schema, owner=owner, attribute="output_schema")
        cls._tools = tuple(resolve(t, where=f"{owner}.tools") for t in cls.tools)
        names = [t.name for t in cls._tools]
        if len(set(names)) != len(names):
            raise DefinitionError(f"{owner}.tools lists a tool name twice: {names}")
        reserved = set(names) & {"final_answer", "read_data"}
        if reserved:
            raise DefinitionError(f"{owner}.tools: {sorted(reserved)} are reserved for Rubot's built-in tools")
        registry.agents.add(cls.name, cls)

    def offline(self, input: dict[str, Any]) -> dict[str, Any]:
        """A deterministic answer for the offline model. Agents without one cannot run offline."""
        raise NotImplementedError

    def offline_turn(self, request: ModelRequest) -> ModelResponse:
        """A deterministic *turn* for the offline model: override to play multi-turn transcripts (tool calls,
        then a ``final_answer``) from the conversation so far (``request.messages``, rebuilt from the ledger).

        When overridden it is used instead of :meth:`offline`. The default is not used (``offline`` answers).
        """
        raise NotImplementedError

    @classmethod
    def tool_classes(cls) -> tuple[type[Tool], ...]:
        """The resolved Tool classes the model may call (``tools`` as declared, names looked up)."""
        return cls._tools

    @classmethod
    def tool_named(cls, name: str) -> type[Tool] | None:
        return next((t for t in cls._tools if t.name == name), None)

    @classmethod
    def input_payload(cls, data: Any) -> Any:
        """``data`` validated and narrowed to the declared input fields, in JSON form: what the model sees."""
        loaded = cls.validate_input(data)
        return cls._input().dump(loaded) if cls._input is not None else data

    @classmethod
    def has_offline_answer(cls) -> bool:
        return cls.offline is not Agent.offline or cls.plays_offline_turns()

    @classmethod
    def plays_offline_turns(cls) -> bool:
        """Whether the offline model asks :meth:`offline_turn` for each turn (it is overridden)."""
        return cls.offline_turn is not Agent.offline_turn

    @classmethod
    def validate_input(cls, data: Any) -> Any:
        """Validate and narrow the step input: the model only ever sees the fields ``input_schema`` declares."""
        return schemas.load(
            cls._input, data, error=InvalidAgentInput, what=f"input of agent {cls.name!r}", unknown=marshmallow.EXCLUDE
        )

    @classmethod
    def validate_output(cls, data: Any) -> Any:
        return schemas.validate_output(
            cls._output, data, error=InvalidAgentOutput, what=f"answer of agent {cls.name!r}"
        )

    @classmethod
    def output_json_schema(cls) -> dict[str, Any]:
        return schemas.json_schema(cls._output)
