"""Fixtures: every test marked with the ``stack`` fixture runs on the embedded default and on Redis + Postgres.

A missing Redis or Postgres fails the run on CI (``CI`` set) and skips loudly elsewhere.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pipeline import runtime as rubot_runtime
from pipeline.embedded import inprocess
from pipeline.models.guard import forbid_network_models
from pipeline.testing import ScriptedModel
from tests import stacks

os.environ.setdefault("RUBOT_SITES", "seeded")  # the reference fetch tool must never reach the internet here
forbid_network_models()  # a model call that is not to a local stand-in fails instead of leaving the machine
ON_CI = bool(os.environ.get("CI"))


def _production(tmp: Path, database: str) -> stacks.Stack:
    try:
        return stacks.production_stack(tmp, database=database)
    except stacks.ServiceMissing as exc:
        if ON_CI:
            pytest.fail(f"CI needs real services: {exc}")
        pytest.skip(f"LOUD SKIP: {exc}")


@pytest.fixture(scope="session", params=["embedded", "redis_postgres"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[stacks.Stack]:
    """A migrated stack with a real worker (threads in this process) consuming its queue."""
    tmp = tmp_path_factory.mktemp(request.param)
    database = f"rubot_test_{uuid.uuid4().hex[:8]}"
    current = stacks.embedded_stack(tmp) if request.param == "embedded" else _production(tmp, database)
    current.migrate()
    previous = rubot_runtime.install(current.runtime)
    with inprocess.worker(current.app, concurrency=4, loglevel="WARNING") as controller:
        current.controller = controller  # type: ignore[attr-defined]
        yield current
    rubot_runtime.install(previous)
    current.runtime.db.dispose()
    if request.param == "redis_postgres":
        stacks.drop_postgres_database(database)


@pytest.fixture
def production(tmp_path: Path) -> Iterator[stacks.Stack]:
    """A fresh Redis + Postgres stack with no worker: tests start ``celery worker`` processes themselves."""
    database = f"rubot_test_{uuid.uuid4().hex[:8]}"
    current = _production(tmp_path, database)
    current.migrate()
    previous = rubot_runtime.install(current.runtime)
    yield current
    rubot_runtime.install(previous)
    current.runtime.db.dispose()
    stacks.drop_postgres_database(database)


@pytest.fixture
def model(stack: stacks.Stack, sink: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ScriptedModel]:
    """The stack's model swapped for a script (the worker threads share the runtime); tools write to ``sink``."""
    monkeypatch.setenv("RUBOT_TEST_SINK", str(sink))
    scripted = ScriptedModel()
    previous, stack.runtime.model = stack.runtime.model, scripted
    yield scripted
    stack.runtime.model = previous


@pytest.fixture
def sink(tmp_path: Path) -> Path:
    """A file that test tools append one line to per real execution: effects counted outside the ledger."""
    path = tmp_path / f"sink-{uuid.uuid4().hex[:6]}.log"
    path.touch()
    return path


def sink_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line]


def eventually(condition: Callable[[], object], *, timeout: float = 30, what: str = "condition") -> object:
    """Wait (bounded) until ``condition()`` is truthy and return its value."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.2)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--long",
        action="store_true",
        default=False,
        help="run the long fault-test mode (200+ runs with random worker kills)",
    )


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The distribution built from this checkout, once per session."""
    from tests import packaging

    return packaging.build_wheel(tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="session")
def host_python(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Path:
    """The interpreter of a fresh venv with the built wheel installed (and this environment's dependencies)."""
    from tests import packaging

    python = packaging.make_venv(tmp_path_factory.mktemp("host") / "venv", dependencies=True)
    packaging.install_wheel(python, wheel)
    return python
