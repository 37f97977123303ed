"""The ``rubot bench`` scenarios that need no second worker: SQL counted per step, and the embedded default."""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from rubot_app.scripts.bench_kit import (
    BENCH_MODULES,
    REDIS_URL,
    Figure,
    median_of,
)

# --- SQL per step ------------------------------------------------------------------------------------------------


def sql_counts(database_url: str, home: Path, prefix: str) -> list[Figure]:
    """Statements and commits per step, counted on the engine of an in-process worker (the same code path)."""
    from sqlalchemy import event

    import pipeline
    from pipeline import runtime as rubot_runtime
    from pipeline.embedded import inprocess
    from pipeline.hosting import make_app
    from rubot_app.config.settings import load
    from rubot_app.scripts import bench_workflows as wf

    env = {
        "RUBOT_HOME": str(home / "sql"),
        "RUBOT_DATABASE_URL": database_url,
        "RUBOT_BROKER_URL": REDIS_URL,
        "RUBOT_RESULT_BACKEND": REDIS_URL,
        "RUBOT_REDIS_KEY_PREFIX": prefix,
        "RUBOT_QUEUE": f"bench-sql-{uuid.uuid4().hex[:6]}",
        "RUBOT_WORKFLOW_MODULES": BENCH_MODULES,
        "RUBOT_MODEL_PROVIDER": "offline",
    }
    rt = rubot_runtime.of_app(make_app(load(env), name="rubot-bench-sql"))
    previous = rubot_runtime.install(rt)
    counts = {"statements": 0, "writes": 0}
    writes = ("INSERT", "UPDATE", "DELETE", "WITH")

    def count_statement(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if threading.current_thread() is threading.main_thread():
            return  # the caller's enqueue and wait are not the worker's work
        counts["statements"] += 1
        # A write outside a transaction (Postgres autocommit: the one-statement step record) is its own commit.
        autocommit = conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT"
        if autocommit and statement.lstrip().upper().startswith(writes):
            counts["writes"] += 1

    def count_commit(conn: Any) -> None:
        if threading.current_thread() is not threading.main_thread():
            counts["writes"] += 1

    def measure(workflow: type) -> dict[str, float]:
        before = dict(counts)
        pipeline.run(workflow, timeout=120)
        return {k: (counts[k] - before[k]) / 10 for k in counts}

    try:
        with inprocess.worker(rt.app, concurrency=1, loglevel="WARNING"):
            pipeline.run(wf.BenchTenSteps, timeout=120)  # warm: connections, imports, workflow lookup
            event.listen(rt.db.engine, "before_cursor_execute", count_statement)
            event.listen(rt.db.engine, "commit", count_commit)
            pure = measure(wf.BenchTenSteps)
            effects = measure(wf.BenchTenEffects)
            event.remove(rt.db.engine, "before_cursor_execute", count_statement)
            event.remove(rt.db.engine, "commit", count_commit)
    finally:
        rubot_runtime.install(previous)
        rt.db.dispose()
    # Per step, over a whole 10-step run (so the run's completion, in its last step, is spread over the steps).
    return [
        Figure(
            "sql_per_step",
            pure["writes"],
            None,
            "write transactions per step, no side effects",
            "1; ≤ 2 with side effects",
            {
                "writes_per_step": pure["writes"],
                "statements_per_step": pure["statements"],
                "writes_per_step_with_side_effects": effects["writes"],
                "statements_per_step_with_side_effects": effects["statements"],
            },
        )
    ]


# --- the embedded default ----------------------------------------------------------------------------------------


def embedded(home: Path, repeats: int) -> list[Figure]:
    import pipeline
    from pipeline import runtime as rubot_runtime
    from pipeline.embedded import inprocess
    from pipeline.hosting import make_app
    from pipeline.store import migrate
    from rubot_app.config.settings import load
    from rubot_app.scripts import bench_workflows as wf

    env = {
        "RUBOT_HOME": str(home / "embedded"),
        "RUBOT_WORKFLOW_MODULES": BENCH_MODULES,
        "RUBOT_MODEL_PROVIDER": "offline",
        "RUBOT_LOG_LEVEL": "WARNING",
    }
    rt = rubot_runtime.of_app(make_app(load(env), name="rubot-bench-embedded"))
    migrate.upgrade(rt.db)
    previous = rubot_runtime.install(rt)
    try:
        with inprocess.worker(rt.app, concurrency=4, loglevel="WARNING"):

            def measure() -> float:
                t = time.perf_counter()
                assert pipeline.run(wf.BenchTenSteps, timeout=120).completed
                return time.perf_counter() - t

            per_step = median_of(repeats, measure) / 10
    finally:
        rubot_runtime.install(previous)
        rt.db.dispose()
    return [Figure("embedded_step", per_step, sqlite_commit(home), "s/step", "≤ 10 ms per step")]


def sqlite_commit(home: Path) -> float:
    path = home / "commit.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE IF NOT EXISTS t (v TEXT)")

    def measure() -> float:
        t = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t VALUES ('x')")
        conn.execute("COMMIT")
        return time.perf_counter() - t

    try:
        return median_of(200, measure)
    finally:
        conn.close()


# --- report ------------------------------------------------------------------------------------------------------
