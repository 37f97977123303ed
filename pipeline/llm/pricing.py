"""What a model turn costs, in whole micro-dollars (millionths of a US dollar), computed exactly.

Prices are USD per million tokens (MTok), so ``tokens × USD-per-MTok`` *is* the cost in micro-dollars. Each kind
of token a turn reports is multiplied by its price in exact ``Decimal`` arithmetic (no floats anywhere; JSON price
files are parsed straight to ``Decimal``) and the products are summed.

**Rounding rule:** the exact sum is rounded *once per turn*, half up (``ROUND_HALF_UP``: 0.5 → 1, 1.49 → 1), to a
whole number of micro-dollars. Run and step totals are sums of these per-turn integers, so a total always
equals the sum of the costs shown on its turns, and budgets compare integers. An *estimated* charge (a request
whose response was lost, see :func:`ceiling_micros`) is rounded up instead, so it never falls below the bill.

Token kinds: uncached input, output, cache writes with the 5-minute TTL, cache writes with the 1-hour TTL and
cache reads. Cache prices follow Anthropic's multipliers unless an entry sets them explicitly: a 5-minute write
costs 1.25 × the input price, a 1-hour write 2 ×, a read 0.1 ×. Requests sent through the Message Batches API
cost half of every one of these (:data:`BATCH_DISCOUNT`). A model may price long prompts higher (Haiku 5.5 above
100,000 tokens): ``long_prompt`` then holds the rates for a turn whose prompt (input + cache writes + cache
reads) is over ``above_tokens``, applied to every token of that turn.

A model without a price is a configuration error, not a free model: the agent loop refuses to call it. Dated
snapshots (``claude-sonnet-4-5-20250929``) fall back to their alias's entry (``claude-sonnet-4-5``) because the
API reports the snapshot name for an alias request.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal, InvalidOperation, localcontext
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigurationError, UnpricedModel
from pipeline.models.base import Usage

CACHE_WRITE_MULTIPLIER = Decimal("1.25")  # 5-minute cache writes
CACHE_WRITE_1H_MULTIPLIER = Decimal("2")
CACHE_READ_MULTIPLIER = Decimal("0.1")
#: Message Batches API requests cost half the standard price of every token kind.
BATCH_DISCOUNT = Decimal("0.5")
PRICE_FIELDS = ("input", "output", "cache_write", "cache_write_1h", "cache_read")
PRICES_FILE_HINT = (
    "add it to the price table (pipeline/llm/default_prices.py, or a JSON file named by RUBOT_PRICES_FILE)"
)
_SNAPSHOT = re.compile(r"^(?P<alias>.+)-\d{8}$")


@dataclass(frozen=True)
class ModelPrice:
    """USD per million tokens for one model. ``None`` cache prices derive from ``input``."""

    input: Decimal
    output: Decimal
    cache_write: Decimal | None = None
    cache_write_1h: Decimal | None = None
    cache_read: Decimal | None = None
    #: Higher rates for turns whose prompt is longer than ``long_prompt.above_tokens``.
    long_prompt: LongPromptPrice | None = None

    def __post_init__(self) -> None:
        for name in PRICE_FIELDS:
            value = getattr(self, name)
            if value is None and name.startswith("cache"):
                continue
            object.__setattr__(self, name, _decimal(value, name))

    @property
    def cache_write_price(self) -> Decimal:
        """A 5-minute cache write."""
        return self.cache_write if self.cache_write is not None else self.input * CACHE_WRITE_MULTIPLIER

    @property
    def cache_write_1h_price(self) -> Decimal:
        return self.cache_write_1h if self.cache_write_1h is not None else self.input * CACHE_WRITE_1H_MULTIPLIER

    @property
    def cache_read_price(self) -> Decimal:
        return self.cache_read if self.cache_read is not None else self.input * CACHE_READ_MULTIPLIER

    def for_prompt(self, prompt_tokens: int) -> ModelPrice:
        """The rates that apply to a turn whose prompt has ``prompt_tokens`` tokens."""
        tier = self.long_prompt
        return tier.price if tier is not None and prompt_tokens > tier.above_tokens else self

    @classmethod
    def from_entry(cls, entry: ModelPrice | Mapping[str, Any], *, model: str = "?") -> ModelPrice:
        """A price from an entry like ``{"input": 3, "output": 15}``, optionally with cache prices and a
        ``long_prompt`` tier ``{"above_tokens": 100000, "input": ..., "output": ..., ...}``."""
        if isinstance(entry, ModelPrice):
            return entry
        if not isinstance(entry, Mapping):
            raise ConfigurationError(f"price for model {model!r} must be an object, got {type(entry).__name__}")
        unknown = set(entry) - {*PRICE_FIELDS, "long_prompt"}
        missing = {"input", "output"} - set(entry)
        if unknown or missing:
            raise ConfigurationError(
                f"price for model {model!r} needs 'input' and 'output' (USD per million tokens) and may have "
                f"'cache_write', 'cache_write_1h', 'cache_read', 'long_prompt'; missing {sorted(missing)}, "
                f"unknown {sorted(unknown)}"
            )
        fields = {k: v for k, v in entry.items() if k != "long_prompt"}
        try:
            tier = LongPromptPrice.from_entry(entry["long_prompt"], model=model) if "long_prompt" in entry else None
            return cls(**fields, long_prompt=tier)
        except ConfigurationError as exc:
            raise ConfigurationError(f"price for model {model!r}: {exc.message}") from None


@dataclass(frozen=True)
class LongPromptPrice:
    """The rates of a turn whose prompt is longer than ``above_tokens``."""

    above_tokens: int
    price: ModelPrice

    @classmethod
    def from_entry(cls, entry: Any, *, model: str) -> LongPromptPrice:
        if not isinstance(entry, Mapping) or "above_tokens" not in entry:
            raise ConfigurationError("long_prompt must be an object with 'above_tokens' and the rates above it")
        above = entry["above_tokens"]
        if isinstance(above, bool) or not isinstance(above, int | Decimal) or int(above) != above or above <= 0:
            raise ConfigurationError(f"long_prompt.above_tokens must be a positive whole number, got {above!r}")
        rates = {k: v for k, v in entry.items() if k != "above_tokens"}
        if "long_prompt" in rates:
            raise ConfigurationError("long_prompt cannot nest another long_prompt")
        return cls(above_tokens=int(above), price=ModelPrice.from_entry(rates, model=model))


def exact_cost(usage: Usage, price: ModelPrice, *, batch: bool = False) -> Decimal:
    """The exact cost of one turn in micro-dollars, before rounding."""
    rates = price.for_prompt(usage.prompt_tokens)
    one_hour = min(usage.cache_write_1h_tokens, usage.cache_write_tokens)
    with localcontext(prec=60):  # exact for any realistic token count and price precision
        exact = (
            usage.input_tokens * rates.input
            + usage.output_tokens * rates.output
            + (usage.cache_write_tokens - one_hour) * rates.cache_write_price
            + one_hour * rates.cache_write_1h_price
            + usage.cache_read_tokens * rates.cache_read_price
        )
        return exact * BATCH_DISCOUNT if batch else exact


def cost_micros(usage: Usage, price: ModelPrice, *, batch: bool = False) -> int:
    """The cost of one turn in whole micro-dollars: exact products, summed, rounded once half up."""
    with localcontext(prec=60):
        return int(exact_cost(usage, price, batch=batch).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def ceiling_micros(input_tokens: int, output_tokens: int, price: ModelPrice, *, batch: bool = False) -> int:
    """The most a request of ``input_tokens`` prompt tokens and at most ``output_tokens`` output can have cost.

    Every prompt token is priced at the dearest way the provider may have billed it (uncached input, or a cache
    write of either TTL), never at the cheaper cache-read rate, and the result is rounded *up*: an estimate made
    this way is never below what the provider charged for the request.
    """
    rates = price.for_prompt(input_tokens)
    dearest = max(rates.input, rates.cache_write_price, rates.cache_write_1h_price)
    with localcontext(prec=60):
        exact = input_tokens * dearest + output_tokens * rates.output
        if batch:
            exact *= BATCH_DISCOUNT
        return int(exact.quantize(Decimal(1), rounding=ROUND_CEILING))


def price_for(model: str, table: Mapping[str, ModelPrice]) -> ModelPrice:
    """The price of ``model`` in ``table``; raises :class:`ConfigurationError` when there is none."""
    price = find_price(model, table)
    if price is None:
        known = ", ".join(sorted(table)) or "none"
        raise UnpricedModel(
            f"no price for model {model!r} (known: {known}); Rubot does not call a model it cannot bill — "
            f"{PRICES_FILE_HINT}"
        )
    return price


def find_price(model: str, table: Mapping[str, ModelPrice]) -> ModelPrice | None:
    """The price of ``model`` (or of its alias, for a dated snapshot name), or ``None``."""
    if model in table:
        return table[model]
    snapshot = _SNAPSHOT.match(model)
    if snapshot and snapshot["alias"] in table:
        return table[snapshot["alias"]]
    return None


def price_table(entries: Mapping[str, ModelPrice | Mapping[str, Any]]) -> dict[str, ModelPrice]:
    """A validated table from plain entries (as in ``pipeline/llm/default_prices.py``)."""
    return {str(model): ModelPrice.from_entry(entry, model=str(model)) for model, entry in entries.items()}


def load_price_table(path: str | Path) -> dict[str, ModelPrice]:
    """Read a JSON price file: ``{"model": {"input": 3, "output": 15, ...}, ...}`` in USD per million tokens."""
    file = Path(path)
    try:
        data = json.loads(file.read_text(encoding="utf-8"), parse_float=Decimal, parse_int=Decimal)
    except OSError as exc:
        raise ConfigurationError(f"cannot read price file {str(file)!r}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ConfigurationError(f"price file {str(file)!r} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigurationError(f"price file {str(file)!r} must hold a JSON object of model -> price")
    try:
        return price_table(data)
    except ConfigurationError as exc:
        raise ConfigurationError(f"price file {str(file)!r}: {exc.message}") from None


def _decimal(value: Any, name: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise ConfigurationError(f"{name} price must be a number, got {value!r}")
    try:
        # str() first so 0.1 means one tenth, not the nearest binary float.
        number = value if isinstance(value, Decimal) else Decimal(str(value))
    except InvalidOperation:
        raise ConfigurationError(f"{name} price must be a number, got {value!r}") from None
    if not number.is_finite() or number < 0:
        raise ConfigurationError(f"{name} price must be a finite number >= 0, got {value!r}")
    return number
