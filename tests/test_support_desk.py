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
