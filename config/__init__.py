"""Deployment configuration: settings from the environment, Celery settings, logging. No logic beyond that."""
