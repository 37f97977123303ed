"""The ``web`` process: admin pages, the approval resume endpoint and the JSON API, on every stack.

Each test starts a real ``ApprovalWorkflow`` run through the stack's worker, waits until it parks on its
``manager`` approval, and drives the Flask app as a browser behind the trusted proxy (as a signed-in manager) or
as an API client with a personal token would.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

import pipeline
from pipeline.runs import Run
from pipeline.store.db import Database
from pipeline.web import create_app
from tests import webkit, workflows
from tests.conftest import ON_CI, eventually, sink_lines
from tests.webkit import CSRF, proxy_authenticator, signed_in

ACTIONS = ("approve", "reject", "request-changes", "cancel")


@pytest.fixture
def app(stack) -> Flask:
    return create_app(stack.runtime, secret_key=webkit.SECRET_KEY, authenticator=proxy_authenticator())


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A browser behind the trusted proxy, signed in as a manager."""
    return signed_in(app.test_client(), "manager@example.com", roles=("manager",))


@pytest.fixture
def token(stack) -> str:
    """A personal API token of bot@example.com, a manager and an admin."""
    return webkit.api_token(stack, "bot@example.com", "manager", "rubot_admin")[1]


def waiting_run(sink: Path) -> Run:
    """Given a run of ApprovalWorkflow parked on its manager approval."""
    run = pipeline.wait(pipeline.enqueue(workflows.ApprovalWorkflow, {"sink": str(sink)}), timeout=30)
    assert run.waiting_for_approval, run.error
    return run


def csrf_token(client: FlaskClient, run_id: str) -> str:
    return webkit.csrf_token(client, f"/approvals/{run_id}")


def decide(client: FlaskClient, run: Run, action: str, *, token: str | None = None, **fields: str) -> Any:
    """POST the approval form as the approver's browser would (``token`` from a page loaded earlier)."""
    form = {"csrf_token": token or csrf_token(client, run.id), **fields}
    if run.pending_approval is not None:
        form.setdefault("approval_id", run.pending_approval.id)
    return client.post(f"/runs/{run.id}/{action}", data=form)


def assert_still_waiting(run: Run, sink: Path) -> None:
    run = pipeline.get_run(run.id)
    assert run.status == "waiting_for_approval"
    assert run.pending_approval is not None
    assert [a.status for a in run.approvals] == ["pending"]
    assert not [line for line in sink_lines(sink) if line.endswith(" after")]


def api(client: FlaskClient, method: str, path: str, *, token: str | None, **kwargs: Any) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return client.open(f"/api{path}", method=method, headers=headers, **kwargs)


# --- pages ------------------------------------------------------------------------------------------------------


def test_root_redirects_to_the_runs_list_which_filters_by_status(client, sink):
    run = waiting_run(sink)

    assert client.get("/").headers["Location"].endswith("/runs")
    listing = client.get("/runs").get_data(as_text=True)
    assert run.id in listing and "ApprovalWorkflow" in listing and "waiting_for_approval" in listing
    assert run.id in client.get("/runs?status=waiting_for_approval").get_data(as_text=True)
    assert run.id not in client.get("/runs?status=completed").get_data(as_text=True)

    bad = client.get("/runs?status=nonsense")
    assert bad.status_code == 400
    assert "unknown status" in bad.get_data(as_text=True)


def test_run_detail_shows_status_input_approvals_ledger_and_events(client, sink):
    run = waiting_run(sink)

    page = client.get(f"/runs/{run.id}")

    text = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "waiting_for_approval" in text and html.escape(str(sink)) in text
    assert "manager" in text and "Needs a manager." in text
    assert "<code>prepare</code>" in text  # the ledger's op key of the first step
    assert "approval.requested" in text and "run.waiting_for_approval" in text
    assert page.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["Cache-Control"] == "no-store"


def test_pending_approvals_list_and_approval_page_show_the_role_and_a_form(client, sink):
    run = waiting_run(sink)

    listing = client.get("/approvals").get_data(as_text=True)
    page = client.get(f"/approvals/{run.id}").get_data(as_text=True)

    assert f"/approvals/{run.id}" in listing
    assert '<td id="approval-role">manager</td>' in page
    assert run.pending_approval.id in page
    for action in ("approve", "reject", "request-changes"):
        assert f"/runs/{run.id}/{action}" in page
    assert CSRF.search(page)


