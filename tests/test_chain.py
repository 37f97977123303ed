"""Tamper evidence: every event is chained to its run's previous one, and ``rubot verify`` names the first
broken link of a run whose trail was changed in SQL behind Rubot's back."""

from __future__ import annotations

import threading

import pytest
from click.testing import CliRunner
from sqlalchemy import text

import pipeline
from pipeline.engine import transitions
from pipeline.store import chain, migrate, queries
from pipeline.store.db import Database
from pipeline.store.tables import EventRow, utcnow
from rubot_app.scripts import cli
from tests import workflows
from tests.conftest import eventually


def rubot(*args: str):
    return CliRunner().invoke(cli.main, list(args))


def events_of(stack, run_id: str) -> list:
    with stack.runtime.db.transaction() as s:
        return list(
            s.execute(
                text("SELECT id, seq, type, hash FROM rubot_events WHERE run_id = :r ORDER BY seq"), {"r": run_id}
            )
        )


def sql(stack, statement: str, **params) -> None:
    with stack.runtime.db.transaction() as s:
        s.execute(text(statement), params)


def test_a_forged_or_deleted_event_is_reported_by_rubot_verify_and_an_intact_run_verifies(stack, sink):
    # Given runs completed on a real worker: a linear one, and a parallel one whose two members record at once
    # (on Postgres through the one-statement fast path, each chaining its events under the run's row lock)
    forged = pipeline.run(workflows.LinearWorkflow, input={"sink": str(sink), "n": 2}, timeout=60)
    deleted = pipeline.run(workflows.LinearWorkflow, input={"sink": str(sink), "n": 3}, timeout=60)
    intact = pipeline.run(workflows.ParallelWorkflow, input={"sink": str(sink)}, timeout=60)
    assert {forged.status, deleted.status, intact.status} == {"completed"}
    trail = events_of(stack, intact.id)
    assert [e.seq for e in trail] == list(range(1, len(trail) + 1))
    assert len({e.hash for e in trail}) == len(trail)
    for run in (forged, deleted, intact):
        result = rubot("verify", run.id)
        assert result.exit_code == 0, result.output
        assert "intact" in result.output
    assert pipeline.verify() == []

    # When one event's data is forged with a SQL UPDATE
    victim = next(e for e in events_of(stack, forged.id) if e.type == "step.completed")
    sql(stack, "UPDATE rubot_events SET data = :d WHERE id = :id", d='{"keys": ["forged"]}', id=victim.id)
    # and, in another run, one event is deleted
    gone = events_of(stack, deleted.id)[2]
    sql(stack, "DELETE FROM rubot_events WHERE id = :id", id=gone.id)

    # Then rubot verify names the first broken link of each (run, seq, expected vs found) and exits 1
    result = rubot("verify", forged.id)
    assert result.exit_code == 1
    assert f"run {forged.id}: event {victim.seq} changed: expected hash " in result.output
    assert f"found hash {victim.hash}" in result.output
    result = rubot("verify", deleted.id)
    assert result.exit_code == 1
    assert f"run {deleted.id}: event {gone.seq} missing: expected event {gone.seq}, found event {gone.seq + 1}" in (
        result.output
    )
    # and a check of every run names both and only those
    result = rubot("verify")
    assert result.exit_code == 1
    assert {b.run_id for b in pipeline.verify()} == {forged.id, deleted.id}
    # while the intact run still verifies
    assert rubot("verify", intact.id).exit_code == 0


def test_the_last_event_deleted_or_a_rewritten_hash_is_caught_by_the_head_on_the_run(stack, sink):
    # Given two completed runs
    truncated = pipeline.run(workflows.LinearWorkflow, input={"sink": str(sink), "n": 4}, timeout=60)
    rehashed = pipeline.run(workflows.LinearWorkflow, input={"sink": str(sink), "n": 5}, timeout=60)

    # When the last event of one is deleted (no later link would notice)
    last = events_of(stack, truncated.id)[-1]
    sql(stack, "DELETE FROM rubot_events WHERE id = :id", id=last.id)
    # and the last event of the other is forged with its own hash recomputed
    before, row = events_of(stack, rehashed.id)[-2:]
    with stack.runtime.db.transaction() as s:
        event = s.get(EventRow, row.id)
        previous = before.hash
        forged_data = {"forged": True}
        new_hash = chain.link(
            previous, row.seq, chain.content_digest(rehashed.id, event.type, event.step, forged_data, event.created_at)
        )
        s.execute(
            text("UPDATE rubot_events SET data = :d, hash = :h WHERE id = :id"),
            {"d": '{"forged": true}', "h": new_hash, "id": row.id},
        )

    # Then both are reported against the head kept on the run row
    broken = {b.run_id: b for b in pipeline.verify()}
    assert broken[truncated.id].problem == "missing" and broken[truncated.id].seq == last.seq
    assert broken[rehashed.id].problem == "head" and broken[rehashed.id].seq == row.seq


