"""E-mail over SMTP (the standard library's ``smtplib``): one message per approver, each with its own link."""

from __future__ import annotations

import smtplib
from email import policy
from email.message import EmailMessage
from email.utils import formatdate

from pipeline.notify.base import Notification, Notifier


class SmtpNotifier(Notifier):
    """Send notifications as plain-text e-mail. ``Message-ID`` is the notification's stable id, so a message sent
    again after a crash is recognisable as the same one."""

    name = "email"
    per_recipient = True

    def __init__(
        self,
        host: str,
        port: int = 25,
        *,
        sender: str,
        user: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        timeout: float = 30.0,
    ) -> None:
        self.host, self.port, self.sender = host, port, sender
        self.user, self.password, self.starttls, self.timeout = user, password, starttls, timeout

    def __repr__(self) -> str:  # never the password
        return f"SmtpNotifier({self.host}:{self.port}, from {self.sender})"

    def message(self, notification: Notification) -> EmailMessage:
        # Fold only past SMTP's own 998-character limit: the default 78 folds a long subject before its first word,
        # which leaves readers with a leading space.
        message = EmailMessage(policy=policy.SMTP.clone(max_line_length=998))
        message["From"] = self.sender
        message["To"] = notification.recipient or ""
        message["Subject"] = notification.subject
        message["Date"] = formatdate(usegmt=True)
        message["Message-ID"] = f"<{notification.id}@rubot>"
        message["X-Rubot-Notification"] = notification.id
        message["X-Rubot-Approval"] = notification.approval_id
        message.set_content(notification.text)
        return message

    def send(self, notification: Notification) -> None:
        if not notification.recipient:
            raise ValueError(f"notification {notification.id} has no e-mail recipient")
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
            if self.starttls:
                smtp.starttls()
            if self.user:
                smtp.login(self.user, self.password or "")
            smtp.send_message(self.message(notification))