def test_unknown_runs_are_404_pages(client):
    assert client.get("/runs/run_missing").status_code == 404
    missing = client.get("/approvals/run_missing")
    assert missing.status_code == 404
    assert "no run with id" in missing.get_data(as_text=True)


def test_the_app_without_a_runtime_uses_the_installed_one_per_request(stack, sink):
    run = waiting_run(sink)
    app = create_app(secret_key="k", authenticator=proxy_authenticator())

    assert run.id in app.test_client().get(f"/runs/{run.id}").get_data(as_text=True)


# --- state changes only on POST with CSRF -----------------------------------------------------------------------


def test_get_on_an_action_url_is_405_and_changes_nothing(client, sink):
    run = waiting_run(sink)

    for action in ACTIONS:
        answer = client.get(f"/runs/{run.id}/{action}?decided_by=x@example.com")
        assert answer.status_code == 405, action
        assert "POST" in answer.headers["Allow"]

    assert_still_waiting(run, sink)


def test_a_post_without_a_valid_csrf_token_is_400_and_changes_nothing(app, client, sink):
    run = waiting_run(sink)
    other_session_token = csrf_token(app.test_client(), run.id)
    csrf_token(client, run.id)  # this client has a session with its own token

    for form in ({}, {"csrf_token": "forged"}, {"csrf_token": other_session_token}):
        for action in ACTIONS:
            answer = client.post(f"/runs/{run.id}/{action}", data=form)
            assert answer.status_code == 400, (form, action)
            assert "CSRF token" in answer.get_data(as_text=True)

    assert_still_waiting(run, sink)


def test_approve_with_csrf_resumes_the_run_to_completion(client, sink):
    run = waiting_run(sink)

    answer = decide(client, run, "approve", comment="fine", payload='{"budget_cents": 120000}')

    assert answer.status_code == 303
    assert answer.headers["Location"].endswith(f"/runs/{run.id}")
    done = pipeline.wait(run.id, timeout=30)
    assert done.status == "completed", done.error
    approval = done.approvals[-1]
    assert (approval.status, approval.decided_by, approval.comment) == ("approved", "manager@example.com", "fine")
    assert approval.decision_payload == {"budget_cents": 120000}
    assert sink_lines(sink) == [f"{run.id} prepare", f"{run.id} after"]
    assert "was approved by manager@example.com" in client.get(f"/runs/{run.id}").get_data(as_text=True)


def test_reject_fails_the_run_with_reason_rejected(client, sink):
    run = waiting_run(sink)

    assert decide(client, run, "reject", comment="too expensive").status_code == 303

    done = pipeline.wait(run.id, timeout=30)
    assert done.status == "failed"
    assert done.error["reason"] == "rejected"
    assert done.approvals[-1].comment == "too expensive"
    assert sink_lines(sink) == [f"{run.id} prepare"]


def test_request_changes_ends_the_run_with_its_own_reason(client, sink):
    run = waiting_run(sink)

    assert decide(client, run, "request-changes").status_code == 303

    done = pipeline.wait(run.id, timeout=30)
    assert (done.status, done.error["reason"]) == ("failed", "changes_requested")


def test_a_second_decision_is_409_and_the_first_one_stands(client, sink):
    run = waiting_run(sink)
    stale_tab = csrf_token(client, run.id)  # a second tab opened before the decision
    assert decide(client, run, "approve").status_code == 303

    for action in ("approve", "reject", "request-changes"):
        again = decide(client, run, action, token=stale_tab)
        assert again.status_code == 409, action
        assert "already approved by manager@example.com" in again.get_data(as_text=True)

    done = pipeline.wait(run.id, timeout=30)
    assert done.status == "completed"
    assert [e.type for e in done.events].count("approval.approved") == 1
    assert [a.status for a in done.approvals] == ["approved"]


def test_bad_json_payload_is_400_and_changes_nothing(client, sink):
    run = waiting_run(sink)

    bad_json = decide(client, run, "approve", payload="{not json", comment="keep me")
    not_a_number = decide(client, run, "approve", payload="NaN")

    assert bad_json.status_code == 400
    page = bad_json.get_data(as_text=True)
    assert "payload is not valid JSON" in page and "Nothing was recorded" in page
    assert "keep me" in page  # the approver's form comes back filled in
    assert not_a_number.status_code == 400
    assert_still_waiting(run, sink)


