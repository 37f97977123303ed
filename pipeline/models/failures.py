"""Which provider failures are worth retrying, as Rubot errors, shared by every provider and test double.

Retrying is the Celery turn task's job, not the SDK's: a turn is retried as a task so it is recorded and billed
once. Providers only classify: :class:`~pipeline.errors.ModelUnavailable` (retry later) or
:class:`~pipeline.errors.ModelError` (the request itself is wrong; retrying cannot help).
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from typing import Any

from pipeline.errors import ModelError, ModelUnavailable

# 408 is the server timing out on our request, so it counts with timeouts; 429 is a rate limit; 529 is Anthropic's
# "overloaded"; every 5xx is the provider's trouble. Other 4xx mean the request is wrong and would fail again.
RETRYABLE_CLIENT_STATUSES = frozenset({408, 429})


def is_retryable_status(status: int) -> bool:
    """True for statuses that say "try again later" rather than "this request is wrong"."""
    return status >= 500 or status in RETRYABLE_CLIENT_STATUSES


def parse_retry_after(headers: Mapping[str, str] | Any, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``retry-after`` header (delta-seconds or an HTTP date); None when absent or bad."""
    value = headers.get("retry-after") if headers is not None else None
    if value is None:
        return None
    value = str(value).strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(seconds, 0.0)


def error_for_status(
    status: int, message: str, *, retry_after: float | None = None, details: dict[str, Any] | None = None
) -> ModelError:
    """The Rubot error for an HTTP failure ``status`` from a model provider (returned, not raised)."""
    if is_retryable_status(status):
        return ModelUnavailable(message, status=status, retry_after=retry_after, details=details)
    return ModelError(message, details=details)
