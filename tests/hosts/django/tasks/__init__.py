"""The project's own Celery tasks, next to Rubot's on the same app."""

from celery import shared_task


@shared_task(name="host.ping")
def ping():
    return "pong"
