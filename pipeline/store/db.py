"""Engines and transactions, the same code for SQLite and Postgres chosen by one URL."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from pipeline.errors import ConfigurationError, DatabaseNotMigratedError

_lock = threading.Lock()
_AFTER_COMMIT = "rubot_after_commit"


def on_commit(session: Session, callback: Callable[[], None]) -> None:
    """Call ``callback`` after ``session``'s transaction (from :meth:`Database.transaction`) has committed."""
    session.info.setdefault(_AFTER_COMMIT, []).append(callback)


class Database:
    """One engine per process (rebuilt after a fork) and a ``transaction()`` helper.

    SQLite transactions start with ``BEGIN IMMEDIATE``: two workers merging step results into the same run
    row must not both read the old state. Postgres uses ``SELECT ... FOR UPDATE`` for the same reason
    (see :func:`pipeline.store.queries.lock_run`).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: Engine | None = None
        self._pid = 0
        self._sessions: sessionmaker[Session] | None = None
        self._checked = False
        #: Copied into every session's ``info`` (the runtime puts its lifecycle hooks here).
        self.session_info: dict[str, Any] = {}

    @property
    def dialect(self) -> str:
        return make_url(self.url).get_backend_name()

    @property
    def engine(self) -> Engine:
        if self._engine is None or self._pid != os.getpid():
            with _lock:
                if self._engine is None or self._pid != os.getpid():
                    if self._engine is not None:
                        self._engine.dispose(close=False)  # inherited from the parent process: not ours
                    self._engine = self._create()
                    self._pid = os.getpid()
                    self._sessions = sessionmaker(self._engine, expire_on_commit=False)
        return self._engine

    def _create(self) -> Engine:
        url = make_url(self.url)
        backend = url.get_backend_name()
        if backend == "sqlite":
            if url.database and url.database != ":memory:":
                Path(url.database).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
            _sqlite_immediate(engine)
            return engine
        if backend == "postgresql":
            if url.drivername == "postgresql":
                url = url.set(drivername="postgresql+psycopg")
            return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)
        raise ConfigurationError(f"unsupported database URL {self.url!r}: use sqlite:/// or postgresql://")

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on any exception.

        Callbacks registered with :func:`on_commit` run after the commit, outside the transaction, and not at
        all when it rolls back.
        """
        self.engine  # noqa: B018 - builds the sessionmaker for this process
        assert self._sessions is not None
        with self._sessions() as session:
            if self.session_info:
                session.info.update(self.session_info)
            with session.begin():
                yield session
            callbacks = session.info.pop(_AFTER_COMMIT, ())
        for callback in callbacks:
            callback()

    def check_migrated(self) -> None:
        if self._checked:
            return
        from pipeline.store.migrate import current_revision, head_revision

        if not inspect(self.engine).has_table("rubot_runs") or current_revision(self) != head_revision():
            raise DatabaseNotMigratedError(
                f"the database at {make_url(self.url).render_as_string(hide_password=True)} is not at the "
                "latest Rubot schema: run `rubot migrate`"
            )
        self._checked = True

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


def _sqlite_immediate(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        dbapi_connection.isolation_level = None  # let us emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):  # type: ignore[no-untyped-def]
        conn.exec_driver_sql("BEGIN IMMEDIATE")
