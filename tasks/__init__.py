"""Rubot's Celery app (``tasks.app``) and its task entry points, each with a stable ``rubot.*`` name.

Importing this package does not build an app; ``celery -A tasks.app worker`` does.
"""
