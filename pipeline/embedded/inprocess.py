"""A Celery worker running on threads inside the current process, for ``rubot demo`` and tests.

It is a real ``WorkController`` consuming from the configured broker (messages are serialized, acked and
routed as usual); only the process boundary is missing. Production runs ``rubot worker`` instead.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from celery import Celery
from celery.worker import WorkController, state

from pipeline.errors import ConfigurationError


@contextmanager
def worker(
    app: Celery,
    *,
    concurrency: int = 4,
    pool: str = "threads",
    loglevel: str = "WARNING",
    start_timeout: float = 30.0,
    queues: list[str] | None = None,
) -> Iterator[WorkController]:
    ready = threading.Event()

    class _Worker(WorkController):
        def on_consumer_ready(self, consumer):
            super().on_consumer_ready(consumer)
            ready.set()

    app.finalize()
    # Canvas pieces rebuilt from a message bind to the *current* app, which is thread-local with a global
    # fallback; worker threads must resolve to this app, not to Celery's unconfigured default.
    app.set_current()
    app.set_default()
    controller = _Worker(
        app=app,
        concurrency=concurrency,
        pool=pool,
        loglevel=loglevel,
        hostname=f"rubot-inprocess-{os.getpid()}-{id(app)}@{socket.gethostname()}",
        without_heartbeat=True,
        without_mingle=True,
        without_gossip=True,
        ready_callback=None,
        queues=queues,
    )
    thread = threading.Thread(target=controller.start, name="rubot-worker", daemon=True)
    thread.start()
    if not ready.wait(start_timeout):
        raise ConfigurationError(f"the in-process worker did not connect to {app.conf.broker_url} in {start_timeout}s")
    try:
        yield controller
    finally:
        state.should_terminate = 0
        controller.stop(in_sighandler=False)  # without this the consumer polls once more before it notices
        thread.join(30)
        state.should_terminate = None
