"""What the scenarios of ``rubot bench`` share: a figure, medians, worker processes, a scratch database."""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_ADMIN = os.environ.get("RUBOT_BENCH_POSTGRES_ADMIN", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("RUBOT_BENCH_REDIS", "redis://127.0.0.1:6379/14")
BENCH_MODULES = "rubot_app.scripts.bench_workflows"


@dataclass
class Figure:
    scenario: str
    rubot: float
    raw: float | None
    unit: str
    target: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        return None if not self.raw else self.rubot / self.raw


def median_of(repeats: int, measure: Callable[[], float], *, warmup: int = 1) -> float:
    for _ in range(warmup):
        measure()
    return statistics.median(measure() for _ in range(repeats))


# --- processes ---------------------------------------------------------------------------------------------------


@contextmanager
def worker_process(app_module: str, queue: str, env: dict[str, str], *, concurrency: int, log: Path) -> Iterator[None]:
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        app_module,
        "worker",
        "-Q",
        queue,
        "--loglevel=INFO",
        f"--concurrency={concurrency}",
        "--pool=prefork",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "-n",
        f"bench-{uuid.uuid4().hex[:6]}@%h",
    ]
    with log.open("ab") as handle:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_ready(process, log)
        yield
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def wait_ready(process: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"worker exited early:\n{log.read_text(errors='replace')[-3000:]}")
        if " ready." in log.read_text(errors="replace"):
            return
        time.sleep(0.05)
    raise RuntimeError(f"worker not ready:\n{log.read_text(errors='replace')[-3000:]}")


def postgres_database() -> tuple[str, Callable[[], None]]:
    from sqlalchemy import create_engine, text

    name = f"rubot_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(POSTGRES_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return POSTGRES_ADMIN.rsplit("/", 1)[0] + f"/{name}", drop


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUBOT_", "ANTHROPIC_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


# --- the production stack ----------------------------------------------------------------------------------------
