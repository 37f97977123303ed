"""A JSON webhook with Slack-compatible ``text`` (Slack and Mattermost incoming webhooks show it as is)."""

from __future__ import annotations

import httpx

from pipeline.notify.base import Notification, Notifier


class WebhookNotifier(Notifier):
    """POST ``{"text": ..., "rubot": {...}}`` to ``url``; anything but a 2xx is a failure to retry.

    ``Idempotency-Key`` carries the notification's stable id, so a receiver can drop a repeat.
    """

    name = "webhook"
    per_recipient = False

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        self.url, self.timeout = url, timeout

    def __repr__(self) -> str:  # webhook URLs are credentials
        return "WebhookNotifier(...)"

    def payload(self, notification: Notification) -> dict:
        return {
            "text": notification.text,
            "rubot": {
                "id": notification.id,
                "event": notification.event,
                "run_id": notification.run_id,
                "approval_id": notification.approval_id,
                "workflow": notification.workflow,
                "step": notification.step,
                "role": notification.role,
                "summary": notification.summary,
                "url": notification.approval_url,
            },
        }

    def send(self, notification: Notification) -> None:
        response = httpx.post(
            self.url,
            json=self.payload(notification),
            headers={"Idempotency-Key": notification.id},
            timeout=self.timeout,
        )
        response.raise_for_status()
