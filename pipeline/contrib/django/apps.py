"""The Django app config of ``pipeline.contrib.django`` (label ``rubot``)."""

from __future__ import annotations

from django.apps import AppConfig


class RubotConfig(AppConfig):
    name = "pipeline.contrib.django"
    label = "rubot"
    verbose_name = "Rubot"
