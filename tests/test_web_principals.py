"""The web pages with an authenticator: no principal, no decision; a decision is the principal's, not the form's."""

from __future__ import annotations

import re

import pipeline
from pipeline.auth import Principal
from pipeline.web import create_app
from tests import workflows

LEAD = Principal.of("lena", roles=["manager"], display_name="Lena Lead", via="host")


def test_pages_need_a_principal_and_decisions_are_recorded_as_made_by_it(stack, sink):
    # Given a parked run and the pages with an authenticator that knows one user by a header set by a proxy
    run = pipeline.run(workflows.ApprovalWorkflow, input={"sink": str(sink)}, timeout=60)
    app = create_app(stack.runtime, secret_key="k", authenticator=lambda r: LEAD if r.headers.get("X-User") else None)
    client = app.test_client()

    # Then without a principal the pages are read-only: no decision is served
    assert client.get(f"/approvals/{run.id}").status_code == 200
    anonymous = client.get(f"/approvals/{run.id}")
    token = re.search(r'name="csrf_token" value="([^"]+)"', anonymous.text)
    refused = client.post(
        f"/runs/{run.id}/approve",
        data={"csrf_token": token.group(1) if token else "", "decided_by": "mallory@example.com"},
    )
    assert refused.status_code in (400, 403)
    assert pipeline.get_run(run.id).waiting_for_approval

    # When the principal approves with a forged "decided_by" field
    page = client.get(f"/approvals/{run.id}", headers={"X-User": "1"})
    assert page.status_code == 200 and 'Signed in as <strong id="principal-name">Lena Lead</strong>' in page.text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    answer = client.post(
        f"/runs/{run.id}/approve",
        data={"csrf_token": token, "decided_by": "mallory@example.com"},
        headers={"X-User": "1"},
    )

    # Then the approval is recorded as the principal's
    assert answer.status_code == 303
    assert pipeline.wait(run, timeout=60).approvals[-1].decided_by == "lena"
