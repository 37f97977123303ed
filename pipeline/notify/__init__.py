"""Telling approvers that an approval waits: notifiers, recipients, the outbox and signed links."""
