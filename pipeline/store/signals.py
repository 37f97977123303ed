"""Waking those who wait for a run (``pipeline.wait``) when it comes to rest, instead of polling SQL.

A transition into a resting status (waiting for approval, or final) calls :meth:`RunSignals.rested` inside its
transaction. Two ways carry the news, both only once the transaction commits:

* **Postgres**: ``pg_notify('rubot_runs', run_id)`` in the same transaction, which Postgres delivers on commit to
  every session that ``LISTEN``\\ s — in any process. One listener thread per process (and database) receives
  them and wakes the matching waiters.
* **Every database**: a process-local signal fired after the commit, for a worker in the waiting process (the
  embedded default's in-process worker, the demo, tests).

A waiter still looks at SQL now and then (``fallback`` seconds), so a lost notification, a listener that lost
its connection, or a SQLite worker in another process only makes waiting slower, never wrong.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from pipeline.store.aftercommit import on_commit

log = logging.getLogger("rubot.signals")

CHANNEL = "rubot_runs"
#: Where a session finds the signals of its database (``Database.session_info``).
SIGNALS_KEY = "rubot_signals"


class RunSignals:
    """The waiters of one database in this process, and (on Postgres) the thread that listens for them."""

    def __init__(self, url: str) -> None:
        self._url = make_url(url)
        self._postgres = self._url.get_backend_name() == "postgresql"
        self._lock = threading.Lock()
        self._waiters: dict[str, set[threading.Event]] = defaultdict(set)
        self._listening = threading.Event()
        self._listener: threading.Thread | None = None
        self._stop = threading.Event()

    # --- the writing side (inside a transaction) -------------------------------------------------------------

    def rested(self, session: Session, run_id: str) -> None:
        """Announce, on commit, that ``run_id`` reached a resting status."""
        if self._postgres:
            session.execute(text("SELECT pg_notify(:channel, :run_id)"), {"channel": CHANNEL, "run_id": run_id})
        on_commit(session, lambda: self._wake(run_id))

    # --- the waiting side ------------------------------------------------------------------------------------

    @contextmanager
    def watching(self, run_id: str) -> Iterator[threading.Event]:
        """An event set whenever ``run_id`` may have come to rest; register before reading the run's status."""
        event = threading.Event()
        with self._lock:
            self._waiters[run_id].add(event)
        if self._postgres:
            self._ensure_listener()
        try:
            yield event
        finally:
            with self._lock:
                waiters = self._waiters.get(run_id)
                if waiters is not None:
                    waiters.discard(event)
                    if not waiters:
                        del self._waiters[run_id]

    @property
    def live(self) -> bool:
        """True when notifications from other processes arrive (a Postgres listener is connected)."""
        return self._listening.is_set()

    def close(self) -> None:
        self._stop.set()

    def _wake(self, run_id: str) -> None:
        with self._lock:
            events = list(self._waiters.get(run_id, ()))
        for event in events:
            event.set()

    def _ensure_listener(self) -> None:
        with self._lock:
            if self._listener is not None and self._listener.is_alive():
                alive = True
            else:
                alive = False
                self._listening.clear()
                self._listener = threading.Thread(target=self._listen, name="rubot-run-signals", daemon=True)
                self._listener.start()
        if not alive:
            # Wait (briefly) until LISTEN is in place: a notification sent before would be missed.
            self._listening.wait(timeout=2.0)

    def _listen(self) -> None:
        import psycopg

        conninfo = self._url.set(drivername="postgresql").render_as_string(hide_password=False)
        try:
            with psycopg.connect(conninfo, autocommit=True) as conn:
                conn.execute(f"LISTEN {CHANNEL}")
                self._listening.set()
                while not self._stop.is_set():
                    for notice in conn.notifies(timeout=1.0):
                        self._wake(notice.payload)
        except Exception as exc:  # the waiters fall back to polling; the next wait starts a new listener
            log.info("run signal listener stopped: %s", exc)
        finally:
            self._listening.clear()


def of_session(session: Session) -> Any:
    return session.info.get(SIGNALS_KEY)