def test_a_decided_by_form_field_is_ignored_the_signed_in_principal_decides(client, sink):
    # Given a manager signed in through the proxy, posting a form that claims to be someone else
    run = waiting_run(sink)

    assert decide(client, run, "approve", decided_by="ceo@example.com").status_code == 303

    # Then the decision is recorded as the authenticated principal, never the form's claim
    approval = pipeline.wait(run.id, timeout=30).approvals[-1]
    assert approval.decided_by == "manager@example.com"
    assert approval.principal == {
        "id": "manager@example.com",
        "display_name": "manager@example.com",
        "roles": ["manager"],
        "via": "proxy",
    }


def test_user_text_is_escaped_on_the_pages(client, sink):
    run = waiting_run(sink)

    decide(client, run, "approve", comment="<script>alert(1)</script>")

    page = client.get(f"/runs/{run.id}").get_data(as_text=True)
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_cancel_through_the_form_needs_the_launcher_or_an_admin(app, client, sink):
    run = waiting_run(sink)
    token = csrf_token(client, run.id)

    # A manager who did not launch the run may not cancel it
    refused = client.post(f"/runs/{run.id}/cancel", data={"csrf_token": token, "comment": "duplicate request"})
    assert refused.status_code == 403
    assert pipeline.get_run(run.id).status == "waiting_for_approval"

    # An admin may
    ops = signed_in(app.test_client(), "ops@example.com", roles=("rubot_admin",))
    ops_token = csrf_token(ops, run.id)
    answer = ops.post(f"/runs/{run.id}/cancel", data={"csrf_token": ops_token, "comment": "duplicate request"})

    assert answer.status_code == 303
    cancelled = pipeline.get_run(run.id)
    assert cancelled.status == "cancelled"
    assert cancelled.error["by"] == "ops@example.com"
    again = ops.post(f"/runs/{run.id}/cancel", data={"csrf_token": ops_token})
    assert again.status_code == 409
    assert decide(client, run, "approve", token=token).status_code == 409


# --- JSON API ---------------------------------------------------------------------------------------------------


def test_the_json_api_refuses_missing_unknown_or_malformed_tokens(client, token, sink):
    run = waiting_run(sink)
    token_id = token.split(".")[0].removeprefix("rubot_")

    for bad in (None, "wrong-token", "", f"rubot_{token_id}.not-the-secret", "rubot_tok_missing.x"):
        answer = api(client, "POST", f"/runs/{run.id}/approve", token=bad, json={})
        assert answer.status_code == 401, bad
        assert answer.json["error"] == "unauthorized"
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert api(client, "GET", f"/runs/{run.id}", token="wrong-token").status_code == 401
    assert api(client, "GET", "/approvals", token=None).status_code == 401
    assert_still_waiting(run, sink)


def test_the_json_api_approves_and_reports_the_run(client, token, sink):
    run = waiting_run(sink)
    shown = api(client, "GET", f"/runs/{run.id}", token=token)
    assert shown.status_code == 200
    assert shown.json["status"] == "waiting_for_approval"
    assert shown.json["pending_approval"]["role"] == "manager"
    assert "prepare" in [entry["op_key"] for entry in shown.json["ledger"]]

    answer = api(
        client,
        "POST",
        f"/runs/{run.id}/approve",
        token=token,
        json={"comment": "auto", "payload": {"ok": True}},
    )

    assert answer.status_code == 200
    assert answer.json["id"] == run.id
    assert answer.json["status"] in {"running", "completed"}
    assert answer.json["approval"]["status"] == "approved"
    final = eventually(
        lambda: (body := api(client, "GET", f"/runs/{run.id}", token=token).json)["status"] == "completed" and body,
        what="the approved run to complete",
    )
    assert final["approvals"][-1]["decided_by"] == "bot@example.com"
    assert final["approvals"][-1]["principal"]["via"] == "token"
    assert final["approvals"][-1]["payload"] == {"ok": True}

    again = api(client, "POST", f"/runs/{run.id}/reject", token=token, json={})
    assert again.status_code == 409
    assert again.json["error"] == "approval_already_decided"


