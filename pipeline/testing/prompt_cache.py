"""A simulation of Anthropic's prompt cache, for the Messages API stand-in.

It follows the documented behaviour closely enough that placing breakpoints well or badly shows in the bill:

* The prompt is the sequence of blocks tools → system → messages (a string ``content`` is one text block). Its
  tokens are counted with a fixed stand-in tokenizer (:func:`count`: one token per started three and a half bytes
  of a block's JSON) that is deliberately *not* the one Rubot's planner approximates with.
* A block with ``cache_control`` is a breakpoint (at most four, 1-hour ones before 5-minute ones). An entry is the
  hash of the model and every block up to the breakpoint.
* **Reads:** from each breakpoint, the cache is looked up at that block and at up to :data:`LOOKBACK` blocks
  before it; the longest live entry found is read (``cache_read_input_tokens``) and its lifetime renewed.
* **Writes:** every breakpoint after the read whose prefix reaches the model's minimum cacheable length creates
  an entry with its TTL; the tokens from the end of the read to the last such breakpoint are written
  (``cache_creation_input_tokens``, split into 5-minute and 1-hour parts by the breakpoint that ends each stretch).
  A prefix below the minimum is not cached and costs plain input.
* Everything after the last read or written breakpoint is plain input. Entries live 5 minutes or 1 hour from
  their last use on the simulation's clock, which a test can move forward (:meth:`PromptCache.advance`).
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.models.base import Usage

LOOKBACK = 20
MAX_BREAKPOINTS = 4
BYTES_PER_TOKEN = 3.5
TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}
DEFAULT_MINIMUM = 1024


class CacheRequestError(ValueError):
    """A request the real API would refuse (too many breakpoints, TTLs out of order); answered with a 400."""


def count(block: Any) -> int:
    """The stand-in tokenizer: tokens of one prompt block (its JSON without ``cache_control``)."""
    if isinstance(block, dict):
        block = {k: v for k, v in block.items() if k != "cache_control"}
    size = len(json.dumps(block, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode())
    return max(1, math.ceil(size / BYTES_PER_TOKEN))


@dataclass(frozen=True)
class Block:
    tokens: int
    digest: str  # hash of everything up to and including this block
    ttl: str | None  # the block's breakpoint TTL, None when it is not a breakpoint


def prompt_blocks(body: Mapping[str, Any]) -> list[Block]:
    """The request's prompt as blocks with running hashes, in API order."""
    raw: list[tuple[str, Any]] = [("tool", tool) for tool in body.get("tools") or []]
    system = body.get("system")
    if isinstance(system, str):
        raw.append(("system", {"type": "text", "text": system}))
    else:
        raw.extend(("system", block) for block in system or [])
    for message in body.get("messages") or []:
        content = message.get("content")
        for block in [{"type": "text", "text": content}] if isinstance(content, str) else content or []:
            raw.append((message.get("role", "?"), block))
    running = hashlib.sha256(str(body.get("model", "")).encode())
    blocks = []
    for role, block in raw:
        control = block.get("cache_control") if isinstance(block, dict) else None
        plain = {k: v for k, v in block.items() if k != "cache_control"} if isinstance(block, dict) else block
        running.update(json.dumps([role, plain], sort_keys=True, separators=(",", ":")).encode())
        ttl = (control.get("ttl") or "5m") if isinstance(control, dict) else None
        blocks.append(Block(tokens=count(plain), digest=running.copy().hexdigest(), ttl=ttl))
    return blocks


class PromptCache:
    """The cache of one stand-in server (all its models), thread-safe."""

    def __init__(
        self, minimums: Mapping[str, int] | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._minimums = dict(minimums or {})
        self._clock = clock
        self._offset = 0.0
        self._entries: dict[str, tuple[float, str]] = {}  # digest -> (expires at, ttl)
        self._lock = threading.Lock()

    def now(self) -> float:
        return self._clock() + self._offset

    def advance(self, seconds: float) -> None:
        """Move the simulation's clock forward (entries older than their TTL then expire)."""
        with self._lock:
            self._offset += seconds

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def minimum(self, model: str) -> int:
        if model in self._minimums:
            return self._minimums[model]
        alias = model.rsplit("-", 1)[0] if model[-8:].isdigit() else model
        return self._minimums.get(alias, DEFAULT_MINIMUM)

    def prompt_tokens(self, body: Mapping[str, Any]) -> int:
        """All prompt tokens of a request (what the token-counting endpoint answers)."""
        return sum(block.tokens for block in prompt_blocks(body))

    def usage(self, body: Mapping[str, Any], output_tokens: int) -> Usage:
        """Read and write the cache for one request and return its usage (raises CacheRequestError)."""
        blocks = prompt_blocks(body)
        points = [i for i, block in enumerate(blocks) if block.ttl is not None]
        if len(points) > MAX_BREAKPOINTS:
            raise CacheRequestError(
                f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. Found {len(points)}."
            )
        ttls = [blocks[i].ttl for i in points]
        if "5m" in ttls and "1h" in ttls[ttls.index("5m") :]:
            raise CacheRequestError("a 1h cache_control breakpoint may not come after a 5m one")
        running, total = [], 0
        for block in blocks:
            total += block.tokens
            running.append(total)
        minimum = self.minimum(str(body.get("model", "")))
        with self._lock:
            now = self.now()
            self._entries = {d: e for d, e in self._entries.items() if e[0] > now}
            read_at = self._read(blocks, points, now)
            read = running[read_at] if read_at >= 0 else 0
            writable = [i for i in points if i > read_at and running[i] >= minimum]
            written, one_hour = 0, 0
            if writable:
                start = read_at
                for i in [p for p in points if read_at < p <= writable[-1]]:
                    stretch = running[i] - (running[start] if start >= 0 else 0)
                    written += stretch
                    one_hour += stretch if blocks[i].ttl == "1h" else 0
                    start = i
                    ttl = blocks[i].ttl
                    if i in writable and ttl is not None:
                        self._entries[blocks[i].digest] = (now + TTL_SECONDS[ttl], ttl)
        return Usage(
            input_tokens=total - read - written,
            output_tokens=output_tokens,
            cache_write_tokens=written,
            cache_read_tokens=read,
            cache_write_1h_tokens=one_hour,
        )

    def _read(self, blocks: list[Block], points: list[int], now: float) -> int:
        """The index of the longest live entry reachable from a breakpoint (-1: none); renews what it reads."""
        best = -1
        for point in points:
            for i in range(point, max(point - LOOKBACK, 0) - 1, -1):
                entry = self._entries.get(blocks[i].digest)
                if entry is not None:
                    best = max(best, i)
                    break
        if best >= 0:
            expires, ttl = self._entries[blocks[best].digest]
            self._entries[blocks[best].digest] = (max(expires, now + TTL_SECONDS[ttl]), ttl)
        return best
