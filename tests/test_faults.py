"""Fault tests on real processes: SIGKILLed workers, a poison step, a step slower than the visibility timeout.

Redis + Postgres, ``celery worker`` subprocesses, effects counted at an external sink (not the ledger), and a
minimum number of completed runs asserted in every test so nothing passes trivially. ``pytest --long`` runs the
kill test over 200 runs instead of 50.
"""

from __future__ import annotations

import random
import time
from collections import Counter

import pytest

import pipeline
from pipeline.engine import recovery
from tests import fault_workflows as fw
from tests.conftest import eventually, sink_lines

FAST = {"RUBOT_LEASE_SECONDS": "2", "RUBOT_VISIBILITY_TIMEOUT": "4", "RUBOT_MAX_RECOVERIES": "25"}


@pytest.fixture
def faulty(production, sink, monkeypatch):
    """The production stack with short leases, for workers and for the sweeper this test process runs."""
    monkeypatch.setenv("RUBOT_TEST_SINK", str(sink))
    production.env.update({**FAST, "RUBOT_TEST_SINK": str(sink)})
    from dataclasses import replace

    production.runtime.settings = replace(production.runtime.settings, lease_seconds=2.0, max_recoveries=25)
    return production


def sweep_until(stack, done, *, timeout: float, what: str):
    """Act as beat: sweep every half lease until ``done()``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = done()
        if value:
            return value
        recovery.sweep(stack.runtime)
        time.sleep(stack.runtime.settings.lease_seconds / 2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_sigkill_at_random_moments_loses_no_run_and_repeats_no_effect(faulty, sink, request):
    runs_wanted = 200 if request.config.getoption("--long") else 50
    rng = random.Random(1234)
    worker = faulty.start_worker_process(concurrency=2)
    ids = [pipeline.enqueue(fw.FaultWorkflow, input={"amount": n}).id for n in range(runs_wanted)]
    kills = 0

    def finished() -> bool:
        statuses = Counter(r.status for r in pipeline.list_runs(workflow="FaultWorkflow", limit=runs_wanted))
        return statuses["completed"] + statuses["failed"] + statuses["dead_letter"] == runs_wanted

    try:
        deadline = time.monotonic() + 240
        while not finished() and time.monotonic() < deadline:
            time.sleep(rng.uniform(0.2, 1.2))
            worker.kill()
            kills += 1
            worker = faulty.start_worker_process(concurrency=2)
            recovery.sweep(faulty.runtime)
        sweep_until(faulty, finished, timeout=120, what="all runs to finish")
    finally:
        worker.stop()

    runs = [pipeline.get_run(i) for i in ids]
    statuses = Counter(r.status for r in runs)
    lines = [line.split() for line in sink_lines(sink)]
    effects = Counter((run_id, op) for _key, run_id, op in {tuple(line) for line in lines})
    keys_per_op = Counter((run_id, op) for key, run_id, op in {tuple(line) for line in lines})
    attempts = len(lines)
    recoveries = sum(r.recoveries for r in runs)
    print(
        f"\nfault figures: runs={runs_wanted} kills={kills} recoveries={recoveries} "
        f"completed={statuses['completed']} "
        f"effects={sum(effects.values())} attempts={attempts} duplicate_effects="
        f"{sum(1 for c in keys_per_op.values() if c > 1)} statuses={dict(statuses)}"
    )
    assert kills >= 3
    assert statuses == {"completed": runs_wanted}  # 0 lost runs
    # every run charged and notified exactly once downstream: one idempotency key per operation
    assert set(effects) == {(r.id, op) for r in runs for op in ("charge", "notify")}
    assert all(count == 1 for count in keys_per_op.values())
    assert all(r.output == {"charged": r.input["amount"] * 2} for r in runs)
    # and every run's event trail, written by workers killed at random moments, is one intact hash chain
    assert pipeline.verify() == []


@pytest.mark.timeout(1200)
def test_sigkills_during_parallel_side_effects_lose_no_run_repeat_no_effect_and_leave_every_doubt_to_a_person(
    faulty, sink, request
):
    """Runs of two side effects in a parallel group (one idempotent, one not) with workers SIGKILLed at random
    (40 runs; ``pytest --long``: 200).

    An interrupted non-idempotent reservation is never repeated: its run waits in ``needs_reconciliation`` with the
    operation named, and a person (this test, looking at the downstream sink) reconciles it — happened, or not.
    """
    runs_wanted = 200 if request.config.getoption("--long") else 40
    rng = random.Random(4321)
    worker = faulty.start_worker_process(concurrency=2)
    ids = [pipeline.enqueue(fw.ParallelFaultWorkflow, input={"amount": n}).id for n in range(runs_wanted)]
    kills = reconciled = 0
    reconciled_ops: list[str] = []

    def reconcile_what_waits() -> int:
        settled = 0
        for run in pipeline.list_runs(status="needs_reconciliation", workflow="ParallelFaultWorkflow", limit=500):
            op_key = run.error["op_key"]  # every doubt names its operation, and reconcile can reach it
            happened = any(line.split()[1:] == [run.id, op_key] for line in sink_lines(sink))
            run.reconcile(
                by="ops@example.com",
                happened=happened,
                result={"reserved": run.input["amount"]},
                comment="checked the stock system",
            )
            reconciled_ops.append(op_key)
            settled += 1
        return settled

    def finished() -> bool:
        statuses = Counter(r.status for r in pipeline.list_runs(workflow="ParallelFaultWorkflow", limit=500))
        return statuses["completed"] + statuses["failed"] + statuses["dead_letter"] == runs_wanted

    try:
        deadline = time.monotonic() + 300
        while not finished() and time.monotonic() < deadline:
            time.sleep(rng.uniform(0.3, 1.5))
            worker.kill()
            kills += 1
            worker = faulty.start_worker_process(concurrency=2)
            recovery.sweep(faulty.runtime)
            reconciled += reconcile_what_waits()

        def settled() -> bool:
            nonlocal reconciled
            reconciled += reconcile_what_waits()
            return finished()

        sweep_until(faulty, settled, timeout=180, what="all runs to finish")
    finally:
        worker.stop()

    runs = [pipeline.get_run(i) for i in ids]
    statuses = Counter(r.status for r in runs)
    lines = [tuple(line.split()) for line in sink_lines(sink)]
    per_op = Counter((run_id, op) for _key, run_id, op in lines)
    charge_keys = Counter((run_id, op) for key, run_id, op in set(lines) if op != "reserve")
    print(
        f"\nparallel fault figures: runs={runs_wanted} kills={kills} recoveries={sum(r.recoveries for r in runs)} "
        f"reconciled={reconciled} statuses={dict(statuses)} attempts={len(lines)} "
        f"reservations_twice={sum(1 for (_, op), c in per_op.items() if op == 'reserve' and c > 1)}"
    )
    assert kills >= 5
    assert statuses == {"completed": runs_wanted}  # 0 lost, 0 failed by the framework, every doubt settled
    assert set(reconciled_ops) <= {"reserve"}  # only the non-idempotent effect ever needed a person
    # The non-idempotent reservation happened exactly once per run: never repeated, never lost
    assert sorted(run_id for (run_id, op) in per_op if op == "reserve") == sorted(ids)
    assert all(count == 1 for (run_id, op), count in per_op.items() if op == "reserve")
    # The idempotent charges: one idempotency key per operation at the downstream system
    assert set(charge_keys) == {(r.id, op) for r in runs for op in ("charge", "notify")}
    assert all(count == 1 for count in charge_keys.values())
    assert all(r.output == {"charged": r.input["amount"] * 2} for r in runs)
    # and the trails of parallel members recorded by workers killed at random are intact hash chains
    assert pipeline.verify() == []


def test_a_step_that_kills_its_worker_every_time_goes_to_dead_letter_and_others_finish(faulty, sink):
    faulty.env["RUBOT_MAX_RECOVERIES"] = "2"
    from dataclasses import replace

    faulty.runtime.settings = replace(faulty.runtime.settings, max_recoveries=2)
    worker = faulty.start_worker_process(concurrency=2)
    try:
        poison = pipeline.enqueue(fw.PoisonWorkflow)
        healthy = [pipeline.enqueue(fw.FaultWorkflow, input={"amount": n}) for n in range(5)]
        sweep_until(
            faulty,
            lambda: (
                pipeline.get_run(poison.id).status == "dead_letter"
                and all(pipeline.get_run(r.id).status == "completed" for r in healthy)
            ),
            timeout=120,
            what="poison set aside, healthy runs done",
        )
    finally:
        worker.stop()

    poison = pipeline.get_run(poison.id)
    assert poison.error["reason"] == "dead_letter"
    assert poison.error["recoveries"] == 3
    assert [e.type for e in poison.events].count("run.recovered") == 3

    # An operator may retry it (after a fix); this one is still poison and comes back to the dead letter state.
    worker = faulty.start_worker_process(concurrency=2)
    try:
        assert poison.retry(by="ops@example.com").status == "running"
        sweep_until(
            faulty,
            lambda: pipeline.get_run(poison.id).status == "dead_letter",
            timeout=60,
            what="poison set aside again",
        )
    finally:
        worker.stop()
    assert [e.type for e in pipeline.get_run(poison.id).events].count("run.recovered") == 6
    assert all(pipeline.get_run(r.id).output == {"charged": r.input["amount"] * 2} for r in healthy)


def test_a_step_slower_than_the_visibility_timeout_never_runs_twice_at_once(faulty, sink):
    # Redis hands the unacknowledged message to another worker after 4 s; the step takes 7 s.
    worker = faulty.start_worker_process(concurrency=2)
    try:
        run = pipeline.enqueue(fw.SlowWorkflow, input={"seconds": 7})
        run = pipeline.wait(run, timeout=60)
        eventually(
            lambda: "step.held_elsewhere" in [e.type for e in run.refresh().events],
            timeout=20,
            what="the redelivered copy to stand back",
        )
    finally:
        worker.stop()

    assert run.status == "completed"
    ops = [line.split()[2] for line in sink_lines(sink)]
    assert ops == ["slow-start", "slow-end"]  # one execution, never overlapping


def test_two_hundred_launches_by_ten_users_never_exceed_the_caps_and_all_complete(production, sink, monkeypatch):
    import threading
    from dataclasses import replace

    from sqlalchemy import func, select

    from pipeline.store.tables import RunRow

    # Given tight caps (2 per user, 5 overall) for the workers and for this process
    monkeypatch.setenv("RUBOT_TEST_SINK", str(sink))
    production.env.update({"RUBOT_MAX_RUNNING": "5", "RUBOT_MAX_RUNNING_PER_USER": "2", "RUBOT_TEST_SINK": str(sink)})
    production.runtime.settings = replace(production.runtime.settings, max_running=5, max_running_per_user=2)
    samples: list[tuple[int, int]] = []
    stop = threading.Event()

    def sample() -> None:  # what SQL says is running, as often as it can be asked
        while not stop.is_set():
            with production.runtime.db.transaction() as s:
                rows = s.execute(
                    select(RunRow.user_id, func.count()).where(RunRow.status == "running").group_by(RunRow.user_id)
                ).all()
            samples.append((sum(c for _, c in rows), max((c for _, c in rows), default=0)))

    worker = production.start_worker_process(concurrency=4)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        # When 10 users launch 200 runs at once
        ids = [
            pipeline.enqueue(fw.SlowWorkflow, input={"seconds": 0.05}, context={"user": {"id": f"user-{n % 10}"}}).id
            for n in range(200)
        ]
        sweep_until(
            production,
            lambda: (
                all(pipeline.get_run(i).status == "completed" for i in ids[-20:])
                and all(pipeline.get_run(i).status == "completed" for i in ids)
            ),
            timeout=180,
            what="all 200 runs to complete",
        )
    finally:
        stop.set()
        sampler.join(5)
        worker.stop()

    # Then every run completed, runs over a cap waited in queued, and the caps held at every sample
    total_max, per_user_max = max(t for t, _ in samples), max(u for _, u in samples)
    waited = sum(1 for i in ids if "run.waiting_for_slot" in [e.type for e in pipeline.get_run(i).events])
    print(
        f"\ncaps figures: runs=200 samples={len(samples)} max_running={total_max} max_per_user={per_user_max} "
        f"waited_for_slot={waited}"
    )
    assert len(samples) > 50
    assert total_max <= 5 and per_user_max <= 2
    assert total_max == 5  # the cap was reached, so it was tested
    assert waited > 0


def _assert_all_effects_once(runs, sink) -> None:
    lines = {tuple(line.split()) for line in sink_lines(sink)}
    keys_per_op = Counter((run_id, op) for _key, run_id, op in lines)
    assert set(keys_per_op) == {(r.id, op) for r in runs for op in ("charge", "notify")}
    assert all(count == 1 for count in keys_per_op.values())


def test_a_redis_server_killed_and_restarted_mid_run_loses_no_run(tmp_path, sink, monkeypatch):
    import shutil
    import subprocess
    import uuid
    from dataclasses import replace

    from pipeline import runtime as rubot_runtime
    from tests import stacks

    # Given a throwaway Redis (it keeps nothing on disk: a restart loses every queued message)
    port = stacks.free_port()
    server = shutil.which("redis-server")
    assert server, "redis-server is needed"
    command = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]

    def start_redis() -> subprocess.Popen:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        eventually(lambda: stacks.port_open("127.0.0.1", port), timeout=20, what="redis-server up")
        return process

    redis_process = start_redis()
    database = f"rubot_test_{uuid.uuid4().hex[:8]}"
    stack = stacks.production_stack(tmp_path, database=database, redis_url=f"redis://127.0.0.1:{port}/0")
    stack.migrate()
    monkeypatch.setenv("RUBOT_TEST_SINK", str(sink))
    stack.env.update({**FAST, "RUBOT_TEST_SINK": str(sink)})
    stack.runtime.settings = replace(stack.runtime.settings, lease_seconds=2.0, max_recoveries=25)
    previous = rubot_runtime.install(stack.runtime)
    worker = stack.start_worker_process(concurrency=2)
    try:
        runs = [pipeline.enqueue(fw.FaultWorkflow, input={"amount": n}) for n in range(20)]
        eventually(lambda: len(sink_lines(sink)) >= 5, timeout=60, what="runs under way")

        # When Redis is killed mid-run and comes back empty a moment later
        redis_process.kill()
        redis_process.wait(10)
        redis_process = start_redis()

        # Then the sweeper re-dispatches what was lost and every run finishes, each effect once
        sweep_until(
            stack,
            lambda: all(pipeline.get_run(r.id).status == "completed" for r in runs),
            timeout=180,
            what="all runs after the Redis restart",
        )
        final = [pipeline.get_run(r.id) for r in runs]
        print(f"\nredis restart figures: runs=20 recoveries={sum(r.recoveries for r in final)}")
        _assert_all_effects_once(final, sink)
    finally:
        worker.stop()
        redis_process.kill()
        rubot_runtime.install(previous)
        stack.runtime.db.dispose()
        stacks.drop_postgres_database(database)


def test_postgres_connections_terminated_mid_run_lose_no_run_and_repeat_no_effect(faulty, sink):
    from sqlalchemy import create_engine, text

    from pipeline.store.db import Database

    worker = faulty.start_worker_process(concurrency=2)
    database = Database(faulty.settings.database_url)
    admin = create_engine(stacks_admin_url(), isolation_level="AUTOCOMMIT")
    terminated = 0
    try:
        runs = [pipeline.enqueue(fw.FaultWorkflow, input={"amount": n}) for n in range(20)]
        for _ in range(4):  # When every connection to the database is cut, four times during the runs
            eventually(lambda: len(sink_lines(sink)) >= 2, timeout=60, what="runs under way")
            time.sleep(random.uniform(0.2, 0.6))
            with admin.connect() as conn:
                terminated += conn.execute(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = :db AND pid <> pg_backend_pid()"
                    ),
                    {"db": database.engine.url.database},
                ).scalar_one()
        # Then the workers reconnect and retry, and every run completes with each effect once
        sweep_until(
            faulty,
            lambda: all(pipeline.get_run(r.id).status == "completed" for r in runs),
            timeout=180,
            what="all runs after the terminations",
        )
    finally:
        worker.stop()
        admin.dispose()
        database.dispose()
    print(f"\npostgres figures: runs=20 connections_terminated={terminated}")
    assert terminated >= 4
    _assert_all_effects_once(runs, sink)


def stacks_admin_url() -> str:
    from tests.stacks import POSTGRES_ADMIN_URL

    return POSTGRES_ADMIN_URL


def test_recovery_after_a_worker_sigkill_takes_at_most_two_lease_intervals(production, sink, monkeypatch):
    from dataclasses import replace
    from datetime import UTC

    from pipeline.store.tables import utcnow

    lease = 3.0
    monkeypatch.setenv("RUBOT_TEST_SINK", str(sink))
    production.env.update(
        {"RUBOT_LEASE_SECONDS": str(lease), "RUBOT_VISIBILITY_TIMEOUT": "3600", "RUBOT_TEST_SINK": str(sink)}
    )
    production.runtime.settings = replace(production.runtime.settings, lease_seconds=lease)
    worker = production.start_worker_process(concurrency=1)
    try:
        run = pipeline.enqueue(fw.SlowWorkflow, input={"seconds": 4})
        eventually(lambda: sink_lines(sink), what="the slow step to start")
        # When the worker is SIGKILLed mid-step (Redis would only redeliver after an hour)
        worker.kill()
        killed_at = utcnow()
        worker = production.start_worker_process(concurrency=1)
        # Then the sweeper (acting as beat, every half lease) takes the run over: an expired lease (the step had
        # been claimed) or, for a step killed before its lazy claim, a stall with nothing claimed
        recovered = sweep_until(
            production,
            lambda: next(
                (e for e in pipeline.get_run(run.id).events if e.type in ("run.recovered", "run.redispatched")), None
            ),
            timeout=30,
            what="the run to be recovered",
        )
        run = pipeline.wait(run, timeout=60)
    finally:
        worker.stop()

    at = recovered.created_at if recovered.created_at.tzinfo else recovered.created_at.replace(tzinfo=UTC)
    seconds = (at - killed_at).total_seconds()
    print(f"\nrecovery figures: lease={lease}s recovered_after={seconds:.2f}s bound={2 * lease}s")
    assert run.status == "completed", (run.error, [(e.type, e.step, e.data) for e in run.events])
    assert seconds <= 2 * lease