def test_the_json_api_reports_user_mistakes_as_json_4xx(client, token, sink):
    run = waiting_run(sink)

    claims_by = api(client, "POST", f"/runs/{run.id}/approve", token=token, json={"by": "ceo@example.com"})
    not_json = api(client, "POST", f"/runs/{run.id}/approve", token=token, data="{by:", content_type="application/json")
    not_object = api(client, "POST", f"/runs/{run.id}/approve", token=token, json=["bot@example.com"])
    unknown_run = api(client, "POST", "/runs/run_missing/approve", token=token, json={})
    wrong_method = api(client, "GET", f"/runs/{run.id}/approve", token=token)

    assert (claims_by.status_code, claims_by.json["error"]) == (400, "invalid_request")
    assert "owner of the API token" in claims_by.json["message"]
    assert (not_json.status_code, not_json.json["error"]) == (400, "invalid_request")
    assert not_object.status_code == 400
    assert (unknown_run.status_code, unknown_run.json["error"]) == (404, "run_not_found")
    assert wrong_method.status_code == 405 and wrong_method.json["error"] == "method_not_allowed"
    assert_still_waiting(run, sink)


def test_the_json_api_rejects_and_cancels(client, token, sink, tmp_path):
    rejected, cancelled = waiting_run(sink), waiting_run(tmp_path / "other.log")

    reject = api(client, "POST", f"/runs/{rejected.id}/reject", token=token, json={})
    cancel = api(client, "POST", f"/runs/{cancelled.id}/cancel", token=token, json={"reason": "dup"})

    assert (reject.status_code, reject.json["status"]) == (200, "failed")
    assert pipeline.get_run(rejected.id).error["reason"] == "rejected"
    assert (cancel.status_code, cancel.json["status"]) == (200, "cancelled")
    pending = api(client, "GET", "/approvals", token=token).json["approvals"]
    assert {rejected.id, cancelled.id}.isdisjoint(item["run_id"] for item in pending)


def test_the_authenticator_and_secret_key_come_from_the_environment(stack, sink, monkeypatch, caplog):
    run = waiting_run(sink)
    monkeypatch.setenv("RUBOT_WEB_AUTH", "proxy")
    monkeypatch.setenv("RUBOT_WEB_TRUSTED_PROXIES", f"{webkit.PROXY_ADDRESS}/32")
    monkeypatch.delenv("RUBOT_WEB_SECRET_KEY", raising=False)

    with caplog.at_level("WARNING", logger="rubot.web"):
        app = create_app(stack.runtime)

    assert "RUBOT_WEB_SECRET_KEY is not set" in caplog.text
    page = signed_in(app.test_client(), "mia@example.com", roles=("manager",)).get(f"/approvals/{run.id}")
    assert "Signed in as" in page.get_data(as_text=True) and "mia@example.com" in page.get_data(as_text=True)
    monkeypatch.setenv("RUBOT_WEB_SECRET_KEY", "from-env-secret")
    assert create_app(stack.runtime).secret_key == "from-env-secret"
    monkeypatch.setenv("RUBOT_WEB_AUTH", "sometimes")
    with pytest.raises(pipeline.errors.ConfigurationError, match="RUBOT_WEB_AUTH"):
        create_app(stack.runtime)


# --- health -------------------------------------------------------------------------------------------------------


def test_healthz_answers_ok_when_the_database_answers(client):
    answer = client.get("/healthz")

    assert (answer.status_code, answer.get_data(as_text=True)) == (200, "ok")


def test_healthz_is_503_when_the_database_is_unreachable():
    unreachable = SimpleNamespace(db=Database("postgresql+psycopg://nobody@127.0.0.1:9/nowhere?connect_timeout=2"))
    app = create_app(unreachable, secret_key="k")  # type: ignore[arg-type]

    answer = app.test_client().get("/healthz")

    assert answer.status_code == 503
    assert "nobody" not in answer.get_data(as_text=True)


# --- a real browser -----------------------------------------------------------------------------------------------


@pytest.fixture
def served(app: Flask) -> Iterator[str]:
    """The app on a real HTTP server in a thread, as a browser reaches it."""
    with webkit.served(app) as url:
        yield url


def test_a_headless_browser_renders_the_pending_approval(served, sink, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if ON_CI:
            pytest.fail("CI needs chromium for the browser test (apt-get install chromium)")
        pytest.skip("LOUD SKIP: chromium is not installed; the browser test did not run")
    run = waiting_run(sink)

    dom = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom",
            f"{served}/approvals/{run.id}",
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
        env={**os.environ, "HOME": str(tmp_path)},
    ).stdout

    assert re.search(r'<td id="approval-role">\s*manager\s*</td>', dom), dom[:2000]
    assert 'name="csrf_token"' in dom
    assert_still_waiting(run, sink)  # rendering the page decides nothing
