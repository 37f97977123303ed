"""Persistence: Alembic migrations, the ledger's unique key, JSON-only settings, secret redaction."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect
from sqlalchemy.exc import IntegrityError

import pipeline
from pipeline.errors import DatabaseNotMigratedError
from pipeline.redact import redact
from pipeline.store import migrate, queries
from pipeline.store.db import Database
from rubot_app.config.celery import build
from rubot_app.config.settings import load
from tests import workflows


def test_an_unmigrated_database_is_refused_with_the_command_to_run(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'fresh.sqlite3'}")
    with pytest.raises(DatabaseNotMigratedError, match="run `rubot migrate`"):
        db.check_migrated()

    assert migrate.upgrade(db) == migrate.head_revision()
    db.check_migrated()
    assert {"rubot_runs", "rubot_events", "rubot_approvals", "rubot_effects", "rubot_alembic_version"} <= set(
        inspect(db.engine).get_table_names()
    )


def test_migrating_twice_is_a_no_op(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'twice.sqlite3'}")
    first = migrate.upgrade(db)
    assert migrate.upgrade(db) == first


def test_the_ledger_refuses_a_second_row_for_the_same_operation(stack, sink):
    run = pipeline.run(workflows.LinearWorkflow, input={"sink": str(sink), "n": 1}, timeout=60)

    with pytest.raises(IntegrityError), stack.runtime.db.transaction() as s:
        queries.add_effect(s, run.id, "first", "tool", {"set": {}}, None)


def test_events_are_appended_in_order_and_never_hold_secrets(stack, sink):
    run = pipeline.enqueue(
        workflows.LinearWorkflow,
        input={"sink": str(sink), "n": 1},
        context={"user": "u1", "api_key": "sk-ant-abcdefghijklmnop"},
    )
    with stack.runtime.db.transaction() as s:
        queries.add_event(
            s, run.id, "test.secret", None, authorization="Bearer abcdefghijkl", note="sk-ant-zzzzzzzzzz1"
        )
    run = pipeline.wait(run, timeout=60)

    secret = next(e for e in run.events if e.type == "test.secret")
    assert secret.data == {"authorization": "[redacted]", "note": "[redacted]"}
    ids = [e.id for e in run.events]
    assert ids == sorted(ids)


def test_redaction_keeps_token_counts_but_hides_secrets():
    data = {"usage": {"input_tokens": 10}, "headers": {"Authorization": "x", "x-api-key": "y"}, "password": "p"}
    assert redact(data) == {
        "usage": {"input_tokens": 10},
        "headers": {"Authorization": "[redacted]", "x-api-key": "[redacted]"},
        "password": "[redacted]",
    }


def test_celery_is_configured_for_json_only_late_acks_and_prefetch_one(tmp_path):
    for env in (
        {"RUBOT_HOME": str(tmp_path)},
        {"RUBOT_HOME": str(tmp_path), "RUBOT_BROKER_URL": "redis://127.0.0.1:6379/0"},
    ):
        conf = build(load(env))
        assert conf["accept_content"] == ["json"] and conf["result_accept_content"] == ["json"]
        assert conf["task_serializer"] == conf["result_serializer"] == "json"
        assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"]
        assert conf["worker_prefetch_multiplier"] == 1


def test_a_pickled_message_is_refused_by_the_worker(stack, sink):
    from celery.worker import state as worker_state

    from tests.conftest import eventually

    run = pipeline.run(workflows.ApprovalWorkflow, input={"sink": str(sink)}, timeout=60)

    # A pickle-format message for one of the run's steps reaches the worker...
    stack.app.send_task("rubot.step", args=[run.id, "after"], queue=stack.settings.queue, serializer="pickle")
    eventually(lambda: stack.queue_length() == 0 and not worker_state.active_requests, what="message consumed")
    marker = pipeline.run(workflows.LinearWorkflow, input={"sink": str(sink), "n": 1}, timeout=60)

    # ...and is refused before any Rubot code sees it: an accepted one would have left a step.not_running event.
    assert marker.completed  # the worker kept going
    assert [e.type for e in pipeline.get_run(run.id).events if e.step == "after"] == []
