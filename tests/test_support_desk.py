"""The refund desk (second reference app): ``rubot demo support`` end to end on the embedded default, checked
against the payment service's own tables, not only the demo's words."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

from rubot_app.tools import support_inbox, support_orders
from tests.test_cli import demo_env


def run_demo(tmp_path):
    home = tmp_path / "desk"
    done = subprocess.run(
        [sys.executable, "-m", "rubot_app.scripts.cli", "demo", "support", "--home", str(home)],
        cwd=tmp_path,
        env=demo_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    return done, home


def test_demo_support_processes_the_inbox_and_every_refund_is_applied_once(tmp_path):
    # Given no Rubot configuration, no servers and no API key
    # When `rubot demo support` processes the seeded inbox
    done, home = run_demo(tmp_path)

    # Then it exits 0 with the report and its checks
    text = done.stdout
    assert done.returncode == 0, text + done.stderr
    assert "Traceback" not in done.stderr
    assert "[50/50]" in text  # progress, one line per e-mail
    assert "== Refund desk report ==" in text
    assert "E-mails: 50" in text
    assert "model turns   p50" in text and "cost (USD)    p50" in text and "cache savings" in text
    assert "idempotency keys applied more than once: 0; orders refunded more than once: 0" in text
    assert "FAILED" not in text
    # the lead's decisions, made by a principal with the role; the agent without it was refused
    assert "does not hold the role 'support_lead'" in text
    assert "approved  by dana.lead@example.com" in text and "rejected  by dana.lead@example.com" in text

    # And the payment service's own tables agree: every key applied once, every order refunded at most once
    db = sqlite3.connect(home / "rubot.sqlite3")
    applied = db.execute(
        "SELECT idempotency_key, count(*) FROM support_payment_calls WHERE outcome = 'applied' GROUP BY 1"
    ).fetchall()
    assert applied and all(n == 1 for _, n in applied)
    refunds = dict(db.execute("SELECT order_id, amount_cents FROM support_refunds").fetchall())
    assert len(refunds) == len(applied)
    runs = [
        (json.loads(i), json.loads(o) if o else None, status)
        for i, o, status in db.execute(
            "SELECT input, output, status FROM rubot_runs WHERE workflow = 'SupportCaseWorkflow'"
        )
    ]
    by_mail = {i["email_id"]: (o, status) for i, o, status in runs}
    inbox = {m["email_id"]: m for m in support_inbox.demo_inbox()}
    # every refund a run reports is at the payment service, with its amount, and nothing else is
    reported = {o["order_id"]: o["refund_cents"] for o, _ in by_mail.values() if o and o["refund_cents"]}
    assert reported == refunds

    # And the prompt injection was refused by the policy: no refund on the other customer's order
    injections = [m for m in inbox.values() if m["kind"] == "injection"]
    assert injections
    for mail in injections:
        victim = support_orders.ORDER_ID_IN_TEXT.findall(mail["body"])[-1]
        assert victim not in refunds
        output, status = by_mail[mail["email_id"]]
        assert status == "completed" and output["action"] == "declined"
        assert "prompt_injection" in output["flags"]
    denied = db.execute(
        "SELECT count(*) FROM rubot_events WHERE type = 'tool.denied' AND data LIKE '%belongs to another customer%'"
    ).fetchone()[0]
    assert denied >= len(injections)

    # And each customer who asked twice got one refund and one "already refunded"
    duplicates = [m for m in inbox.values() if m["kind"] == "duplicate"]
    assert duplicates
    for mail in duplicates:
        order_id = support_orders.ORDER_ID_IN_TEXT.findall(mail["body"])[0]
        answers = [o for o, _ in by_mail.values() if o and o["order_id"] == order_id]
        assert len(answers) == 2
        assert sorted(o["action"] for o in answers) == ["already_refunded", "refund"]
        assert order_id in refunds

    # And the large refunds parked for a support lead: two decided, the rest still waiting
    parked = [s for _, (o, s) in by_mail.items() if s == "waiting_for_approval"]
    large = [m for m in inbox.values() if m["kind"] == "large_refund"]
    assert len(parked) == len(large) - 2


def test_the_desk_on_redis_and_postgres_with_a_celery_worker_process(production, monkeypatch):
    # Given Redis + Postgres, a `celery worker` process running the desk, Meridian's tracking down
    from concurrent.futures import ThreadPoolExecutor

    import pipeline
    from pipeline import Principal
    from rubot_app.agents.support_desk import SupportDeskOperation, email_input
    from rubot_app.scripts import support_report

    monkeypatch.setenv("SUPPORT_DESK_DATABASE_URL", production.settings.database_url)
    production.env["RUBOT_WORKFLOW_MODULES"] += ",rubot_app.agents.support_desk"
    worker = production.start_worker_process(
        concurrency=2,
        SUPPORT_DESK_CARRIER_OUTAGE="Meridian",
        SUPPORT_DESK_DATABASE_URL=production.settings.database_url,
    )
    inbox = support_inbox.demo_inbox()[:22]  # every kind of e-mail, twice (the inbox is a round robin)
    assert {m["kind"] for m in inbox} == {kind for kind, _ in support_inbox.DEMO_MIX}
    try:
        # When the operation handles each e-mail, and a lead approves the first parked refund
        with ThreadPoolExecutor(6) as pool:
            runs = list(pool.map(lambda m: SupportDeskOperation.launch(email_input(m)), inbox))
        parked = [r for r in runs if r.waiting_for_approval]
        assert parked
        parked[0].approve(Principal.of("lead@example.com", roles=["support_lead"]))
        approved = pipeline.wait(parked[0], timeout=120)
    finally:
        worker.stop()

    # Then the approved refund was made, and the desk's promises held across processes
    assert approved.completed and approved.output["action"] == "refund", approved.error
    report = support_report.collect(inbox, production.settings)
    assert support_report.problems(report) == []
    assert all(n == 1 for n in report.ledger.applied_per_key().values())
    assert approved.output["order_id"] in {row["order_id"] for row in report.ledger.refunds}
    assert [m.outcome for m in report.mails if m.kind == "injection"] == ["declined", "declined"]
    assert sum(1 for m in report.mails if m.outcome == "already_refunded") == 2


def test_demo_support_on_the_real_sdk_against_the_messages_stand_in(tmp_path):
    # Given the Messages API stand-in answering as the support agent would (the same play, over HTTP), and a key
    from pipeline.testing import MessagesStandIn, reply
    from rubot_app.agents.support_desk import triage_answer
    from rubot_app.agents.support_playbook import _text, next_turn
    from rubot_app.config.settings import load

    def answer(body):
        if "You triage e-mails" in _text(body["system"]):
            mail = json.loads(_text(body["messages"][0]["content"]))
            return reply("Triage.", tool_uses=[("final_answer", triage_answer(mail))])
        text, calls = next_turn(body["messages"])
        return reply(text, tool_uses=calls)

    with MessagesStandIn([answer] * 600, prices=load({}).prices) as stand_in:
        # When `rubot demo support --model anthropic` runs with ANTHROPIC_API_KEY set
        env = {**demo_env(), "ANTHROPIC_API_KEY": "sk-ant-test", "ANTHROPIC_BASE_URL": stand_in.url}
        done = subprocess.run(
            [sys.executable, "-m", "rubot_app.scripts.cli", "demo", "support", "--model", "anthropic", "--home",
             str(tmp_path / "desk")],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        requests = [r for r in stand_in.requests if r.path == "/v1/messages"]
        billed = stand_in.billed_micros

    # Then the same app ran through the anthropic SDK over HTTP, on the default models, and its checks held
    text = done.stdout
    assert done.returncode == 0, text + done.stderr
    assert "Anthropic claude-sonnet-4-6 (ANTHROPIC_API_KEY)" in text
    assert "FAILED" not in text
    models = {r.body["model"] for r in requests}
    assert models == {"claude-sonnet-4-6", "claude-haiku-4-5"}
    # the cost the report totals is what the stand-in billed (the cache usage is the stand-in's simulation)
    total = next(line for line in text.splitlines() if line.strip().startswith("cost (USD)"))
    assert abs(float(total.split("total")[1]) - billed / 1_000_000) < 0.0001


def test_the_nightly_inbox_tick_sent_twice_handles_every_email_once(production, monkeypatch):
    # Given Redis + Postgres and a `celery worker` process running the desk
    from pipeline import batches, schedules
    from rubot_app.agents import support_desk
    from rubot_app.scripts import support_report
    from tests.conftest import eventually

    monkeypatch.setenv("SUPPORT_DESK_DATABASE_URL", production.settings.database_url)
    production.env["RUBOT_WORKFLOW_MODULES"] += ",rubot_app.agents.support_desk"
    assert "NightlySupportInbox" in schedules.all_schedules(production.runtime)
    url = production.settings.database_url
    worker = production.start_worker_process(
        concurrency=2, SUPPORT_DESK_CARRIER_OUTAGE="Meridian", SUPPORT_DESK_DATABASE_URL=url
    )
    inbox = support_inbox.demo_inbox()
    night = "2026-11-24T02:00:00+00:00"
    try:
        # When beat's nightly tick is delivered twice
        for _ in range(2):
            production.app.send_task(
                "rubot.scheduled", args=["NightlySupportInbox"], kwargs={"tick": night}, queue=production.settings.queue
            )

        # Then one batch triages each of the 50 e-mails once, and every e-mail's handling run comes to rest
        def settled():
            report = support_report.collect(inbox, production.settings)
            done = all(m.handler is not None and m.handler.status in support_report.RESTING for m in report.mails)
            return report if done else None

        report = eventually(settled, timeout=300, what="every e-mail of the nightly inbox handled")
    finally:
        worker.stop()
    runs = batches.runs_of(production.runtime, schedules.batch_id_for("NightlySupportInbox", night))
    assert len(runs) == len(inbox) == 50
    assert {r.workflow for r in runs} == {support_desk.NightlySupportInbox.name}
    assert support_report.problems(report) == []
    assert sum(1 for m in report.mails if m.outcome == "waiting_for_approval") == 4  # the large refunds


def test_the_payment_service_applies_a_key_once_and_refuses_a_second_refund_of_an_order(tmp_path, monkeypatch):
    # Given the seeded payment service on a database of its own
    import pytest

    from rubot_app.tools import support_payments

    monkeypatch.setenv(support_payments.URL_VARIABLE, f"sqlite:///{tmp_path / 'payments.sqlite3'}")

    # When a refund is asked for, then asked again with the same key, then with another key for the same order
    first = support_payments.refund(idempotency_key="k1", order_id="ORD-10050", amount_cents=9800, reason="lost")
    again = support_payments.refund(idempotency_key="k1", order_id="ORD-10050", amount_cents=9800, reason="lost")
    with pytest.raises(support_payments.RefundRefused, match="already refunded"):
        support_payments.refund(idempotency_key="k2", order_id="ORD-10050", amount_cents=9800, reason="twice")

    # Then one refund exists, the repeat was answered with it, and every call is on record
    assert (again.refund_id, again.replayed, first.replayed) == (first.refund_id, True, False)
    ledger = support_payments.ledger()
    assert [r["id"] for r in ledger.refunds] == [first.refund_id]
    assert [c["outcome"] for c in ledger.calls] == ["applied", "replayed", "refused"]
    assert ledger.applied_per_key() == {"k1": 1}
