"""Test stacks: the embedded default (SQLite + filesystem broker) and production (Redis + Postgres).

Each stack builds real settings, a real Celery app and runtime, migrates a real database and can run a
real worker: threads in this process, or a ``celery worker`` subprocess for kill/restart tests.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import runtime as rubot_runtime
from pipeline.hosting import make_app
from pipeline.runtime import Runtime
from pipeline.settings import Settings
from pipeline.store import migrate
from rubot_app.config.settings import load

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW_MODULES = ",".join(
    [
        "tests.workflows",
        "tests.agent_workflows",
        "tests.fault_workflows",
        "tests.expiry_workflows",
        "tests.engine_workflows",
        "tests.operation_workflows",
        "tests.secret_workflows",
        "tests.branching_workflows",
        "rubot_app.agents.conference_travel",
    ]
)
POSTGRES_ADMIN_URL = os.environ.get(
    "RUBOT_TEST_POSTGRES_ADMIN", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("RUBOT_TEST_REDIS", "redis://127.0.0.1:6379/15")


class ServiceMissing(RuntimeError):
    pass


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def require_services() -> None:
    missing = [name for name, port in (("Redis", 6379), ("PostgreSQL", 5432)) if not port_open("127.0.0.1", port)]
    if missing:
        raise ServiceMissing(f"{' and '.join(missing)} not reachable on 127.0.0.1 (start them as in the README)")


def create_postgres_database(name: str) -> str:
    from sqlalchemy import create_engine, text

    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def drop_postgres_database(name: str) -> None:
    from sqlalchemy import create_engine, text

    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@dataclass
class Stack:
    """One deployment under test: its environment, settings, app and runtime."""

    name: str
    env: dict[str, str]
    home: Path
    settings: Settings = field(init=False)
    runtime: Runtime = field(init=False)

    def __post_init__(self) -> None:
        self.settings = load(self.env)
        self.runtime = rubot_runtime.of_app(make_app(self.settings, name=f"rubot-{self.name}"))

    @property
    def app(self) -> Any:
        return self.runtime.app

    def migrate(self) -> None:
        migrate.upgrade(self.runtime.db)

    def subprocess_env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RUBOT_", "ANTHROPIC_"))}
        env["RUBOT_FORBID_NETWORK_MODELS"] = "1"
        env.update(self.env)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        env.update(extra)
        return env

    def queue_length(self) -> int:
        """Messages waiting in the Rubot queue (Redis list or filesystem folder)."""
        if self.settings.embedded:
            return len(list((self.settings.broker_folder / "queue").glob("*.msg")))
        import redis

        return redis.Redis.from_url(self.settings.broker_url).llen(self.settings.redis_key_prefix + self.settings.queue)

    def result_keys(self) -> list[str]:
        if self.settings.embedded:
            return [p.name for p in (self.home / "results").glob("celery-task-meta-*")]
        import redis

        client = redis.Redis.from_url(self.settings.result_backend)
        return [k.decode() for k in client.scan_iter(f"{self.settings.redis_key_prefix}celery-task-meta-*")]

    def start_worker_process(
        self, *, concurrency: int = 2, log: Path | None = None, args: tuple[str, ...] = (), **env: str
    ) -> WorkerProcess:
        return WorkerProcess.start(self, concurrency=concurrency, log=log, env=env, args=args)


def embedded_stack(tmp: Path) -> Stack:
    home = tmp / "embedded"
    shutil.rmtree(home, ignore_errors=True)
    env = {
        "RUBOT_HOME": str(home),
        "RUBOT_WORKFLOW_MODULES": WORKFLOW_MODULES,
        "RUBOT_SITES": "seeded",
        "RUBOT_LOG_LEVEL": "WARNING",
    }
    return Stack("embedded", env, home)


def production_stack(tmp: Path, *, database: str, redis_url: str = REDIS_URL) -> Stack:
    require_services()
    url = create_postgres_database(database)
    home = tmp / "production"
    env = {
        "RUBOT_HOME": str(home),
        "RUBOT_DATABASE_URL": url,
        "RUBOT_BROKER_URL": redis_url,
        "RUBOT_RESULT_BACKEND": redis_url,
        "RUBOT_QUEUE": f"rubot-test-{uuid.uuid4().hex[:8]}",
        # Every key this stack writes carries its own prefix: parallel test sessions sharing the Redis
        # server never see (or wipe) each other's messages and result keys.
        "RUBOT_REDIS_KEY_PREFIX": f"rubot-test-{uuid.uuid4().hex[:8]}:",
        "RUBOT_WORKFLOW_MODULES": WORKFLOW_MODULES,
        "RUBOT_SITES": "seeded",
        "RUBOT_LOG_LEVEL": "WARNING",
    }
    return Stack("redis_postgres", env, home)


@dataclass
class WorkerProcess:
    """``celery -A tasks.app worker`` as a separate process, started and stopped by the test."""

    process: subprocess.Popen
    log: Path

    @classmethod
    def start(
        cls,
        stack: Stack,
        *,
        concurrency: int,
        log: Path | None,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
    ) -> WorkerProcess:
        log = log or stack.home / f"worker-{uuid.uuid4().hex[:6]}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "rubot_app.tasks.app",
            "worker",
            "--loglevel=INFO",
            f"--concurrency={concurrency}",
            "--pool=prefork",
            "--without-gossip",
            "--without-mingle",
            "-Q",
            stack.settings.queue,
            "-n",
            f"test-{uuid.uuid4().hex[:6]}@%h",
            *args,
        ]
        handle = log.open("ab")
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=stack.subprocess_env(**(env or {})),
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        worker = cls(process, log)
        worker.wait_ready()
        return worker

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if " ready." in self.log.read_text(errors="replace"):
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.1)
        raise RuntimeError(f"worker not ready after {timeout}s:\n{self.log.read_text(errors='replace')[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and pool children)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
