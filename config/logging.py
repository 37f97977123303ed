"""Logging for Rubot processes: one readable line per record on stderr, or JSON lines (``RUBOT_LOG_FORMAT=json``),
with the run's fields on every record (:mod:`pipeline.observe.logs`)."""

from __future__ import annotations

from pipeline.observe import logs


def configure(level: str = "INFO", kind: str = "text") -> None:
    logs.configure(level, kind)
