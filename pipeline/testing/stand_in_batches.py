"""The Message Batches half of the stand-in: batches held in memory, processed when the test says so.

A created batch stays ``in_progress`` — the run that submitted it waits, like it would for hours against the real
API — until the test calls :meth:`MessagesStandIn.end_batches` (each request then plays the next script entry,
is charged at the batch rate and gets a ``succeeded`` or ``errored`` result) or
:meth:`MessagesStandIn.expire_batches` (every request ``expired``, nothing charged). Cancel ends a batch at once
with its unprocessed requests ``canceled``. Results are served as JSON Lines at the batch's ``results_url``.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


class BatchRequestError(ValueError):
    """A batch the real API would refuse; answered with a 400."""


@dataclass
class StoredBatch:
    id: str
    requests: list[tuple[str, dict[str, Any]]]
    created_at: datetime
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    status: str = "in_progress"
    ended_at: datetime | None = None
    cancel_initiated_at: datetime | None = None

    def counts(self) -> dict[str, int]:
        tally = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        if self.status != "ended":  # the API counts outcomes only once the whole batch has ended
            tally["processing"] = len(self.requests)
            return tally
        for result in self.results.values():
            tally[result["type"]] += 1
        return tally

    def as_json(self, base_url: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "message_batch",
            "processing_status": self.status,
            "request_counts": self.counts(),
            "created_at": _iso(self.created_at),
            "expires_at": _iso(self.created_at + timedelta(hours=24)),
            "ended_at": _iso(self.ended_at),
            "cancel_initiated_at": _iso(self.cancel_initiated_at),
            "archived_at": None,
            "results_url": f"{base_url}/v1/messages/batches/{self.id}/results" if self.status == "ended" else None,
        }

    def results_jsonl(self) -> bytes:
        lines = [json.dumps({"custom_id": cid, "result": self.results[cid]}) for cid, _ in self.requests]
        return ("\n".join(lines) + "\n").encode()


class BatchStore:
    """Batches by id; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._batches: dict[str, StoredBatch] = {}

    def create(self, body: Any) -> StoredBatch:
        requests = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(requests, list) or not requests:
            raise BatchRequestError("requests: a non-empty list of {custom_id, params} is required")
        seen: set[str] = set()
        parsed = []
        for item in requests:
            cid = item.get("custom_id") if isinstance(item, dict) else None
            params = item.get("params") if isinstance(item, dict) else None
            if not isinstance(cid, str) or not CUSTOM_ID.match(cid):
                raise BatchRequestError(f"custom_id must be 1-64 letters, digits, '_' or '-', got {cid!r}")
            if cid in seen:
                raise BatchRequestError(f"custom_id {cid!r} is used twice in this batch")
            if not isinstance(params, dict) or not {"model", "max_tokens", "messages"} <= set(params):
                raise BatchRequestError(f"params of {cid!r} must be a Messages request (model, max_tokens, messages)")
            seen.add(cid)
            parsed.append((cid, params))
        with self._lock:
            batch = StoredBatch(f"msgbatch_stand_in_{len(self._batches) + 1}", parsed, datetime.now(UTC))
            self._batches[batch.id] = batch
        return batch

    def get(self, batch_id: str) -> StoredBatch | None:
        with self._lock:
            return self._batches.get(batch_id)

    def in_progress(self) -> list[StoredBatch]:
        with self._lock:
            return [b for b in self._batches.values() if b.status == "in_progress"]

    def all(self) -> list[StoredBatch]:
        with self._lock:
            return list(self._batches.values())

    def finish(self, batch: StoredBatch, results: dict[str, dict[str, Any]]) -> None:
        with self._lock:
            batch.results.update(results)
            for cid, _ in batch.requests:
                batch.results.setdefault(cid, {"type": "canceled"})
            batch.status, batch.ended_at = "ended", datetime.now(UTC)

    def cancel(self, batch: StoredBatch) -> None:
        with self._lock:
            if batch.status == "ended":
                return
            batch.cancel_initiated_at = datetime.now(UTC)
        self.finish(batch, {})


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment is not None else None
