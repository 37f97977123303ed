"""This deployment's Celery app, ``rubot_app.tasks.app`` (``celery -A rubot_app.tasks.app worker``).

The ``rubot.*`` tasks themselves live in the framework (:mod:`pipeline.worker.tasks`); importing this package
builds nothing.
"""
