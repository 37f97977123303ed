"""Sensitive fields: canary secrets planted in a tool argument, a tool result and an exception message appear in
no event row, no page, no ``rubot show`` output and no log line."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

import pipeline
from pipeline.redact import REDACTED, redact
from pipeline.store.tables import EventRow
from pipeline.testing import reply
from pipeline.web import create_app
from tests import secret_workflows as sw

ROOT = Path(__file__).resolve().parent.parent


class Everything(logging.Handler):
    """Every log record of this process, formatted with its traceback, as a log file would hold it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def all_logs():
    handler = Everything()
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(previous)


def leaked(text: str) -> list[str]:
    return [canary for canary in sw.CANARIES if canary in text]


def test_canary_secrets_appear_in_no_event_page_cli_output_or_log(stack, model, all_logs):
    # Given a model that calls a tool with secret arguments, a tool that returns a secret and a step that fails
    # with a secret in its exception message
    model.add(*(reply(**turn) for turn in sw.script()))
    run = pipeline.run(sw.VaultWorkflow, input={"account": "acme", "vault_pin": sw.CANARY_PIN}, timeout=60)
    assert run.waiting_for_approval, run.error

    pages = create_app(stack.runtime, secret_key="k").test_client()
    # The approver sees the card's last four digits (the field allows it) and nothing else of the secrets
    approval_page = pages.get(f"/approvals/{run.id}").get_data(as_text=True)
    assert "••••4242" in approval_page and "unlock_vault" in approval_page
    assert leaked(approval_page) == []

    # When the call is approved and the run goes on to fail
    run.approve("keeper@example.com")
    run = pipeline.wait(run, timeout=60)
    assert run.status == "failed" and run.error["reason"] == "step_failed", run.error
    assert "refused pin [redacted]" in run.error["message"]

    # Then no event row holds a canary
    with stack.runtime.db.transaction() as s:
        rows = s.execute(select(EventRow.type, EventRow.data).where(EventRow.run_id == run.id)).all()
    assert len(rows) > 10
    assert leaked(json.dumps([list(r) for r in rows], default=str)) == []
    # nor the run's error, nor any page
    assert leaked(json.dumps(run.error)) == []
    for path in (f"/runs/{run.id}", "/runs", f"/approvals/{run.id}", "/approvals"):
        response = pages.get(path)
        assert response.status_code == 200, path
        assert leaked(response.get_data(as_text=True)) == [], path
    # nor `rubot show`, run as the real command
    shown = subprocess.run(
        [sys.executable, "-m", "rubot_app.scripts.cli", "show", run.id, "--full"],
        cwd=ROOT,
        env=stack.subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    assert "refused pin [redacted]" in shown.stdout
    assert leaked(shown.stdout + shown.stderr) == []
    # nor any log line of the worker that ran it (tracebacks included)
    assert any("refused pin" in line for line in all_logs.lines)
    assert leaked("\n".join(all_logs.lines)) == []

    # While the ledger, the source of truth, keeps what the run needs
    assert any(sw.CANARY_RESULT in json.dumps(e.result) for e in run.effects)


def test_redaction_follows_declared_fields_inside_json_text_and_lets_approvers_see_what_fields_allow():
    # Given values under declared sensitive names (registered when the schemas were made)
    value = {
        "passphrase": "x" * 12,
        "card_number": sw.CARD,
        "note": json.dumps({"recovery_code": "abc123", "ok": 1}),
        "nested": [{"vault_pin": "1234"}],
    }
    # Then everyone sees them redacted, JSON text included
    shown = redact(value)
    assert shown["passphrase"] == shown["card_number"] == shown["nested"][0]["vault_pin"] == REDACTED
    assert json.loads(shown["note"]) == {"recovery_code": REDACTED, "ok": 1}
    # And approvers see what each field allows: the last four digits of the card, nothing of the rest
    for_approvers = redact(value, for_approvers=True)
    assert for_approvers["card_number"] == "••••4242" and for_approvers["passphrase"] == REDACTED


def test_a_tool_exception_quoting_a_sensitive_argument_loses_the_value_before_anyone_reads_it():
    # Given a tool whose failure message quotes its sensitive argument
    tool = sw.UnlockVault()
    tool.call = lambda **kw: (_ for _ in ()).throw(ValueError(f"bad passphrase {kw['passphrase']} for {kw['account']}"))

    # When it is invoked / Then the exception keeps its type and message, without the value
    with pytest.raises(ValueError) as raised:
        tool.invoke({"account": "acme", "passphrase": sw.CANARY_ARG, "password": "p", "card_number": sw.CARD})
    assert str(raised.value) == "bad passphrase [redacted] for acme"
