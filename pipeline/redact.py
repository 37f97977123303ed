"""Keep secrets out of the event trail, logs and error reports."""

from __future__ import annotations

import re
from typing import Any

SECRET_KEY = re.compile(
    r"(^|[_-])(api[_-]?key|apikey|secret|password|passwd|authorization|auth[_-]?token|access[_-]?token|"
    r"refresh[_-]?token|private[_-]?key|cookie|session[_-]?id|credentials?)$",
    re.IGNORECASE,
)
SECRET_VALUE = re.compile(r"\b(sk-ant-[A-Za-z0-9_-]{8,}|sk-[A-Za-z0-9]{20,}|Bearer\s+[A-Za-z0-9._-]{8,})")
REDACTED = "[redacted]"


def redact(value: Any) -> Any:
    """A copy of ``value`` with secret-looking keys and API-key-looking strings replaced."""
    if isinstance(value, dict):
        return {k: REDACTED if isinstance(k, str) and SECRET_KEY.search(k) else redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return SECRET_VALUE.sub(REDACTED, value)
    return value
