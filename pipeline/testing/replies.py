"""Script entries shared by the test doubles: what the "model" answers next, or how it fails.

The same script works in process (:class:`~pipeline.testing.scripted.ScriptedModel`) and over HTTP
(:class:`~pipeline.testing.stand_in.MessagesStandIn`)::

    script = [
        reply(tool_uses=[("lookup_order", {"order_id": "o_1"})], usage={"input_tokens": 900, "output_tokens": 40}),
        error(429, retry_after=2),
        reply(tool_uses=[("final_answer", {"approved": True})]),
    ]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.models.base import ToolCall, Usage

# Anthropic's error "type" for each status (https://docs.anthropic.com/en/api/errors).
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
# Usage may be given with Rubot's names or the wire names.
_WIRE_USAGE = {"cache_creation_input_tokens": "cache_write_tokens", "cache_read_input_tokens": "cache_read_tokens"}


@dataclass(frozen=True)
class ToolUse:
    """One ``tool_use`` block to answer with; ``id`` empty means "generate a deterministic one"."""

    name: str
    input: dict[str, Any]
    id: str = ""


@dataclass(frozen=True)
class Reply:
    """A successful turn: text and/or tool uses, with the usage to report (``None``: the stand-in works it out
    from the request, simulating prompt caching; the scripted model reports zeros)."""

    text: str = ""
    tool_uses: tuple[ToolUse, ...] = ()
    usage: Usage | None = None
    stop_reason: str | None = None  # None: "tool_use" when there are tool uses, else "end_turn"
    model: str | None = None  # None: echo the requested model
    id: str = ""  # "" : generated

    @property
    def effective_stop_reason(self) -> str:
        return self.stop_reason or ("tool_use" if self.tool_uses else "end_turn")


@dataclass(frozen=True)
class ErrorReply:
    """A failed turn: an HTTP status with Anthropic's error body and optional ``retry-after`` seconds."""

    status: int
    message: str = ""
    retry_after: float | None = None
    error_type: str = ""

    @property
    def effective_type(self) -> str:
        return self.error_type or ERROR_TYPES.get(self.status, "api_error")

    @property
    def effective_message(self) -> str:
        return self.message or f"stand-in {self.effective_type} ({self.status})"


def reply(
    text: str = "",
    *,
    tool_uses: Sequence[ToolUse | ToolCall | Mapping[str, Any] | Sequence[Any]] = (),
    usage: Usage | Mapping[str, int] | None = None,
    stop_reason: str | None = None,
    model: str | None = None,
    id: str = "",
) -> Reply:
    """A successful turn. ``tool_uses`` items: ``("name", {args})``, ``("name", {args}, "id")``, dicts or ToolCalls."""
    return Reply(
        text=text,
        tool_uses=tuple(_tool_use(item) for item in tool_uses),
        usage=as_usage(usage) if usage is not None else None,
        stop_reason=stop_reason,
        model=model,
        id=id,
    )


def error(status: int, *, retry_after: float | None = None, message: str = "", error_type: str = "") -> ErrorReply:
    """A failed turn, e.g. ``error(429, retry_after=3)``, ``error(529)``, ``error(500)``, ``error(400)``."""
    if not 400 <= status <= 599:
        raise ValueError(f"error status must be 4xx or 5xx, got {status}")
    return ErrorReply(status=status, message=message, retry_after=retry_after, error_type=error_type)


def as_usage(usage: Usage | Mapping[str, int] | None) -> Usage:
    """A :class:`Usage` from None, a Usage, or a mapping with Rubot's or Anthropic's field names."""
    if usage is None:
        return Usage()
    if isinstance(usage, Usage):
        return usage
    fields = {_WIRE_USAGE.get(key, key): int(value or 0) for key, value in usage.items()}
    try:
        return Usage(**fields)
    except TypeError:
        raise ValueError(f"unknown usage fields in {dict(usage)!r}") from None


def spec_from_dict(spec: Mapping[str, Any]) -> Reply | ErrorReply:
    """A script entry from a dict: ``{"status": 429, ...}`` is an error, anything else :func:`reply` keywords."""
    data = dict(spec)
    if "status" in data:
        return error(**data)
    if "tool_calls" in data:  # ModelResponse's name for the same thing
        data["tool_uses"] = data.pop("tool_calls")
    try:
        return reply(**data)
    except TypeError as exc:
        raise ValueError(f"bad reply spec {spec!r}: {exc}") from None


def _tool_use(item: ToolUse | ToolCall | Mapping[str, Any] | Sequence[Any]) -> ToolUse:
    if isinstance(item, ToolUse):
        return item
    if isinstance(item, ToolCall):
        return ToolUse(name=item.name, input=dict(item.input), id=item.id)
    if isinstance(item, Mapping):
        return ToolUse(name=item["name"], input=dict(item.get("input", {})), id=item.get("id", ""))
    if isinstance(item, Sequence) and not isinstance(item, str) and len(item) in (2, 3):
        return ToolUse(name=item[0], input=dict(item[1]), id=item[2] if len(item) == 3 else "")
    raise ValueError(f"a tool use is ('name', {{args}}[, 'id']), a dict or a ToolCall; got {item!r}")
