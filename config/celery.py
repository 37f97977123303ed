"""Celery settings of this deployment's own app: those :func:`pipeline.worker.conf.build` derives from its
settings (JSON only, late acknowledgement, Rubot's beat sweeps)."""

from __future__ import annotations

from pipeline.worker.conf import build

__all__ = ["build"]