def test_the_upgrade_chains_the_events_written_before_it(tmp_path):
    # Given a database at the previous schema with a run and its events, written before events were chained
    db = Database(f"sqlite:///{tmp_path / 'old.sqlite3'}")
    migrate.upgrade(db, "0005")
    with db.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO rubot_runs (id, workflow, status, state, dispatch_seq, input_tokens, output_tokens, "
                "cache_write_tokens, cache_read_tokens, cost_micros, estimated_cost_micros, created_at, updated_at) "
                "VALUES ('run_old', 'W', 'completed', '{}', 1, 0, 0, 0, 0, 0, 0, :t, :t)"
            ),
            {"t": "2026-01-02 03:04:05.000006"},
        )
        for n, type_ in enumerate(("run.enqueued", "step.completed", "run.completed")):
            conn.execute(
                text(
                    "INSERT INTO rubot_events (run_id, type, step, data, created_at) "
                    "VALUES ('run_old', :ty, :st, :d, :t)"
                ),
                {"ty": type_, "st": "s" if n == 1 else None, "d": f'{{"n": {n}}}', "t": f"2026-01-02 03:04:0{n}.5"},
            )

    # When it is upgraded
    migrate.upgrade(db)

    # Then the old events form an intact chain, in the order they were written
    with db.transaction() as s:
        assert chain.verify(s, "run_old") is None
        assert [e.seq for e in s.query(EventRow).order_by(EventRow.id)] == [1, 2, 3]
        # and a change to one of them is caught like any other
        s.execute(text("UPDATE rubot_events SET step = 'x' WHERE seq = 2"))
    with db.transaction() as s:
        broken = chain.verify(s, "run_old")
    assert (broken.seq, broken.problem) == (2, "changed")
    db.dispose()


def _waiting_on_a_lock(db) -> int:
    with db.read() as conn:
        return conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
            )
        ).scalar_one()


@pytest.mark.parametrize("path", ["add_event", "record_step", "record_step_at_once"])
def test_an_append_that_waits_for_the_run_lock_chains_onto_what_the_holder_appended(production, sink, path):
    # Given a run whose row is locked by a transaction that appended an event and has not committed yet
    db = production.runtime.db
    run = pipeline.enqueue(workflows.LinearWorkflow, input={"sink": str(sink), "n": 1})  # no worker: it stays
    holder_appended, release = threading.Event(), threading.Event()

    def hold() -> None:
        with db.transaction() as s:
            queries.lock_run(s, run.id)
            queries.add_event(s, run.id, "test.held")
            s.flush()
            holder_appended.set()
            release.wait(30)

    def append() -> None:
        delta = {"set": {"extra": 1}, "unset": []}
        if path == "record_step_at_once":
            with db.autocommit() as conn:
                transitions.record_step_at_once(conn, run.id, "extra", "step", delta, task_id=None, started_at=utcnow())
        elif path == "record_step":
            with db.transaction() as s:
                transitions.record_step(
                    s, run.id, "extra", "step", delta, task_id=None, claimed=False, started_at=utcnow()
                )
        else:
            with db.transaction() as s:
                queries.add_event(s, run.id, "test.waited")

    holder = threading.Thread(target=hold)
    holder.start()
    assert holder_appended.wait(30)
    # When another append for the same run starts meanwhile (and waits for the run's row lock)
    appender = threading.Thread(target=append)
    appender.start()
    eventually(lambda: _waiting_on_a_lock(db) >= 1, what="the second append to wait for the run lock")
    release.set()
    holder.join(30)
    appender.join(30)

    # Then it chained onto the holder's event: seq goes on without a gap or a duplicate and the chain verifies
    trail = events_of(production, run.id)
    assert [e.seq for e in trail] == list(range(1, len(trail) + 1))
    assert trail[-1].type == ("test.waited" if path == "add_event" else "step.completed")
    assert pipeline.verify(run) == []
