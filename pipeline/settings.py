"""Rubot's settings as one immutable object, passed to what needs it (no hidden globals), and how to read it.

:func:`load` reads the ``RUBOT_*`` names (documented in the README) from a mapping — the environment by default,
or a host's configuration (see :mod:`pipeline.hostconfig`). Values may be strings, as in the environment, or
Python values of the right type, as in Django settings or a Flask ``app.config``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.definitions.agent import DEFAULT_MODEL
from pipeline.errors import ConfigurationError
from pipeline.llm.default_prices import CACHE_MINIMUMS, PRICES
from pipeline.llm.pricing import ModelPrice, load_price_table, price_table
from pipeline.models.caching import TTLS

LOG_FORMATS = ("text", "json")


@dataclass(frozen=True)
class Settings:
    database_url: str
    broker_url: str
    result_backend: str
    home: Path = Path(".rubot")
    #: Modules a worker imports to find workflows by name. The framework names none by default.
    workflow_modules: tuple[str, ...] = ()
    queue: str = "rubot"
    model_provider: str = "auto"
    default_model: str = DEFAULT_MODEL
    anthropic_api_key: str | None = field(default=None, repr=False)
    anthropic_base_url: str | None = None
    #: Concurrency caps on runs in ``running`` (see pipeline/admission.py).
    max_running: int = 50
    max_running_per_user: int = 5
    #: Seconds a claimed operation's lease lasts; its holder renews it every third of that.
    lease_seconds: float = 30.0
    #: Recoveries (take-overs from dead workers) after which a run goes to the dead letter state.
    max_recoveries: int = 5
    #: How often beat sweeps for approvals past their deadline (``rubot.expire_approvals``).
    approval_sweep_seconds: float = 30.0
    result_expires: int = 3600
    visibility_timeout: int = 3600
    #: Prefix of every Redis key Rubot's broker and result backend write, so deployments can share one Redis.
    redis_key_prefix: str = ""
    broker_polling_interval: float = 0.05
    log_level: str = "INFO"
    #: Notifications (pipeline/notify): SMTP e-mail, a JSON webhook, who approves what, signed links, sweeps.
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_from: str = "rubot@localhost"
    smtp_user: str | None = None
    smtp_password: str | None = field(default=None, repr=False)
    smtp_starttls: bool = False
    webhook_url: str | None = field(default=None, repr=False)
    #: Role -> e-mail addresses of the people who hold it (the built-in directory of approvers).
    approvers: Mapping[str, tuple[str, ...]] = field(default_factory=dict, hash=False)
    #: Where the web app is reached (for links in notifications) and the key that signs approval links.
    web_base_url: str | None = None
    web_secret_key: str | None = field(default=None, repr=False)
    link_max_age_seconds: int = 3 * 24 * 3600
    notify_sweep_seconds: float = 30.0
    notify_max_attempts: int = 10
    # Model -> price (USD per MTok): pipeline/llm/default_prices.py with RUBOT_PRICES_FILE merged over it.
    # Empty when built by hand: a model without a price fails cost accounting (closed), it is not free.
    prices: Mapping[str, ModelPrice] = field(default_factory=dict, hash=False)
    #: Beat schedules from configuration (``RUBOT_SCHEDULES``): name -> entry, see :mod:`pipeline.schedules`.
    schedules: Mapping[str, Any] = field(default_factory=dict, hash=False)
    #: Model -> minimum cacheable prompt length in tokens (pipeline/llm/default_prices.py); unknown models use 4,096.
    cache_minimums: Mapping[str, int] = field(default_factory=dict, hash=False)
    #: TTL of the prompt-cache breakpoints of agents that do not set ``cache_ttl``: "5m" or "1h".
    cache_ttl: str = "5m"
    #: How often beat runs ``rubot.collect_batches`` (Message Batches results).
    batch_poll_seconds: float = 60.0
    #: Submissions of one turn through the Message Batches API before an errored or expired request fails the run.
    batch_max_attempts: int = 3
    #: Daily spend (USD, per UTC day) above which each workflow and each agent raises one alert; None: no alerts.
    spend_alert_usd: float | None = None
    #: Thresholds for named workflows or agents (USD per day), over ``spend_alert_usd``.
    spend_alerts: Mapping[str, float] = field(default_factory=dict, hash=False)
    #: The window ``/metrics`` reports over (seconds).
    metrics_window_seconds: float = 24 * 3600.0
    #: Observability (pipeline/observe): Sentry from ``SENTRY_DSN``; logs as plain text or JSON lines.
    sentry_dsn: str | None = field(default=None, repr=False)
    sentry_environment: str | None = None
    sentry_traces_sample_rate: float = 1.0
    log_format: str = "text"

    @property
    def embedded(self) -> bool:
        """True for the no-server default: SQLite plus the filesystem broker."""
        return self.broker_url.startswith("filesystem:")

    @property
    def broker_folder(self) -> Path:
        return self.home / "broker"


def load(environ: Mapping[str, Any] | None = None, *, defaults: Mapping[str, Any] | None = None) -> Settings:
    """Settings from the ``RUBOT_*`` names of ``environ`` (default: ``os.environ``).

    ``defaults`` fill names ``environ`` does not set (a deployment's own defaults, e.g. its workflow modules).
    """
    env: dict[str, Any] = {**(defaults or {}), **(os.environ if environ is None else environ)}
    home = Path(str(env.get("RUBOT_HOME", ".rubot"))).expanduser().resolve()
    broker = str(env.get("RUBOT_BROKER_URL") or "filesystem://")
    default_backend = broker if broker.startswith(("redis://", "rediss://")) else f"file://{home / 'results'}"
    return Settings(
        database_url=database_url(env.get("RUBOT_DATABASE_URL") or f"sqlite:///{home / 'rubot.sqlite3'}"),
        broker_url=broker_url(broker),
        result_backend=str(env.get("RUBOT_RESULT_BACKEND") or default_backend),
        home=home,
        workflow_modules=names(env.get("RUBOT_WORKFLOW_MODULES"), what="RUBOT_WORKFLOW_MODULES"),
        queue=str(env.get("RUBOT_QUEUE") or "rubot"),
        model_provider=str(env.get("RUBOT_MODEL_PROVIDER") or "auto"),
        default_model=str(env.get("RUBOT_MODEL") or DEFAULT_MODEL),
        anthropic_api_key=env.get("ANTHROPIC_API_KEY") or None,
        anthropic_base_url=env.get("ANTHROPIC_BASE_URL") or None,
        result_expires=number(env, "RUBOT_RESULT_EXPIRES", 3600, int),
        approval_sweep_seconds=number(env, "RUBOT_APPROVAL_SWEEP_SECONDS", 30.0, float),
        lease_seconds=number(env, "RUBOT_LEASE_SECONDS", 30.0, float),
        max_running=number(env, "RUBOT_MAX_RUNNING", 50, int),
        max_running_per_user=number(env, "RUBOT_MAX_RUNNING_PER_USER", 5, int),
        max_recoveries=number(env, "RUBOT_MAX_RECOVERIES", 5, int),
        visibility_timeout=number(env, "RUBOT_VISIBILITY_TIMEOUT", 3600, int),
        redis_key_prefix=str(env.get("RUBOT_REDIS_KEY_PREFIX") or ""),
        log_level=str(env.get("RUBOT_LOG_LEVEL") or "INFO"),
        prices=prices(env.get("RUBOT_PRICES_FILE")),
        schedules=schedule_table(env.get("RUBOT_SCHEDULES")),
        cache_minimums=dict(CACHE_MINIMUMS),
        cache_ttl=choice(env, "RUBOT_CACHE_TTL", "5m", TTLS),
        batch_poll_seconds=positive(env, "RUBOT_BATCH_POLL_SECONDS", 60.0, float),
        batch_max_attempts=positive(env, "RUBOT_BATCH_MAX_ATTEMPTS", 3, int),
        smtp_host=env.get("RUBOT_SMTP_HOST") or None,
        smtp_port=number(env, "RUBOT_SMTP_PORT", 25, int),
        smtp_from=str(env.get("RUBOT_SMTP_FROM") or "rubot@localhost"),
        smtp_user=env.get("RUBOT_SMTP_USER") or None,
        smtp_password=env.get("RUBOT_SMTP_PASSWORD") or None,
        smtp_starttls=flag(env.get("RUBOT_SMTP_STARTTLS")),
        webhook_url=env.get("RUBOT_NOTIFY_WEBHOOK_URL") or None,
        approvers=approver_table(env.get("RUBOT_APPROVERS"), env.get("RUBOT_APPROVERS_FILE")),
        web_base_url=env.get("RUBOT_WEB_BASE_URL") or None,
        web_secret_key=env.get("RUBOT_WEB_SECRET_KEY") or None,
        link_max_age_seconds=positive(env, "RUBOT_LINK_MAX_AGE_SECONDS", 3 * 24 * 3600, int),
        notify_sweep_seconds=positive(env, "RUBOT_NOTIFY_SWEEP_SECONDS", 30.0, float),
        spend_alert_usd=positive(env, "RUBOT_SPEND_ALERT_USD", 1.0, float)
        if env.get("RUBOT_SPEND_ALERT_USD")
        else None,
        spend_alerts=spend_table(env.get("RUBOT_SPEND_ALERTS")),
        metrics_window_seconds=positive(env, "RUBOT_METRICS_WINDOW_SECONDS", 24 * 3600.0, float),
        sentry_dsn=env.get("RUBOT_SENTRY_DSN") or env.get("SENTRY_DSN") or None,
        sentry_environment=env.get("RUBOT_SENTRY_ENVIRONMENT") or env.get("SENTRY_ENVIRONMENT") or None,
        sentry_traces_sample_rate=fraction(env, "RUBOT_SENTRY_TRACES_SAMPLE_RATE", 1.0),
        log_format=choice(env, "RUBOT_LOG_FORMAT", "text", LOG_FORMATS),
    )


def database_url(value: Any) -> str:
    """``RUBOT_DATABASE_URL``, checked to be a URL SQLAlchemy can parse naming a database Rubot supports."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    text = str(value)
    try:
        url = make_url(text)
    except (ArgumentError, ValueError):
        raise ConfigurationError(
            f"RUBOT_DATABASE_URL is not a database URL: {_shown(text)!r} (expected sqlite:///path/to/file.sqlite3 "
            "or postgresql://user:password@host:5432/database)"
        ) from None
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigurationError(
            f"RUBOT_DATABASE_URL names an unsupported database {url.drivername!r}: use sqlite:/// or postgresql://"
        )
    return text


def broker_url(value: str) -> str:
    """``RUBOT_BROKER_URL`` if kombu has a transport for its scheme (``sqla+<database URL>`` counts as ``sqla``);
    otherwise the worker would fail much later, with a traceback from deep inside kombu."""
    from kombu.transport import TRANSPORT_ALIASES

    scheme = value.split("://", 1)[0] if "://" in value else ""
    if scheme.split("+", 1)[0].lower() not in {alias.lower() for alias in TRANSPORT_ALIASES}:
        raise ConfigurationError(
            f"RUBOT_BROKER_URL has an unknown scheme {scheme or value!r} ({_shown(value)!r}): use redis://, "
            "rediss://, amqp:// or filesystem:// (any transport kombu knows works)"
        )
    return value


def _shown(url: str) -> str:
    """``url`` with any password replaced, fit for an error message."""
    import re

    return re.sub(r"(://[^/:@]*:)[^/@]*@", r"\1***@", url)


def flag(value: Any) -> bool:
    """A boolean setting: ``True``/``False`` from host settings, or 1/true/yes/on from the environment."""
    if isinstance(value, bool):
        return value
    return str(value or "").strip().lower() in {"1", "true", "yes", "on"}


def approver_table(value: Any, path: Any = None) -> dict[str, tuple[str, ...]]:
    """Role -> e-mail addresses, from ``RUBOT_APPROVERS`` (JSON, or a dict in host settings) or the JSON file
    named by ``RUBOT_APPROVERS_FILE``."""
    where = "RUBOT_APPROVERS"
    if not value and path:
        where = str(path)
        try:
            value = Path(where).expanduser().read_text()
        except OSError as exc:
            raise ConfigurationError(f"cannot read RUBOT_APPROVERS_FILE {where!r}: {exc.strerror or exc}") from None
    if not value:
        return {}
    value = json_setting(value, where)
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, list | tuple) and all(isinstance(e, str) for e in v)
        for k, v in value.items()
    ):
        raise ConfigurationError(f'{where} must map roles to lists of e-mail addresses: {{"role": ["a@example.com"]}}')
    return {role: tuple(emails) for role, emails in value.items()}


