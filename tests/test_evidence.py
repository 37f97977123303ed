"""Evidence: what an approver sees is what gets decided — exact tool arguments and their hash, the model's reason,
the transcript, the state the next steps act on — with secrets redacted everywhere it could leave SQL."""

from __future__ import annotations

import html
import json

import pytest

import pipeline
from pipeline.llm.tool_calls import args_hash
from pipeline.testing import reply
from pipeline.web import create_app
from tests import agent_workflows as aw
from tests import webkit, workflows
from tests.conftest import sink_lines
from tests.webkit import signed_in

INVOICE = {"id": "inv_9", "lines": [{"sku": "A-100", "cents": 1200}, {"sku": "B-200", "cents": 800}]}
ARGS = {"invoice": INVOICE, "amount_cents": 2000, "api_key": "sk-live-CANARY0123456789"}
REASON = "Invoice inv_9 is due today; paying the two lines."


def final(resolution: str = "paid"):
    return reply(tool_uses=[("final_answer", {"resolution": resolution})])


@pytest.fixture
def app(stack):
    return create_app(stack.runtime, secret_key=webkit.SECRET_KEY, authenticator=webkit.proxy_authenticator())


def test_a_tool_call_approval_shows_the_exact_arguments_and_hash_and_approving_runs_exactly_them(
    stack, model, sink, app
):
    # Given the model asks to pay an invoice, with nested arguments and a credential, and the call parks
    model.add(reply(REASON, tool_uses=[("pay_invoice", ARGS)]), final())
    run = pipeline.run(aw.BillingWorkflow, input={"invoice_id": "inv_9"}, timeout=60)
    assert run.waiting_for_approval, run.error
    digest = args_hash("pay_invoice", ARGS)

    # When a treasurer opens the approval page
    treasurer = signed_in(app.test_client(), "tess@example.com", roles=("treasurer",))
    page = treasurer.get(f"/approvals/{run.id}").get_data(as_text=True)

    # Then it shows the tool, every argument readably (nested values pretty-printed), the hash the decision is
    # bound to, the model's reason, the summary and the transcript up to the call — and never the credential
    assert '<code id="tool-name">pay_invoice</code>' in page
    assert "<dt>amount_cents</dt>" in page and '<code class="arg">2000</code>' in page
    assert "<dt>invoice</dt>" in page and '"sku": "A-100"' in html.unescape(page) and "inv_9" in page
    assert "<dt>api_key</dt>" in page and "[redacted]" in page
    assert f'<code id="args-hash">{digest}</code>' in page
    assert f'<blockquote id="model-reason">{REASON}</blockquote>' in page
    assert "Pay 2000 cents for invoice inv_9" in page
    assert '"invoice_id": "inv_9"' in html.unescape(page)  # the transcript starts with the agent's input
    assert "CANARY" not in page

    # And the API and the Run handle expose the same evidence
    _, token = webkit.api_token(stack, "tess@example.com", "treasurer")
    body = app.test_client().get(f"/api/runs/{run.id}", headers={"Authorization": f"Bearer {token}"}).json
    pending = body["pending_approval"]
    assert (pending["kind"], pending["tool"], pending["args_hash"]) == ("tool_call", "pay_invoice", digest)
    assert pending["tool_input"] == {**ARGS, "api_key": "[redacted]"}
    assert pending["evidence"]["model_reason"] == REASON
    assert pending["summary"] == "Pay 2000 cents for invoice inv_9"
    assert [m["role"] for m in pending["transcript"]] == ["user", "assistant"]
    assert "CANARY" not in json.dumps(body)
    handle = pipeline.get_run(run.id).pending_approval
    assert (handle.tool, handle.args_hash, handle.tool_input["amount_cents"]) == ("pay_invoice", digest, 2000)

    # When the treasurer approves on the page
    answer = treasurer.post(
        f"/runs/{run.id}/approve", data={"csrf_token": webkit.csrf_token(treasurer, f"/approvals/{run.id}")}
    )
    assert answer.status_code == 303

    # Then exactly that call ran, once, with exactly those arguments (credential included, as the model sent it)
    done = pipeline.wait(run.id, timeout=60)
    assert done.status == "completed", done.error
    assert sink_lines(sink) == [f"pay {json.dumps(INVOICE, sort_keys=True)} 2000 key-ok=True"]
    events = json.dumps([e.data for e in done.events])
    assert "CANARY" not in events and digest in events


def test_a_step_approval_shows_the_reason_the_summary_and_the_state_next_steps_act_on(stack, sink, app):
    run = pipeline.run(workflows.SummarizedWorkflow, input={"sink": str(sink), "amount_cents": 4200}, timeout=60)
    assert run.waiting_for_approval, run.error
    manager = signed_in(app.test_client(), "mia@example.com", roles=("manager",))

    page = manager.get(f"/approvals/{run.id}").get_data(as_text=True)
    inbox = manager.get("/approvals").get_data(as_text=True)

    assert "Purchases over 1000 cents need a manager." in page
    assert '<td id="approval-summary">Buy from ACME for 4200 cents</td>' in page
    assert "Buy from ACME for 4200 cents" in inbox
    state = html.unescape(page.split('<pre id="approval-state">')[1].split("</pre>")[0])
    assert '"vendor": "ACME"' in state and '"amount_cents": 4200' in state
    assert "hunter2" not in page and "[redacted]" in state
    assert "hunter2" not in manager.get(f"/runs/{run.id}").get_data(as_text=True)
    approval = pipeline.get_run(run.id).pending_approval
    assert approval.summary == "Buy from ACME for 4200 cents"
    assert approval.evidence["state"]["draft"]["password"] == "[redacted]"


def test_a_summary_template_that_fails_does_not_fail_the_run(stack, sink):
    from pipeline import Workflow, approval_step

    class BrokenSummary(Workflow):
        name = "BrokenSummaryWorkflow"
        manager = approval_step(role="manager", summary="{state[nope]}")

    # Defined in the test: run it through the same engine code path that parks it
    from pipeline.engine.evidence import summarize

    assert summarize(BrokenSummary.step_named("manager").summary, {"input": {}, "state": {}, "context": {}}).startswith(
        "(the summary could not be made: KeyError"
    )


def test_the_tools_approvers_hook_narrows_who_approves_a_call(stack, model, sink):
    from pipeline.auth import Principal
    from pipeline.errors import ApprovalForbidden

    big = {**ARGS, "amount_cents": 250_000}
    model.add(reply(tool_uses=[("pay_invoice", big)]), final())
    run = pipeline.run(aw.BillingWorkflow, input={"invoice_id": "inv_9"}, timeout=60)
    assert run.waiting_for_approval, run.error

    with pytest.raises(ApprovalForbidden, match="need the CFO"):
        run.approve(Principal.of("tess@example.com", roles=["treasurer"]))
    assert pipeline.get_run(run.id).pending_approval is not None and sink_lines(sink) == []

    run.approve(Principal.of("carl@example.com", roles=["treasurer", "cfo"]))
    assert pipeline.wait(run.id, timeout=60).status == "completed"
    assert len(sink_lines(sink)) == 1
