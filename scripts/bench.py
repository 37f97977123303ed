"""``rubot bench``: Rubot's hot path against raw Celery, measured in the same run, printed as ratios.

Both sides use the same broker, the same delivery settings (JSON, late acks, reject on worker loss, prefetch of
one) and a worker process each with the same pool and concurrency. Scenarios:

* ``per_step`` — a 10-step no-op workflow against a chain of 10 no-op tasks (time per step);
* ``one_step`` — a 1-step run end to end against one ``apply_async().get()``;
* ``throughput`` — N concurrent 3-step runs (caps raised) against N chains of 3 tasks (runs per second);
* ``resume`` — approve a parked run until it completes, against one ``apply_async().get()``;
* ``agent_turn`` — the overhead of an agent turn (with one tool call) over a direct SDK call to the same local
  Messages API stand-in, in units of a raw Celery round trip;
* ``sql_per_step`` — statements and commits per step (no side effects, and a side-effecting tool step), counted on
  the database engine of an in-process worker;
* ``embedded_step`` — a step on the embedded default (SQLite + filesystem broker) against one SQLite commit.

Nothing here is a test: timings vary with the machine. The figures go to stdout and, with ``--json``, to a file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rubot_app.scripts.bench_kit import (
    BENCH_MODULES,
    REDIS_URL,
    Figure,
    base_env,
    median_of,
    postgres_database,
    worker_process,
)
from rubot_app.scripts.bench_local import embedded, sql_counts


class ProductionBench:
    """Redis + Postgres, one Rubot worker process and one raw Celery worker process."""

    def __init__(self, *, concurrency: int, repeats: int, runs: int, home: Path) -> None:
        self.concurrency, self.repeats, self.runs, self.home = concurrency, repeats, runs, home
        self.prefix = f"rubot-bench-{uuid.uuid4().hex[:8]}:"

    def rubot_env(self, database_url: str, **extra: str) -> dict[str, str]:
        return {
            "RUBOT_HOME": str(self.home / "production"),
            "RUBOT_DATABASE_URL": database_url,
            "RUBOT_BROKER_URL": REDIS_URL,
            "RUBOT_RESULT_BACKEND": REDIS_URL,
            "RUBOT_REDIS_KEY_PREFIX": self.prefix,
            "RUBOT_QUEUE": f"bench-rubot-{uuid.uuid4().hex[:6]}",
            "RUBOT_WORKFLOW_MODULES": BENCH_MODULES,
            "RUBOT_MAX_RUNNING": "100000",
            "RUBOT_MAX_RUNNING_PER_USER": "100000",
            "RUBOT_LOG_LEVEL": "WARNING",
            "RUBOT_MODEL_PROVIDER": "offline",
            **extra,
        }

    def run(self) -> list[Figure]:
        from pipeline import runtime as rubot_runtime
        from pipeline.hosting import make_app
        from pipeline.store import migrate
        from rubot_app.config.settings import load

        database_url, drop = postgres_database()
        figures: list[Figure] = []
        try:
            with _standin() as stand_in:
                env = self.rubot_env(
                    database_url,
                    RUBOT_MODEL_PROVIDER="anthropic",
                    ANTHROPIC_API_KEY="bench-key",
                    ANTHROPIC_BASE_URL=stand_in.url,
                )
                settings = load(env)
                rt = rubot_runtime.of_app(make_app(settings, name="rubot-bench"))
                migrate.upgrade(rt.db)
                previous = rubot_runtime.install(rt)
                raw_env = {
                    **base_env(),
                    "RUBOT_BENCH_BROKER": REDIS_URL,
                    "RUBOT_BENCH_KEY_PREFIX": self.prefix,
                    "RUBOT_BENCH_RAW_QUEUE": f"bench-raw-{uuid.uuid4().hex[:6]}",
                }
                os.environ.update(
                    {k: raw_env[k] for k in ("RUBOT_BENCH_BROKER", "RUBOT_BENCH_KEY_PREFIX", "RUBOT_BENCH_RAW_QUEUE")}
                )
                from rubot_app.scripts import bench_raw

                try:
                    with (
                        worker_process(
                            "rubot_app.tasks.app",
                            settings.queue,
                            {**base_env(), **env},
                            concurrency=self.concurrency,
                            log=self.home / "rubot-worker.log",
                        ),
                        worker_process(
                            "rubot_app.scripts.bench_raw",
                            raw_env["RUBOT_BENCH_RAW_QUEUE"],
                            raw_env,
                            concurrency=self.concurrency,
                            log=self.home / "raw-worker.log",
                        ),
                    ):
                        figures += self._scenarios(rt, bench_raw, stand_in)
                finally:
                    rubot_runtime.install(previous)
                    rt.db.dispose()
            figures += sql_counts(database_url, self.home, self.prefix)
        finally:
            drop()
        return figures

    def _scenarios(self, rt: Any, raw: Any, stand_in: Any) -> list[Figure]:
        from celery import chain

        import pipeline
        from rubot_app.scripts import bench_workflows as wf

        def raw_one() -> float:
            t = time.perf_counter()
            raw.noop.apply_async().get(timeout=60)
            return time.perf_counter() - t

        def raw_chain(n: int) -> Callable[[], float]:
            def measure() -> float:
                t = time.perf_counter()
                chain(*[raw.noop.s() for _ in range(n)]).apply_async().get(timeout=60)
                return time.perf_counter() - t

            return measure

        def rubot_run(workflow: type) -> Callable[[], float]:
            def measure() -> float:
                t = time.perf_counter()
                done = pipeline.run(workflow, timeout=120)
                assert done.completed, done.error
                return time.perf_counter() - t

            return measure

        _await(lambda: raw.noop.apply_async().get(timeout=60))  # both workers consume before we time anything
        pipeline.run(wf.BenchOneStep, timeout=120)
        raw_round_trip = median_of(self.repeats * 3, raw_one)
        figures = [
            Figure(
                "per_step",
                median_of(self.repeats, rubot_run(wf.BenchTenSteps)) / 10,
                median_of(self.repeats, raw_chain(10)) / 10,
                "s/step",
                "≤ 1.5×",
            ),
            Figure("one_step", median_of(self.repeats, rubot_run(wf.BenchOneStep)), raw_round_trip, "s/run"),
        ]
        figures.append(self._throughput(raw, wf))
        figures.append(self._resume(raw_round_trip, wf))
        figures.append(self._agent_turn(rt, stand_in, raw_round_trip, wf))
        return figures

    def _throughput(self, raw: Any, wf: Any) -> Figure:
        from celery import chain

        import pipeline

        n = self.runs
        t = time.perf_counter()
        results = [chain(raw.noop.s(), raw.noop.s(), raw.noop.s()).apply_async() for _ in range(n)]
        for result in results:
            result.get(timeout=600)
        raw_rate = n / (time.perf_counter() - t)
        t = time.perf_counter()
        runs = [pipeline.enqueue(wf.BenchThreeSteps) for _ in range(n)]
        for run in runs:
            assert pipeline.wait(run, timeout=600).completed
        rubot_rate = n / (time.perf_counter() - t)
        # Higher is better here, so the ratio is Rubot's rate over raw's.
        return Figure("throughput", rubot_rate, raw_rate, "runs/s", "≥ 0.7×", {"runs": n})

    def _resume(self, raw_round_trip: float, wf: Any) -> Figure:
        import pipeline

        def measure() -> float:
            run = pipeline.run(wf.BenchApproval, timeout=120)
            assert run.waiting_for_approval, run.status
            t = time.perf_counter()
            run.approve(approved_by="bench")
            done = pipeline.wait(run, timeout=120)
            elapsed = time.perf_counter() - t
            assert done.completed, done.error
            return elapsed

        return Figure("resume", median_of(self.repeats, measure), raw_round_trip, "s", "≤ 2×")

    def _agent_turn(self, rt: Any, stand_in: Any, raw_round_trip: float, wf: Any) -> Figure:
        import anthropic

        import pipeline
        from pipeline.testing import reply

        turns = 5

        def script() -> None:
            for i in range(turns - 1):
                stand_in.add(
                    reply(tool_uses=[("echo", {"text": f"t{i}"})], usage={"input_tokens": 10, "output_tokens": 5})
                )
            stand_in.add(
                reply(tool_uses=[("final_answer", {"answer": "ok"})], usage={"input_tokens": 10, "output_tokens": 5})
            )

        def rubot() -> float:
            script()
            t = time.perf_counter()
            done = pipeline.run(wf.BenchAgentWorkflow, timeout=120)
            assert done.completed, done.error
            return time.perf_counter() - t

        client = anthropic.Anthropic(api_key="bench-key", base_url=stand_in.url, max_retries=0)

        def direct() -> float:
            script()
            t = time.perf_counter()
            for _ in range(turns):
                client.messages.create(
                    model="claude-haiku-4-5", max_tokens=100, messages=[{"role": "user", "content": "bench"}]
                )
            return time.perf_counter() - t

        overhead = (median_of(self.repeats, rubot) - median_of(self.repeats, direct)) / turns
        return Figure(
            "agent_turn",
            overhead,
            raw_round_trip,
            "s/turn over a direct SDK call",
            "≤ 2 raw round trips",
            {"turns": turns},
        )


@contextmanager
def _standin() -> Iterator[Any]:
    from pipeline.testing import MessagesStandIn

    with MessagesStandIn() as server:
        yield server


def _await(action: Callable[[], Any], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            action()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def report(figures: list[Figure]) -> str:
    lines = [f"{'scenario':<16} {'rubot':>12} {'raw':>12} {'ratio':>8}  unit / target", "-" * 78]
    for f in figures:
        raw = f"{f.raw:.5f}" if f.raw is not None else "—"
        ratio = f"{f.ratio:.2f}×" if f.ratio is not None else "—"
        lines.append(
            f"{f.scenario:<16} {f.rubot:>12.5f} {raw:>12} {ratio:>8}  {f.unit}"
            + (f" (target {f.target})" if f.target else "")
        )
        for key, value in f.extra.items():
            lines.append(f"{'':<16} {key}: {value}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rubot bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", choices=("all", "production", "embedded"), default="all")
    parser.add_argument("--repeats", type=int, default=7, help="measurements per scenario (median reported)")
    parser.add_argument("--runs", type=int, default=300, help="concurrent runs in the throughput scenario")
    parser.add_argument("--concurrency", type=int, default=4, help="worker processes on each side")
    parser.add_argument("--quick", action="store_true", help="a smoke run: few repeats and runs (CI)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.runs = 1, 10
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="rubot-bench-") as tmp:
        home = Path(tmp)
        if args.stack in ("all", "production"):
            figures += ProductionBench(
                concurrency=args.concurrency, repeats=args.repeats, runs=args.runs, home=home
            ).run()
        if args.stack in ("all", "embedded"):
            figures += embedded(home, args.repeats)
    print(report(figures))
    if args.json:
        args.json.write_text(json.dumps([{**asdict(f), "ratio": f.ratio} for f in figures], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
