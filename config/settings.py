"""Read Rubot's settings from environment variables (documented in the README)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from config.pricing import PRICES
from pipeline.errors import ConfigurationError
from pipeline.llm.pricing import ModelPrice, load_price_table, price_table
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
        default_model=env.get("RUBOT_MODEL", "claude-sonnet-4-5"),
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
        smtp_host=env.get("RUBOT_SMTP_HOST") or None,
        smtp_port=int(env.get("RUBOT_SMTP_PORT", "25")),
        smtp_from=env.get("RUBOT_SMTP_FROM", "rubot@localhost"),
        smtp_user=env.get("RUBOT_SMTP_USER") or None,
        smtp_password=env.get("RUBOT_SMTP_PASSWORD") or None,
        smtp_starttls=_flag(env.get("RUBOT_SMTP_STARTTLS")),
        webhook_url=env.get("RUBOT_NOTIFY_WEBHOOK_URL") or None,
        approvers=_approvers(env),
        web_base_url=env.get("RUBOT_WEB_BASE_URL") or None,
        web_secret_key=env.get("RUBOT_WEB_SECRET_KEY") or None,
        link_max_age_seconds=int(env.get("RUBOT_LINK_MAX_AGE_SECONDS", str(3 * 24 * 3600))),
        notify_sweep_seconds=float(env.get("RUBOT_NOTIFY_SWEEP_SECONDS", "30")),
    )


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _approvers(env: Mapping[str, str]) -> dict[str, tuple[str, ...]]:
    """Role -> e-mail addresses, from RUBOT_APPROVERS (JSON) or the JSON file named by RUBOT_APPROVERS_FILE."""
    raw, where = env.get("RUBOT_APPROVERS"), "RUBOT_APPROVERS"
    if not raw and env.get("RUBOT_APPROVERS_FILE"):
        where = env["RUBOT_APPROVERS_FILE"]
        raw = Path(where).expanduser().read_text()
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"{where} is not valid JSON: {exc.msg}") from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, list) and all(isinstance(e, str) for e in v) for k, v in data.items()
    ):
        raise ConfigurationError(f'{where} must map roles to lists of e-mail addresses: {{"role": ["a@example.com"]}}')
    return {role: tuple(emails) for role, emails in data.items()}


def _prices(env: Mapping[str, str]) -> dict[str, ModelPrice]:
    """The default table, with the entries of the JSON file named by RUBOT_PRICES_FILE replacing or adding models."""
    prices = price_table(PRICES)
    if env.get("RUBOT_PRICES_FILE"):
        prices.update(load_price_table(Path(env["RUBOT_PRICES_FILE"]).expanduser()))
    return prices
