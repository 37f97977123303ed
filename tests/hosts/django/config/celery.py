"""The project's Celery app (Celery's Django recipe) with Rubot installed on it."""

import os

from celery import Celery

import pipeline

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("config")
app.config_from_object("django.conf:settings", namespace="CELERY")
pipeline.install(app)  # settings are read from Django's settings when first needed
