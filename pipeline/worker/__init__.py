"""Rubot inside a Celery app: its ``rubot.*`` tasks (:mod:`~pipeline.worker.tasks`), the Celery configuration of
an app of its own (:mod:`~pipeline.worker.conf`) and the beat and worker signal handlers
(:mod:`~pipeline.worker.signals`)."""
