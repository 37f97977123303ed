"""Default model prices, USD per million tokens (Anthropic list prices). Data only; see ``pipeline.llm.pricing``.

Cache writes default to 1.25 × input and cache reads to 0.1 × input; an entry may set ``cache_write`` /
``cache_read`` explicitly. Override or extend this table with a JSON file named by ``RUBOT_PRICES_FILE``
(same shape; its entries replace these per model). Strings keep decimal prices exact.
"""

from __future__ import annotations

PRICES: dict[str, dict[str, int | str]] = {
    "claude-opus-4-5": {"input": 5, "output": 25},
    "claude-opus-4-1": {"input": 15, "output": 75},
    "claude-opus-4-0": {"input": 15, "output": 75},
    "claude-sonnet-4-5": {"input": 3, "output": 15},
    "claude-sonnet-4-0": {"input": 3, "output": 15},
    "claude-haiku-4-5": {"input": 1, "output": 5},
    # Not language models: the deterministic offline model and the scripted test model cost nothing.
    "offline": {"input": 0, "output": 0},
    "scripted": {"input": 0, "output": 0},
}
