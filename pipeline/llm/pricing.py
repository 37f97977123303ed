"""What a model turn costs, in whole micro-dollars (millionths of a US dollar), computed exactly.

Prices are USD per million tokens (MTok), so ``tokens × USD-per-MTok`` *is* the cost in micro-dollars. Each of
the four token kinds a turn reports is multiplied by its price in exact ``Decimal`` arithmetic (no floats
anywhere; JSON price files are parsed straight to ``Decimal``) and the four products are summed.

**Rounding rule:** the exact sum is rounded *once per turn*, half up (``ROUND_HALF_UP``: 0.5 → 1, 1.49 → 1), to a
whole number of micro-dollars. Run and step totals are sums of these per-turn integers, so a total always
equals the sum of the costs shown on its turns, and budgets compare integers.

Cache prices follow Anthropic's multipliers for the 5-minute cache unless an entry sets them explicitly: a cache
write costs 1.25 × the input price, a cache read 0.1 × the input price. (Rubot only writes 5-minute entries.)

A model without a price is a configuration error, not a free model: cost budgets need prices, so they fail
closed. Dated snapshots (``claude-sonnet-4-5-20250929``) fall back to their alias's entry
(``claude-sonnet-4-5``) because the API reports the snapshot name for an alias request.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation, localcontext
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigurationError
from pipeline.models.base import Usage

CACHE_WRITE_MULTIPLIER = Decimal("1.25")  # 5-minute cache writes
CACHE_READ_MULTIPLIER = Decimal("0.1")
_SNAPSHOT = re.compile(r"^(?P<alias>.+)-\d{8}$")


@dataclass(frozen=True)
class ModelPrice:
    """USD per million tokens for one model. ``None`` cache prices derive from ``input``."""

    input: Decimal
    output: Decimal
    cache_write: Decimal | None = None
    cache_read: Decimal | None = None

    def __post_init__(self) -> None:
        for name in ("input", "output", "cache_write", "cache_read"):
            value = getattr(self, name)
            if value is None and name.startswith("cache"):
                continue
            number = _decimal(value, name)
            object.__setattr__(self, name, number)

    @property
    def cache_write_price(self) -> Decimal:
        return self.cache_write if self.cache_write is not None else self.input * CACHE_WRITE_MULTIPLIER

    @property
    def cache_read_price(self) -> Decimal:
        return self.cache_read if self.cache_read is not None else self.input * CACHE_READ_MULTIPLIER

    @classmethod
    def from_entry(cls, entry: ModelPrice | Mapping[str, Any], *, model: str = "?") -> ModelPrice:
        """A price from an entry like ``{"input": 3, "output": 15}``, optionally with ``cache_write``/``cache_read``."""
        if isinstance(entry, ModelPrice):
            return entry
        if not isinstance(entry, Mapping):
            raise ConfigurationError(f"price for model {model!r} must be an object, got {type(entry).__name__}")
        unknown = set(entry) - {"input", "output", "cache_write", "cache_read"}
        missing = {"input", "output"} - set(entry)
        if unknown or missing:
            raise ConfigurationError(
                f"price for model {model!r} needs 'input' and 'output' (USD per million tokens) and may have "
                f"'cache_write', 'cache_read'; missing {sorted(missing)}, unknown {sorted(unknown)}"
            )
        try:
            return cls(**entry)
        except ConfigurationError as exc:
            raise ConfigurationError(f"price for model {model!r}: {exc.message}") from None


def cost_micros(usage: Usage, price: ModelPrice) -> int:
    """The cost of one turn in whole micro-dollars: exact products, summed, rounded once half up."""
    with localcontext(prec=60):  # exact for any realistic token count and price precision
        exact = (
            usage.input_tokens * price.input
            + usage.output_tokens * price.output
            + usage.cache_write_tokens * price.cache_write_price
            + usage.cache_read_tokens * price.cache_read_price
        )
        return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def price_for(model: str, table: Mapping[str, ModelPrice]) -> ModelPrice:
    """The price of ``model`` in ``table``; raises :class:`ConfigurationError` when there is none."""
    if model in table:
        return table[model]
    snapshot = _SNAPSHOT.match(model)
    if snapshot and snapshot["alias"] in table:
        return table[snapshot["alias"]]
    known = ", ".join(sorted(table)) or "none"
    raise ConfigurationError(
        f"no price for model {model!r} (known: {known}); cost budgets need one — add it to the price table "
        "(pipeline/llm/default_prices.py or a JSON file named by RUBOT_PRICES_FILE)"
    )


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
