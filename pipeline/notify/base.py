"""Notifiers and recipients: the pluggable parts of approval notifications.

A :class:`Notifier` sends one :class:`Notification` (``send``); raising means "not sent, try again" (the
``rubot.send_notification`` task retries, the beat sweep picks up what is left). ``per_recipient`` notifiers
(e-mail) get one notification per approver, each with a signed link of its own; the others (a chat webhook) get
one per event. Recipients come from a :class:`Directory`; the built-in :class:`SettingsDirectory` maps roles to
e-mail addresses (``RUBOT_APPROVERS``) and adds an assignee that is an e-mail address.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

EVENTS = ("requested", "escalated", "reminded", "expired")


@dataclass(frozen=True)
class Person:
    """An approver a notification goes to: the principal a signed link authenticates."""

    id: str
    email: str
    roles: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "email": self.email, "roles": list(self.roles)}


@dataclass(frozen=True)
class Notification:
    """One message to send. ``id`` is stable across retries (the outbox row id): use it to deduplicate."""

    id: str
    event: str
    channel: str
    recipient: str | None
    subject: str
    text: str
    run_id: str
    approval_id: str
    workflow: str
    step: str
    role: str
    summary: str | None = None
    #: The approval page (needs a sign-in) and, for one approver, a signed single-use link.
    approval_url: str | None = None
    link: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


class Notifier:
    """Subclass, give it a unique ``name`` and implement ``send``; pass instances to the runtime."""

    name: str = "notifier"
    #: True: one notification per approver (with a personal signed link); False: one per event.
    per_recipient: bool = False

    def send(self, notification: Notification) -> None:
        """Deliver ``notification`` or raise (it will be retried, so deduplicate on ``notification.id``)."""
        raise NotImplementedError


class Directory(Protocol):
    """Who approves: the people holding ``role`` (and the ``assignee``, when there is one)."""

    def approvers(self, role: str, assignee: str | None) -> list[Person]: ...


class SettingsDirectory:
    """Roles mapped to e-mail addresses, e.g. ``{"engineering_manager": ["mia@example.com"]}``.

    A person's id is their e-mail address and their roles are every role the mapping lists them under. An assignee
    that looks like an e-mail address is notified too (it may decide without the role).
    """

    def __init__(self, roles: Mapping[str, Iterable[str]] | None = None) -> None:
        self.roles = {
            role: sorted({e.strip() for e in emails if e and e.strip()}) for role, emails in (roles or {}).items()
        }

    def roles_of(self, email: str) -> tuple[str, ...]:
        return tuple(sorted(role for role, emails in self.roles.items() if email in emails))

    def approvers(self, role: str, assignee: str | None) -> list[Person]:
        emails = list(self.roles.get(role, []))
        if assignee and "@" in assignee and assignee not in emails:
            emails.append(assignee)
        return [Person(id=email, email=email, roles=self.roles_of(email)) for email in emails]
