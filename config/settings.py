"""This deployment's settings: the ``RUBOT_*`` environment variables (read by :func:`pipeline.settings.load`),
with the bundled reference app as the default workflow module."""

from __future__ import annotations

from collections.abc import Mapping

from pipeline.settings import Settings
from pipeline.settings import load as load_settings

DEFAULTS = {"RUBOT_WORKFLOW_MODULES": "rubot_app.agents.conference_travel"}


def load(environ: Mapping[str, str] | None = None) -> Settings:
    return load_settings(environ, defaults=DEFAULTS)
