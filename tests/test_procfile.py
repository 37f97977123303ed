"""Every line of the Procfile starts a working process (against Redis + Postgres)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

import pipeline
from tests import workflows
from tests.conftest import eventually, sink_lines
from tests.stacks import ROOT, free_port


def procfile() -> dict[str, str]:
    entries = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, command = line.split(":", 1)
            entries[name.strip()] = command.strip()
    return entries


def http_ok(url: str, **kwargs) -> bool:
    try:
        return httpx.get(url, timeout=2, **kwargs).status_code == 200
    except httpx.HTTPError:
        return False


def test_the_procfile_declares_web_worker_beat_and_flower():
    assert set(procfile()) == {"web", "worker", "beat", "flower"}


def test_every_procfile_process_starts_and_works(production, sink, tmp_path):
    web_port, flower_port = free_port(), free_port()
    env = production.subprocess_env(
        PORT=str(web_port),
        FLOWER_PORT=str(flower_port),
        FLOWER_BASIC_AUTH="ops:s3cret",
        RUBOT_WEB_SECRET_KEY="test-secret",
        PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    )
    processes: dict[str, tuple[subprocess.Popen, Path]] = {}
    try:
        for name, command in procfile().items():
            log = tmp_path / f"{name}.log"
            handle = log.open("wb")
            processes[name] = (
                subprocess.Popen(
                    ["sh", "-c", command],
                    cwd=ROOT,
                    env=env,
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                ),
                log,
            )

        def log_of(name: str) -> str:
            process, log = processes[name]
            assert process.poll() is None, f"{name} exited:\n{log.read_text(errors='replace')[-2000:]}"
            return log.read_text(errors="replace")

        # web answers its health check; worker, beat and flower say they are up
        eventually(lambda: http_ok(f"http://127.0.0.1:{web_port}/healthz"), timeout=60, what="web")
        eventually(lambda: " ready." in log_of("worker"), timeout=60, what="worker")
        eventually(lambda: "beat: Starting..." in log_of("beat"), timeout=60, what="beat")
        eventually(lambda: http_ok(f"http://127.0.0.1:{flower_port}/healthcheck"), timeout=60, what="flower")
        # Flower's API is behind basic auth
        assert httpx.get(f"http://127.0.0.1:{flower_port}/api/workers", timeout=5).status_code == 401
        assert http_ok(f"http://127.0.0.1:{flower_port}/api/workers", auth=("ops", "s3cret"))

        # and the worker really runs workflows
        run = pipeline.run(workflows.LinearWorkflow, input={"sink": str(sink), "n": 4}, timeout=60)
        assert run.status == "completed" and sink_lines(sink) == [f"{run.id} first", f"{run.id} second"]
    finally:
        for process, _ in processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process, _ in processes.values():
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
