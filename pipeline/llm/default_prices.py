"""Default model prices and minimum cacheable prompt lengths. Data only; see ``pipeline.llm.pricing``.

Prices are USD per million tokens: ``input``, ``output``, ``cache_write`` (5-minute TTL), ``cache_write_1h``
(1-hour TTL), ``cache_read``; ``long_prompt`` holds the rates of a turn whose prompt is longer than its
``above_tokens``. Message Batches requests cost half of each (``pipeline.llm.pricing.BATCH_DISCOUNT``). Override
or extend the table with a JSON file named by ``RUBOT_PRICES_FILE`` (same shape; its entries replace these per
model). Strings keep decimal prices exact.

Sources, read on 2026-11-23:

* Anthropic, "Pricing" — https://platform.claude.com/docs/en/about-claude/pricing (model table: Fable 5.1 / Mythos
  5.1, Fable 5 / Mythos 5, Opus 5, 4.8, 4.7, 4.6, 4.5, 4.1, 4; batch processing at 50 %; cache multipliers
  1.25 × (5 min), 2 × (1 h), 0.1 × (read) unless a model lists its own).
* Model pages on https://platform.claude.com/docs/en/models/ — ``sonnet-5-5/overview`` ($2 / $2.50 / $4 / $0.20 /
  $10), ``sonnet-5/overview`` (same), ``opus-5-5/overview`` ($4 / $5 / $8 / $0.20 / $20), ``haiku-5-5/overview``
  ("from $0.10 / $0.50"; up to 100K-token prompts $0.10 input, $0.125 / $0.20 writes, $0.01 reads, $0.50 output;
  above, $0.50 / $0.625 / $1 / $0.05 / $2.50), ``fable-5/overview`` (Mythos shares Fable's pricing).
* Fable 5.2 / Mythos 5.2 ($8 / $10 / $16 / $0.20 / $40): the pricing page's Fable 5.2 row as quoted by
  https://github.com/archid21/rightsize/releases/tag/v0.10.2 — the official row itself was not in the copy we
  could read. Sonnet 4.6 / 4.5 ($3 / $3.75 / $6 / $0.30 / $15) and Haiku 4.5 ($1 / $1.25 / $2 / $0.10 / $5) are
  the long-standing list prices (unchanged on the pages above).
* Where sources disagree we keep the higher price, so a recorded cost is never below the bill: third parties
  report Sonnet 5.5 cache reads cut to $0.10 on 2026-10-07; the official model page we read still says $0.20.

Models: every model the installed ``anthropic`` SDK (2.12) lists in ``anthropic.types.ModelParam`` that its own
deprecation table (``anthropic._data.DEPRECATED_MODELS``) has not retired by 2026-11-23 — so
``claude-mythos-preview`` (retired 2026-06-30) is left out, and ``claude-sonnet-4-5`` stays until its end of life
on 2026-11-30. Retired Opus 4.1 / 4 and Sonnet 4 stay priced for runs recorded with them.
"""

from __future__ import annotations

from typing import Any

_OPUS_4_5_TO_5 = {"input": 5, "output": 25, "cache_write": "6.25", "cache_write_1h": 10, "cache_read": "0.50"}
_SONNET_4 = {"input": 3, "output": 15, "cache_write": "3.75", "cache_write_1h": 6, "cache_read": "0.30"}
_SONNET_5 = {"input": 2, "output": 10, "cache_write": "2.50", "cache_write_1h": 4, "cache_read": "0.20"}
_FABLE_5 = {"input": 10, "output": 50, "cache_write": "12.50", "cache_write_1h": 20, "cache_read": 1}
_FABLE_5_1 = {**_FABLE_5, "cache_read": "0.25"}
_FABLE_5_2 = {"input": 8, "output": 40, "cache_write": 10, "cache_write_1h": 16, "cache_read": "0.20"}
_OPUS_4_0 = {"input": 15, "output": 75, "cache_write": "18.75", "cache_write_1h": 30, "cache_read": "1.50"}

PRICES: dict[str, dict[str, Any]] = {
    "claude-fable-5-2": _FABLE_5_2,
    "claude-mythos-5-2": _FABLE_5_2,
    "claude-fable-5-1": _FABLE_5_1,
    "claude-mythos-5-1": _FABLE_5_1,
    "claude-fable-5": _FABLE_5,
    "claude-mythos-5": _FABLE_5,
    "claude-opus-5-5": {"input": 4, "output": 20, "cache_write": 5, "cache_write_1h": 8, "cache_read": "0.20"},
    "claude-opus-5": _OPUS_4_5_TO_5,
    "claude-opus-4-8": _OPUS_4_5_TO_5,
    "claude-opus-4-7": _OPUS_4_5_TO_5,
    "claude-opus-4-6": _OPUS_4_5_TO_5,
    "claude-opus-4-5": _OPUS_4_5_TO_5,
    "claude-opus-4-1": _OPUS_4_0,
    "claude-opus-4-0": _OPUS_4_0,
    "claude-sonnet-5-5": _SONNET_5,
    "claude-sonnet-5": _SONNET_5,
    "claude-sonnet-4-6": _SONNET_4,
    "claude-sonnet-4-5": _SONNET_4,
    "claude-sonnet-4-0": _SONNET_4,
    "claude-haiku-5-5": {
        "input": "0.10",
        "output": "0.50",
        "cache_write": "0.125",
        "cache_write_1h": "0.20",
        "cache_read": "0.01",
        "long_prompt": {
            "above_tokens": 100_000,
            "input": "0.50",
            "output": "2.50",
            "cache_write": "0.625",
            "cache_write_1h": 1,
            "cache_read": "0.05",
        },
    },
    "claude-haiku-4-5": {"input": 1, "output": 5, "cache_write": "1.25", "cache_write_1h": 2, "cache_read": "0.10"},
    # Not language models: the deterministic offline model and the scripted test model cost nothing.
    "offline": {"input": 0, "output": 0},
    "scripted": {"input": 0, "output": 0},
}

# Minimum cacheable prompt length (tokens) per model: a cache breakpoint on a shorter prefix caches nothing.
# Source: Anthropic, "Prompt caching" — https://platform.claude.com/docs/en/build-with-claude/prompt-caching
# ("Cache limitations"), read on 2026-11-23, with the 5.x models from the figures quoted in
# https://dev.to/creeta/claudes-prompt-cache-fails-silently-below-1024-tokens-1ch1 and
# https://www.fableguide.com/cookbook/prompt-caching.html. Where sources disagree (Sonnet 4.6: 1,024 or 2,048;
# Fable 5: 512 or 2,048) the larger is kept: it can only cost a breakpoint that would have cached, never waste one.
# Models missing here (Sonnet/Opus/Haiku 5.5, Fable 5.1/5.2) use 4,096, the largest published minimum.
CACHE_MINIMUMS: dict[str, int] = {
    "claude-haiku-4-5": 4096,
    "claude-opus-4-6": 4096,
    "claude-opus-4-5": 4096,
    "claude-opus-4-7": 2048,
    "claude-sonnet-4-6": 2048,
    "claude-fable-5": 2048,
    "claude-mythos-5": 2048,
    "claude-opus-5": 512,
    "claude-opus-4-8": 1024,
    "claude-sonnet-5": 1024,
    "claude-sonnet-4-5": 1024,
    "claude-sonnet-4-0": 1024,
    "claude-opus-4-1": 1024,
    "claude-opus-4-0": 1024,
}
