"""Read Rubot's settings from environment variables (documented in the README)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from config.pricing import CACHE_MINIMUMS, PRICES
from pipeline.definitions.agent import DEFAULT_MODEL
from pipeline.errors import ConfigurationError
from pipeline.llm.pricing import ModelPrice, load_price_table, price_table
from pipeline.models.caching import TTLS
from pipeline.settings import Settings


def load(environ: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    home = Path(env.get("RUBOT_HOME", ".rubot")).expanduser().resolve()
    broker = env.get("RUBOT_BROKER_URL", "filesystem://")
    default_backend = broker if broker.startswith(("redis://", "rediss://")) else f"file://{home / 'results'}"
    api_key = env.get("ANTHROPIC_API_KEY") or None
    modules = tuple(
        m.strip() for m in env.get("RUBOT_WORKFLOW_MODULES", "agents.conference_travel").split(",") if m.strip()
    )
    return Settings(
        database_url=env.get("RUBOT_DATABASE_URL", f"sqlite:///{home / 'rubot.sqlite3'}"),
        broker_url=broker,
        result_backend=env.get("RUBOT_RESULT_BACKEND", default_backend),
        home=home,
        workflow_modules=modules,
        queue=env.get("RUBOT_QUEUE", "rubot"),
        model_provider=env.get("RUBOT_MODEL_PROVIDER", "auto"),
        default_model=env.get("RUBOT_MODEL", DEFAULT_MODEL),
        anthropic_api_key=api_key,
        anthropic_base_url=env.get("ANTHROPIC_BASE_URL") or None,
        result_expires=int(env.get("RUBOT_RESULT_EXPIRES", "3600")),
        approval_sweep_seconds=float(env.get("RUBOT_APPROVAL_SWEEP_SECONDS", "30")),
        lease_seconds=float(env.get("RUBOT_LEASE_SECONDS", "30")),
        max_running=int(env.get("RUBOT_MAX_RUNNING", "50")),
        max_running_per_user=int(env.get("RUBOT_MAX_RUNNING_PER_USER", "5")),
        max_recoveries=int(env.get("RUBOT_MAX_RECOVERIES", "5")),
        visibility_timeout=int(env.get("RUBOT_VISIBILITY_TIMEOUT", "3600")),
        redis_key_prefix=env.get("RUBOT_REDIS_KEY_PREFIX", ""),
        log_level=env.get("RUBOT_LOG_LEVEL", "INFO"),
        prices=_prices(env),
        cache_minimums=dict(CACHE_MINIMUMS),
        cache_ttl=_choice(env, "RUBOT_CACHE_TTL", "5m", TTLS),
        batch_poll_seconds=_number(env, "RUBOT_BATCH_POLL_SECONDS", 60.0, float),
        batch_max_attempts=_number(env, "RUBOT_BATCH_MAX_ATTEMPTS", 3, int),
    )


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = env.get(name, default)
    if value not in allowed:
        raise ConfigurationError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _number(env: Mapping[str, str], name: str, default: float, kind: type) -> Any:
    raw = env.get(name)
    if raw is None:
        return kind(default)
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a positive {kind.__name__}, got {raw!r}") from None
    if value <= 0:
        raise ConfigurationError(f"{name} must be a positive {kind.__name__}, got {raw!r}")
    return value


def _prices(env: Mapping[str, str]) -> dict[str, ModelPrice]:
    """The default table, with the entries of the JSON file named by RUBOT_PRICES_FILE replacing or adding models."""
    prices = price_table(PRICES)
    if env.get("RUBOT_PRICES_FILE"):
        prices.update(load_price_table(Path(env["RUBOT_PRICES_FILE"]).expanduser()))
    return prices
