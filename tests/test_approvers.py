"""Approver identity and authorization: principals, roles, assignees, policy hooks, tokens, fail-closed web.

Every refusal is checked three ways: the error the caller gets, the ``approval.refused`` event (who tried, why),
and that nothing else changed (the approval still pending, the run still waiting, the next step never ran).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

import pipeline
from pipeline.auth import Principal
from pipeline.auth.dev import DevAuthenticator
from pipeline.auth.proxy import TrustedProxyAuthenticator
from pipeline.errors import ApprovalForbidden, ConfigurationError
from pipeline.web import create_app
from rubot_app.scripts import cli
from tests import webkit, workflows
from tests.conftest import sink_lines
from tests.webkit import signed_in


def parked(workflow: type, sink: Path, **kwargs) -> pipeline.Run:
    run = pipeline.run(workflow, input={"sink": str(sink)}, timeout=60, **kwargs)
    assert run.waiting_for_approval, run.error
    return run


def assert_untouched(run: pipeline.Run, sink: Path) -> None:
    run = pipeline.get_run(run.id)
    assert run.status == "waiting_for_approval"
    assert [a.status for a in run.approvals] == ["pending"]
    assert [e.type for e in run.events].count("run.resumed") == 0
    assert not [line for line in sink_lines(sink) if line.endswith(" after")]


def refusals(run: pipeline.Run) -> list[dict]:
    return [e.data for e in pipeline.get_run(run.id).events if e.type == "approval.refused"]


# --- the rule: role or assignee, in the deciding transaction ------------------------------------------------------


def test_a_principal_without_the_role_is_refused_and_the_refusal_is_recorded(stack, sink):
    # Given a run waiting for a manager
    run = parked(workflows.ApprovalWorkflow, sink)

    # When someone holding other roles tries to approve it
    with pytest.raises(ApprovalForbidden, match="does not hold the role 'manager'"):
        run.approve(Principal.of("intern@example.com", roles=["engineer"], via="proxy"))

    # Then nothing changed, and the attempt is on the trail: who tried and why
    assert_untouched(run, sink)
    (refused,) = refusals(run)
    assert refused["principal"] == {
        "id": "intern@example.com",
        "display_name": "intern@example.com",
        "roles": ["engineer"],
        "via": "proxy",
    }
    assert "does not hold the role 'manager'" in refused["why"]

    # And a principal holding the role approves; the decision records it
    approval = run.approve(Principal.of("lead@example.com", roles=["manager"], display_name="Lea Lead", via="proxy"))
    done = pipeline.wait(run, timeout=30)
    assert done.status == "completed", done.error
    assert approval.principal == {
        "id": "lead@example.com",
        "display_name": "Lea Lead",
        "roles": ["manager"],
        "via": "proxy",
    }
    assert done.approvals[-1].decision_payload == {"approved_by": "lead@example.com"}
    approved = next(e for e in done.events if e.type == "approval.approved")
    assert approved.data["principal"]["id"] == "lead@example.com"


def test_the_assignee_may_decide_without_the_role_and_nobody_else_by_name(stack, sink):
    run = parked(workflows.AssignedWorkflow, sink)

    with pytest.raises(ApprovalForbidden):
        run.approve(Principal.of("someone@example.com"))
    # A trusted caller naming someone else than the assignee is refused too (as before principals existed)
    with pytest.raises(ApprovalForbidden, match="assigned to mia@example.com"):
        run.approve(approved_by="someone@example.com")
    assert_untouched(run, sink)

    run.approve(Principal.of("mia", email="mia@example.com"))
    assert pipeline.wait(run, timeout=30).status == "completed"


def test_four_eyes_on_the_workflow_refuses_the_launcher(stack, sink):
    launcher = {"user": {"id": "alice@example.com"}}
    run = parked(workflows.FourEyesWorkflow, sink, context=launcher)

    with pytest.raises(ApprovalForbidden, match="four eyes"):
        run.approve(Principal.of("alice@example.com", roles=["manager"]))
    assert_untouched(run, sink)
    assert "four eyes" in refusals(run)[0]["why"]

    run.approve(Principal.of("bob@example.com", roles=["manager"]))
    assert pipeline.wait(run, timeout=30).status == "completed"


def test_an_approvers_hook_on_the_step_narrows_who_may_decide(stack, sink):
    run = parked(workflows.StepHookWorkflow, sink, context={"user": {"id": "alice@example.com"}})

    with pytest.raises(ApprovalForbidden, match="you launched this run"):
        run.reject(Principal.of("alice@example.com", roles=["manager"]))
    assert_untouched(run, sink)
    run.reject(Principal.of("bob@example.com", roles=["manager"]))
    assert pipeline.wait(run, timeout=30).error["reason"] == "rejected"


def test_a_plain_string_is_a_trusted_caller_as_in_the_design_contract(stack, sink):
    run = parked(workflows.ApprovalWorkflow, sink)

    run.approve(approved_by="manager@example.com")

    done = pipeline.wait(run, timeout=30)
    assert done.status == "completed"
    assert done.approvals[-1].principal["via"] == "python"


def test_bad_approvers_hooks_are_definition_errors():
    from pipeline import Workflow, approval_step
    from pipeline.errors import DefinitionError

    with pytest.raises(DefinitionError, match="approvers must be a callable"):

        class NotCallable(Workflow):
            manager = approval_step(role="manager", approvers="four eyes")

    with pytest.raises(DefinitionError, match="approvers must be a callable"):

        class TwoArguments(Workflow):
            approvers = staticmethod(lambda a, b: True)
            manager = approval_step(role="manager")


# --- the command line ---------------------------------------------------------------------------------------------


def rubot(*args: str):
    return CliRunner().invoke(cli.main, list(args))


def test_the_cli_with_role_is_checked_and_a_refusal_is_one_line(stack, sink):
    run = parked(workflows.ApprovalWorkflow, sink)

    refused = rubot("approve", run.id, "--by", "intern@example.com", "--role", "engineer")

    assert refused.exit_code == 1
    assert refused.stderr.startswith("rubot: error: intern@example.com may not decide")
    assert "Traceback" not in refused.output and len(refused.stderr.strip().splitlines()) == 1
    assert_untouched(run, sink)

    ok = rubot("approve", run.id, "--by", "lead@example.com", "--role", "manager", "--role", "other", "--wait")
    assert ok.exit_code == 0, ok.output
    approval = pipeline.get_run(run.id).approvals[-1]
    assert approval.principal == {
        "id": "lead@example.com",
        "display_name": "lead@example.com",
        "roles": ["manager", "other"],
        "via": "cli",
    }


def test_the_cli_without_role_is_a_trusted_operator_call(stack, sink):
    run = parked(workflows.ApprovalWorkflow, sink)

    result = rubot("approve", run.id, "--by", "ops@example.com", "--wait")

    assert result.exit_code == 0, result.output
    assert pipeline.get_run(run.id).approvals[-1].principal["via"] == "cli"


def test_tokens_are_created_once_listed_without_secrets_and_revoked(stack, sink):
    created = rubot("tokens", "create", "--user", "bot@example.com", "--role", "manager", "--name", "ci bot")
    assert created.exit_code == 0, created.output
    token = created.stdout.strip().splitlines()[-1]
    token_id = token.removeprefix("rubot_").split(".")[0]
    assert token.startswith(f"rubot_{token_id}.") and len(token) > 50

    listing = rubot("tokens", "list")
    assert token_id in listing.stdout and "bot@example.com" in listing.stdout and "manager" in listing.stdout
    assert token.split(".")[1] not in listing.stdout  # the secret is never shown again
    with stack.runtime.db.transaction() as s:
        from pipeline.store.tables import ApiTokenRow

        stored = s.get(ApiTokenRow, token_id)
        assert token.split(".")[1] not in str(vars(stored))  # only its hash is stored

    revoked = rubot("tokens", "revoke", token_id)
    assert revoked.exit_code == 0 and f"Revoked API token {token_id}" in revoked.stdout
    (row,) = [line for line in rubot("tokens", "list").stdout.splitlines() if token_id in line]
    assert not row.endswith("active")
    unknown = rubot("tokens", "revoke", "tok_nope")
    assert unknown.exit_code == 1 and "no API token with id 'tok_nope'" in unknown.stderr


def test_a_revoked_api_token_is_refused_and_decides_nothing(stack, sink):
    # Given a token that worked, then was revoked
    run = parked(workflows.ApprovalWorkflow, sink)
    token_id, token = webkit.api_token(stack, "bot@example.com", "manager")
    client = create_app(stack.runtime, secret_key="k", authenticator=webkit.proxy_authenticator()).test_client()
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get(f"/api/runs/{run.id}", headers=headers).status_code == 200
    assert rubot("tokens", "revoke", token_id).exit_code == 0

    # When it is used to approve
    answer = client.post(f"/api/runs/{run.id}/approve", headers=headers, json={})

    # Then it is a 401, and nothing changed
    assert answer.status_code == 401 and answer.json["error"] == "unauthorized"
    assert client.get("/api/approvals", headers=headers).status_code == 401
    assert_untouched(run, sink)


# --- fail closed on the web ---------------------------------------------------------------------------------------


def test_without_an_authenticator_pages_are_read_only_and_say_how_to_configure_one(stack, sink, monkeypatch, caplog):
    # Given the web app with no authenticator configured (RUBOT_WEB_AUTH unset)
    run = parked(workflows.ApprovalWorkflow, sink)
    monkeypatch.delenv("RUBOT_WEB_AUTH", raising=False)
    with caplog.at_level("WARNING", logger="rubot.web"):
        app = create_app(stack.runtime, secret_key="k")
    assert "no authenticator configured" in caplog.text
    # Even a request carrying proxy headers is nobody here
    client = signed_in(app.test_client(), "manager@example.com", roles=("manager",))

    # Then pages can be read, but a well-formed decision (CSRF token and all) is a 403 saying what to do
    page = client.get(f"/approvals/{run.id}")
    assert page.status_code == 200 and "no authenticator configured" in page.get_data(as_text=True)
    token = webkit.csrf_token(client, f"/approvals/{run.id}")
    for action in ("approve", "reject", "request-changes", "cancel"):
        answer = client.post(f"/runs/{run.id}/{action}", data={"csrf_token": token})
        assert answer.status_code == 403, action
        assert "RUBOT_WEB_AUTH" in answer.get_data(as_text=True)
    inbox = client.get("/approvals").get_data(as_text=True)
    assert run.id not in inbox
    assert_untouched(run, sink)


def test_forged_proxy_headers_from_an_address_that_is_not_a_trusted_proxy_are_ignored(stack, sink):
    # Given an app that trusts the proxy at 127.0.0.2 only, served over real HTTP
    run = parked(workflows.ApprovalWorkflow, sink)
    app = create_app(stack.runtime, secret_key="k", authenticator=webkit.proxy_authenticator())
    import httpx

    with webkit.served(app) as url:
        # When a client at 127.0.0.1 talks to the app directly, claiming to be a manager
        forged = webkit.identity("manager@example.com", roles=("manager",))
        with httpx.Client(base_url=url, headers=forged) as direct:
            page = direct.get(f"/approvals/{run.id}")
            assert "Not signed in" in page.text  # the claim was not believed
            token = webkit.CSRF.search(page.text).group(1)
            answer = direct.post(f"/runs/{run.id}/approve", data={"csrf_token": token})

    # Then the decision is refused and nothing changed
    assert answer.status_code == 403
    assert "no identity the server trusts" in answer.text
    assert_untouched(run, sink)
    # The same headers through the trusted address would have been a principal
    authenticator = TrustedProxyAuthenticator(f"{webkit.PROXY_ADDRESS}/32")
    assert not authenticator.trusts("127.0.0.1") and not authenticator.trusts("10.1.2.3")
    assert authenticator.trusts(webkit.PROXY_ADDRESS) and authenticator.trusts(f"::ffff:{webkit.PROXY_ADDRESS}")


def test_the_trusted_proxy_setting_is_validated():
    with pytest.raises(ConfigurationError, match="RUBOT_WEB_TRUSTED_PROXIES"):
        TrustedProxyAuthenticator("")
    with pytest.raises(ConfigurationError, match="not an address or CIDR"):
        TrustedProxyAuthenticator("10.0.0.0/8, proxy.internal")


def test_dev_mode_answers_loopback_only_and_warns_loudly(caplog):
    class Request:
        def __init__(self, remote_addr):
            self.remote_addr = remote_addr
            self.headers = {}

    with caplog.at_level("WARNING", logger="rubot.auth"):
        dev = DevAuthenticator("me@localhost", ["manager"])
    assert "DEVELOPMENT MODE" in caplog.text

    assert dev(Request("127.0.0.1")) == Principal.of("me@localhost", roles=["manager"], via="dev")
    assert dev(Request("::1")) is not None
    assert dev(Request("192.168.1.20")) is None


@pytest.fixture
def exec_calls(monkeypatch, tmp_path):
    calls: list[list[str]] = []
    monkeypatch.setattr(cli, "exec_command", lambda argv: calls.append(argv))
    for name in [k for k in __import__("os").environ if k.startswith("RUBOT_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("RUBOT_HOME", str(tmp_path / "home"))
    return calls


def test_rubot_web_says_how_decisions_are_authenticated_at_start(exec_calls, monkeypatch):
    unconfigured = rubot("web")
    assert unconfigured.exit_code == 0 and "no authenticator configured" in unconfigured.stderr

    monkeypatch.setenv("RUBOT_WEB_AUTH", "dev")
    public = rubot("web", "--host", "0.0.0.0")
    assert public.exit_code == 2 and "refusing RUBOT_WEB_AUTH=dev on 0.0.0.0" in public.stderr
    local = rubot("web")
    assert local.exit_code == 0 and "DEVELOPMENT MODE" in local.stderr

    monkeypatch.setenv("RUBOT_WEB_AUTH", "proxy")
    assert rubot("web").exit_code == 2
    monkeypatch.setenv("RUBOT_WEB_TRUSTED_PROXIES", "127.0.0.1/32")
    proxied = rubot("web")
    assert proxied.exit_code == 0 and "trusted only from 127.0.0.1/32" in proxied.stderr
    assert len(exec_calls) == 3  # the refused starts exec'd nothing
