"""Local token counts, for when the provider's own count is not at hand. Two different questions, two answers.

* :func:`approximate` — about how many tokens a piece of a prompt is, to decide whether a cache breakpoint can
  reach a model's minimum cacheable length. Anthropic's tokenizers give roughly four bytes of English or JSON per
  token; being a little off only means a breakpoint is placed where it caches nothing (no charge) or left out
  where it would have saved a little.
* :func:`upper_bound` — a count that is never below the provider's, for an estimated charge (a request whose
  response was lost, when the token-counting endpoint cannot be reached either). A token is never shorter than one
  byte of UTF-8, so the bytes of the request's JSON bound its text; a fixed allowance covers what the API adds
  around messages and tool definitions (role markers, the tool-use system prompt). It over-counts by about four
  times, which is the price of a bill that is never under-reported.
"""

from __future__ import annotations

import json
from typing import Any

BYTES_PER_TOKEN = 4
#: The API wraps tool definitions in a system prompt of its own (a few hundred tokens); allow generously.
TOOLS_ALLOWANCE = 1000
#: Role and block markers around every message block.
BLOCK_ALLOWANCE = 10


def canonical(block: Any) -> str:
    """The JSON of a prompt block with sorted keys and no ``cache_control`` (which is not part of the prompt)."""
    if isinstance(block, dict) and "cache_control" in block:
        block = {k: v for k, v in block.items() if k != "cache_control"}
    return json.dumps(block, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def approximate(block: Any) -> int:
    """About how many tokens ``block`` (a tool definition, a system text or a message block) is."""
    size = len(canonical(block).encode())
    return max(1, -(-size // BYTES_PER_TOKEN))


def upper_bound(system: str, tools: list[dict[str, Any]], messages: list[dict[str, Any]]) -> int:
    """A token count of the whole prompt that is never below the provider's (see the module docstring)."""
    total = len(system.encode()) + BLOCK_ALLOWANCE if system else 0
    if tools:
        total += TOOLS_ALLOWANCE + sum(len(canonical(tool).encode()) for tool in tools)
    for message in messages:
        content = message.get("content")
        blocks = content if isinstance(content, list) else [content]
        total += sum(len(canonical(block).encode()) + BLOCK_ALLOWANCE for block in blocks)
    return total
