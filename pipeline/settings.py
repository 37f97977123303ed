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
    default_model: str = "claude-sonnet-4-5"
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
    # Model -> price (USD per MTok), filled by config.settings.load() from config/pricing.py and
    # RUBOT_PRICES_FILE. Empty by default: a model without a price fails cost accounting (closed), it is not free.
    prices: Mapping[str, ModelPrice] = field(default_factory=dict, hash=False)

    @property
    def embedded(self) -> bool:
        """True for the no-server default: SQLite plus the filesystem broker."""
        return self.broker_url.startswith("filesystem:")

    @property
    def broker_folder(self) -> Path:
        return self.home / "broker"
