"""The raw Celery side of ``rubot bench``: a plain Celery app with the same delivery settings as Rubot's.

``celery -A scripts.bench_raw worker`` serves it. Its tasks do nothing, so what the benchmark measures on this
side is Celery itself: publishing, routing, acknowledging and (for ``.get()``) the result backend.
"""

from __future__ import annotations

import os

from celery import Celery

BROKER = os.environ.get("RUBOT_BENCH_BROKER", "redis://127.0.0.1:6379/14")
PREFIX = os.environ.get("RUBOT_BENCH_KEY_PREFIX", "")
QUEUE = os.environ.get("RUBOT_BENCH_RAW_QUEUE", "bench-raw")

app = Celery("bench_raw", broker=BROKER, backend=BROKER)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_default_queue=QUEUE,
    result_expires=600,
    broker_connection_retry_on_startup=True,
    worker_send_task_events=True,
    task_send_sent_event=True,
)
if PREFIX:
    app.conf.broker_transport_options = {"global_keyprefix": PREFIX}
    app.conf.result_backend_transport_options = {"global_keyprefix": PREFIX}


@app.task(name="bench.noop")
def noop(*_args: object) -> int:
    """One step of work that does nothing (a chain passes the previous result along)."""
    return 1
