"""Engines and transactions, the same code for SQLite and Postgres chosen by one URL."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from pipeline.errors import ConfigurationError, DatabaseNotMigratedError
from pipeline.store import aftercommit
from pipeline.store.aftercommit import on_commit
from pipeline.store.signals import SIGNALS_KEY, RunSignals

__all__ = ["Database", "on_commit"]

_lock = threading.Lock()
T = TypeVar("T")


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
        self._dialect: str | None = None
        #: Wakes ``pipeline.wait`` callers when a run comes to rest (see :mod:`pipeline.store.signals`).
        self.signals = RunSignals(url)
        #: Copied into every session's ``info`` (the runtime puts its lifecycle hooks here).
        self.session_info: dict[str, Any] = {SIGNALS_KEY: self.signals}

    @property
    def dialect(self) -> str:
        if self._dialect is None:  # asked on every step: parse the URL once
            self._dialect = make_url(self.url).get_backend_name()
        return self._dialect

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
            # No pre-ping: it would add a round trip to every transaction. A connection the server dropped fails
            # its first statement instead; SQLAlchemy then invalidates the pool and the task retries
            # (tasks autoretry on OperationalError), which the Postgres fault test exercises.
            return create_engine(url, pool_size=5, max_overflow=5, pool_recycle=1800)
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
            session.info.update(self.session_info)
            with session.begin():
                yield session
            callbacks = aftercommit.take(session)
        for callback in callbacks:
            callback()

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for reads only: no commit. On Postgres each statement runs on its own (autocommit: no
        BEGIN/ROLLBACK round trips); SQLite begins a deferred, not an immediate, transaction."""
        options: dict[str, Any] = {"rubot_read_only": True}
        if self.dialect == "postgresql":
            options["isolation_level"] = "AUTOCOMMIT"
        with self.engine.connect().execution_options(**options) as connection:
            yield connection
            if self.dialect != "postgresql":
                connection.rollback()

    @contextmanager
    def autocommit(self) -> Iterator[Connection]:
        """A Postgres connection whose every statement commits by itself (one statement = one transaction)."""
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            yield connection

    def reading(self, read: Callable[[Session], T]) -> T:
        """``read(session)`` in a transaction, tried once more on a fresh connection if the first one turned out
        to be dead (the server restarted, or terminated it). For reads only: running them twice is harmless.

        Pools do not ping connections before use (that would cost a round trip on every step of every run);
        a dead connection fails its first statement instead, which invalidates the pool. Workers retry the task;
        callers reading through the public API are retried here.
        """
        try:
            return self._read_with(read)
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            return self._read_with(read)

    def _read_with(self, read: Callable[[Session], T]) -> T:
        with self.read() as connection, Session(bind=connection, expire_on_commit=False) as session:
            return read(session)

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
    def _connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # let us emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):
        # Writers take SQLite's write lock up front (two workers merging into one run must not both read the
        # old state); readers do not, so a read never waits for a writer (WAL) nor blocks one.
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get("rubot_read_only") else "BEGIN IMMEDIATE")
