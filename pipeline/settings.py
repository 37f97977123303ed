"""Rubot's settings as one immutable object, passed to what needs it (no hidden globals).

Reading the environment is ``config.settings.load()``'s job; this module only defines the shape and
the derived values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.llm.pricing import ModelPrice


@dataclass(frozen=True)
class Settings:
    database_url: str
    broker_url: str
    result_backend: str
    home: Path = Path(".rubot")
    workflow_modules: tuple[str, ...] = ("agents.conference_travel",)
    queue: str = "rubot"
    model_provider: str = "auto"
    default_model: str = "claude-sonnet-4-6"
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
    # Model -> price (USD per MTok), filled by config.settings.load() from config/pricing.py and
    # RUBOT_PRICES_FILE. Empty by default: a model without a price fails cost accounting (closed), it is not free.
    prices: Mapping[str, ModelPrice] = field(default_factory=dict, hash=False)
    #: Model -> minimum cacheable prompt length in tokens (config/pricing.py); unknown models use 4,096.
    cache_minimums: Mapping[str, int] = field(default_factory=dict, hash=False)
    #: TTL of the prompt-cache breakpoints of agents that do not set ``cache_ttl``: "5m" or "1h".
    cache_ttl: str = "5m"
    #: How often beat runs ``rubot.collect_batches`` (Message Batches results).
    batch_poll_seconds: float = 60.0
    #: Submissions of one turn through the Message Batches API before an errored or expired request fails the run.
    batch_max_attempts: int = 3

    @property
    def embedded(self) -> bool:
        """True for the no-server default: SQLite plus the filesystem broker."""
        return self.broker_url.startswith("filesystem:")

    @property
    def broker_folder(self) -> Path:
        return self.home / "broker"
