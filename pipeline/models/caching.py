"""Where prompt-cache breakpoints go in a Messages API request, and why each one is safe.

Anthropic caches a prompt *prefix* — tools, then system, then messages, in that order — at each block marked
with ``cache_control``; a later request whose prompt starts with exactly the same bytes reads that prefix at a
tenth of the input price instead of paying for it again. A request may mark at most four blocks; a lookup from a
breakpoint finds an earlier entry only within about twenty blocks before it; and a prefix shorter than the
model's minimum cacheable length is not cached at all (no error, no charge, the breakpoint is simply wasted).

In ``conversation`` mode (the default for agents) :func:`shape` places, in order of value, at most four:

1. **The end of the conversation** (the last block of the last message). This turn writes the whole
   conversation to the cache; the next turn, which repeats it and adds the model's answer and the tool results,
   reads it back. Placed on every request: below the minimum it costs nothing, and as the conversation grows
   past the minimum it starts caching — so a model whose tools + system are too short to cache alone (Haiku 4.5,
   4,096 tokens) still has its conversation cached once it is long enough.
2. **The end of the previous request**, only when more than the lookback window of blocks was added since (a
   turn with many parallel tool calls): without it, the lookup from (1) could not reach last turn's entry.
3. **The system prompt** and 4. **the last tool definition**, each only when the prefix up to it reaches the
   model's minimum, so no breakpoint is spent where it cannot cache. These entries are shared by every run of
   the agent.

**Untrusted content never enters the shared prefix.** Tools and system come from the Agent class (its
``instructions`` and its tools' schemas, written by the developer); user input and tool results only ever appear in
``messages``. The entries of (3) and (4) therefore hold developer text only. The entries of (1) and (2) do
contain this run's user input and tool results, but a cache entry is found only by a request whose prompt is
byte-for-byte identical up to it — in practice the next turn of the same conversation — so nothing a user or a tool
writes can change what another run's prompt reads from the cache, and caching never changes what the model
sees, only what the prefix costs.

``prefix`` mode is the placement Rubot used before conversation caching (system + last tool, no minimum
check); ``off`` sends no breakpoint. Both exist so the benefit can be measured (``scripts/cache_bench.py``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.models import tokens

MODES = ("conversation", "prefix", "off")
TTLS = ("5m", "1h")
MAX_BREAKPOINTS = 4
LOOKBACK_BLOCKS = 20
#: The minimum for a model the table does not know: the largest published one, so no breakpoint is spent on a
#: prefix that might be too short (the conversation breakpoint is placed regardless).
UNKNOWN_MINIMUM = 4096


@dataclass(frozen=True)
class CachePolicy:
    """How to cache one request: ``mode`` (conversation, prefix, off), ``ttl`` (5m, 1h) and the model's minimum."""

    mode: str = "conversation"
    ttl: str = "5m"
    min_tokens: int = UNKNOWN_MINIMUM

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"cache mode must be one of {MODES}, got {self.mode!r}")
        if self.ttl not in TTLS:
            raise ValueError(f"cache TTL must be one of {TTLS}, got {self.ttl!r}")

    @property
    def control(self) -> dict[str, str]:
        """The ``cache_control`` value of a breakpoint (the 5-minute TTL is the API's default, left implicit)."""
        return {"type": "ephemeral", "ttl": "1h"} if self.ttl == "1h" else {"type": "ephemeral"}


def minimum_for(model: str, minimums: Mapping[str, int]) -> int:
    """The minimum cacheable length of ``model`` (its alias for a dated snapshot name), else :data:`UNKNOWN_MINIMUM`."""
    if model in minimums:
        return minimums[model]
    alias = model.rsplit("-", 1)[0] if model[-8:].isdigit() else model
    return minimums.get(alias, UNKNOWN_MINIMUM)


@dataclass(frozen=True)
class Shaped:
    """The request parts with their breakpoints, and a label for each breakpoint (for tests and traces)."""

    system: list[dict[str, Any]] | None
    tools: list[dict[str, Any]]
    messages: list[dict[str, Any]]
    breakpoints: tuple[str, ...]


def shape(
    system: str, tools: list[dict[str, Any]], messages: list[dict[str, Any]], policy: CachePolicy | None
) -> Shaped:
    """The system blocks, tools and messages of a request with ``cache_control`` where ``policy`` says.

    The caller's lists are never changed (a stray ``cache_control`` left on a shared tool definition would add a
    breakpoint to every later request).
    """
    policy = policy or CachePolicy(mode="prefix")
    definitions = [_tool_definition(tool) for tool in tools]
    system_blocks: list[dict[str, Any]] | None = [{"type": "text", "text": system}] if system else None
    if policy.mode == "off":
        return Shaped(system_blocks, definitions, messages, ())
    if policy.mode == "prefix":
        labels = []
        if system_blocks:
            system_blocks[-1]["cache_control"] = policy.control
            labels.append("system")
        if definitions:
            definitions[-1]["cache_control"] = policy.control
            labels.append("tools")
        return Shaped(system_blocks, definitions, messages, tuple(labels))
    return _conversation(system_blocks, definitions, _as_blocks(messages), policy)


def _conversation(
    system: list[dict[str, Any]] | None,
    tools: list[dict[str, Any]],
    messages: list[dict[str, Any]],
    policy: CachePolicy,
) -> Shaped:
    # Every block of the prompt in API order, with the running token count up to and including it.
    blocks: list[dict[str, Any]] = [*tools, *(system or [])]
    ends: list[int] = []  # index in `blocks` of each message's last block
    for message in messages:
        blocks.extend(message["content"])
        ends.append(len(blocks) - 1)
    running, total = [], 0
    for block in blocks:
        total += tokens.approximate(block)
        running.append(total)

    chosen: list[tuple[str, int]] = []
    if ends:
        chosen.append(("conversation", ends[-1]))
        if len(ends) >= 3:
            previous = ends[-3]  # the last block of the previous request (one assistant + one user message ago)
            if ends[-1] - previous >= LOOKBACK_BLOCKS and running[previous] >= policy.min_tokens:
                chosen.append(("previous request", previous))
    if system and running[len(tools)] >= policy.min_tokens:
        chosen.append(("system", len(tools)))
    if tools and running[len(tools) - 1] >= policy.min_tokens:
        chosen.append(("tools", len(tools) - 1))
    chosen = chosen[:MAX_BREAKPOINTS]
    for _, index in chosen:
        blocks[index]["cache_control"] = policy.control
    order = sorted(chosen, key=lambda item: item[1])
    return Shaped(system, tools, messages, tuple(label for label, _ in order))


def _as_blocks(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Deep copies with string content written as one text block: a breakpoint needs a block to sit on, and the
    same message must render the same way on every turn, or the prefix would not match the cached one."""
    shaped = []
    for message in messages:
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else copy.deepcopy(content)
        shaped.append({**message, "content": blocks})
    return shaped


def _tool_definition(tool: Mapping[str, Any]) -> dict[str, Any]:
    # Only the three tool fields, in a fresh dict: nothing the caller left on it reaches the request.
    definition: dict[str, Any] = {"name": tool["name"], "input_schema": tool["input_schema"]}
    if tool.get("description"):
        definition["description"] = tool["description"]
    return definition