def names(value: Any, *, what: str) -> tuple[str, ...]:
    """A comma-separated string (environment) or a list of strings (host settings) as a tuple of names."""
    if value is None or value == "":
        return ()
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(m, str) for m in items):
        raise ConfigurationError(f"{what} must be a comma-separated string or a list of module names, got {value!r}")
    return tuple(m.strip() for m in items if m.strip())


def number(env: Mapping[str, Any], name: str, default: int | float, kind: type) -> Any:
    """``env[name]`` as ``kind`` (int or float); a value that is not a number is a clear configuration error."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{name} must be a number, got {raw!r}") from None
    if value < 0:
        raise ConfigurationError(f"{name} must not be negative, got {raw!r}")
    return value


def positive(env: Mapping[str, Any], name: str, default: int | float, kind: type) -> Any:
    """:func:`number`, and more than zero."""
    value = number(env, name, default, kind)
    if value <= 0:
        raise ConfigurationError(f"{name} must be a positive {kind.__name__}, got {env.get(name)!r}")
    return value


def fraction(env: Mapping[str, Any], name: str, default: float) -> float:
    """:func:`number` between 0 and 1 (a sample rate)."""
    value = number(env, name, default, float)
    if value > 1:
        raise ConfigurationError(f"{name} must be between 0 and 1, got {env.get(name)!r}")
    return value


def choice(env: Mapping[str, Any], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = str(env.get(name) or default)
    if value not in allowed:
        raise ConfigurationError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def prices(prices_file: Any = None) -> dict[str, ModelPrice]:
    """The default table, with the entries of the JSON file ``prices_file`` replacing or adding models."""
    table = price_table(PRICES)
    if prices_file:
        table.update(load_price_table(Path(str(prices_file)).expanduser()))
    return table


def json_setting(value: Any, name: str) -> Any:
    """A setting given as JSON text in the environment (or already parsed, in host settings); ``{}`` when unset."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise ConfigurationError(f"{name} is not valid JSON: {exc.msg}") from None
    return value


def schedule_table(value: Any) -> dict[str, Any]:
    """``RUBOT_SCHEDULES``: a JSON object in the environment, or a dict in host settings (name -> entry)."""
    value = json_setting(value, "RUBOT_SCHEDULES")
    if not isinstance(value, Mapping):
        raise ConfigurationError("RUBOT_SCHEDULES must map schedule names to entries")
    return dict(value)


def spend_table(value: Any) -> dict[str, float]:
    """``RUBOT_SPEND_ALERTS``: workflow or agent name -> USD per day (JSON here, a dict in host settings)."""
    value = json_setting(value, "RUBOT_SPEND_ALERTS")
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool) and v > 0
        for k, v in value.items()
    ):
        raise ConfigurationError(
            'RUBOT_SPEND_ALERTS must map workflow or agent names to positive USD amounts: {"RefundDesk": 20}'
        )
    return {name: float(usd) for name, usd in value.items()}
