"""The notification set-up a runtime builds from its settings (host apps may pass their own notifiers)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from pipeline.notify.base import Directory, Notifier, SettingsDirectory
from pipeline.notify.email import SmtpNotifier
from pipeline.notify.planner import Planner
from pipeline.notify.webhook import WebhookNotifier

if TYPE_CHECKING:
    from pipeline.settings import Settings


def notifiers_from(settings: Settings) -> list[Notifier]:
    """E-mail when ``smtp_host`` is set, the webhook when ``webhook_url`` is set."""
    found: list[Notifier] = []
    if settings.smtp_host:
        found.append(
            SmtpNotifier(
                settings.smtp_host,
                settings.smtp_port,
                sender=settings.smtp_from,
                user=settings.smtp_user,
                password=settings.smtp_password,
                starttls=settings.smtp_starttls,
            )
        )
    if settings.webhook_url:
        found.append(WebhookNotifier(settings.webhook_url))
    return found


def planner(
    settings: Settings,
    dispatch: Callable[[str], None],
    *,
    notifiers: Iterable[Notifier] | None = None,
    directory: Directory | None = None,
    base_url: str | None = None,
    secret_key: str | None = None,
) -> Planner | None:
    """The runtime's planner, or ``None`` when no notifier is configured (nothing is written to the outbox)."""
    chosen = list(notifiers) if notifiers is not None else notifiers_from(settings)
    if not chosen:
        return None
    return Planner(
        chosen,
        directory=directory or SettingsDirectory(settings.approvers),
        base_url=base_url or settings.web_base_url,
        secret_key=secret_key or settings.web_secret_key,
        link_max_age=settings.link_max_age_seconds,
        dispatch=dispatch,
        max_attempts=settings.notify_max_attempts,
    )
