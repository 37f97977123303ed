"""The Message Batches side of a model provider: submit requests, look at a batch, read its results, cancel it.

A batch is processed asynchronously (most within an hour, at most 24 hours) at half the price of the same requests
sent one by one. Each request carries a ``custom_id`` the caller chooses; results come back as JSON Lines, one per
request, in any order, each ``succeeded`` (with the message), ``errored``, ``canceled`` or ``expired``. Only
succeeded requests are billed.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from pipeline.models.base import ModelRequest, ModelResponse

IN_PROGRESS, CANCELING, ENDED = "in_progress", "canceling", "ended"
SUCCEEDED, ERRORED, CANCELED, EXPIRED = "succeeded", "errored", "canceled", "expired"


@dataclass(frozen=True)
class BatchInfo:
    """A batch as the provider reports it."""

    id: str
    status: str
    expires_at: datetime | None = None

    @property
    def ended(self) -> bool:
        return self.status == ENDED


@dataclass(frozen=True)
class BatchItem:
    """The result of one request of an ended batch: ``outcome`` is succeeded, errored, canceled or expired."""

    custom_id: str
    outcome: str
    response: ModelResponse | None = None
    error: dict[str, Any] | None = None


@runtime_checkable
class BatchProvider(Protocol):
    """A provider that can send requests through a batch API."""

    def submit_batch(self, requests: list[tuple[str, ModelRequest]]) -> BatchInfo: ...

    def batch_info(self, batch_id: str) -> BatchInfo: ...

    def batch_results(self, batch_id: str) -> list[BatchItem]: ...

    def cancel_batch(self, batch_id: str) -> BatchInfo: ...


def supports_batches(provider: Any) -> bool:
    """Whether ``provider`` implements :class:`BatchProvider`."""
    return isinstance(provider, BatchProvider)


def custom_id(run_id: str, op_key: str) -> str:
    """A fresh ``custom_id`` for the request recorded under ``op_key`` (the API allows 64 letters, digits, _ and -).

    Fresh on every call, so a request never shares its id (and its charge) with an earlier one, even if a ledger
    key were used again after the sweeper dropped a dead submission."""
    return "rubot-" + hashlib.sha256(f"{run_id}/{op_key}/{uuid.uuid4()}".encode()).hexdigest()[:40]
