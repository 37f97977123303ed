"""Security rules of the web process over real HTTP: GET never changes anything, and 50 concurrent decisions on one
approval apply exactly one decision and resume the run exactly once."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import func, select

import pipeline
from pipeline.notify.links import LinkSigner
from pipeline.store.tables import ApprovalRow, EffectRow, EventRow, LinkUseRow, OutboxRow, RunRow
from pipeline.web import create_app
from tests import webkit, workflows
from tests.conftest import sink_lines


def snapshot(stack, run_id: str) -> tuple:
    """Everything a request could change, as plain values."""
    with stack.runtime.db.transaction() as s:
        run = s.get(RunRow, run_id)
        return (
            run.status,
            run.dispatch_seq,
            repr(run.state),
            [(a.id, a.status, a.decided_by) for a in s.scalars(select(ApprovalRow).filter_by(run_id=run_id))],
            s.scalar(select(func.count()).select_from(EventRow).where(EventRow.run_id == run_id)),
            s.scalar(select(func.count()).select_from(EffectRow).where(EffectRow.run_id == run_id)),
            s.scalar(select(func.count()).select_from(LinkUseRow)),
            s.scalar(select(func.count()).select_from(OutboxRow).where(OutboxRow.run_id == run_id)),
        )


def test_get_on_every_page_link_and_endpoint_changes_nothing(stack, sink):
    # Given a parked run, a signed link for its approver, a signed-in manager and an API token
    run = pipeline.run(workflows.ApprovalWorkflow, input={"sink": str(sink)}, timeout=60)
    approval = run.pending_approval
    token = LinkSigner(webkit.SECRET_KEY).sign(
        link_id="ntf_get_test",
        approval_id=approval.id,
        run_id=run.id,
        approver={"id": "mia@example.com", "email": "mia@example.com", "roles": ["manager"]},
    )
    _, api_token = webkit.api_token(stack, "bot@example.com", "manager", "rubot_admin")
    app = create_app(stack.runtime, secret_key=webkit.SECRET_KEY, authenticator=webkit.proxy_authenticator())
    before = snapshot(stack, run.id)
    paths = [
        "/",
        "/runs",
        "/runs?status=waiting_for_approval",
        f"/runs/{run.id}",
        "/approvals",
        f"/approvals/{run.id}",
        f"/links/{token}",
        "/healthz",
        # the decision endpoints answer GET with 405 and do nothing, even with every credential
        *(f"/runs/{run.id}/{action}" for action in ("approve", "reject", "request-changes", "cancel")),
        *(f"/links/{token}/{action}" for action in ("approve", "reject", "request-changes")),
        f"/api/runs/{run.id}",
        "/api/approvals",
        *(f"/api/runs/{run.id}/{action}" for action in ("approve", "reject", "request-changes", "cancel")),
    ]
    # the console's pages, and its operator actions (which answer GET with 405)
    console_pages = ["/dashboard", "/workflows", "/workflows/ApprovalWorkflow", "/metrics", "/runs?user=nobody"]
    console_actions = [f"/runs/{run.id}/retry", f"/runs/{run.id}/reconcile"]
    paths += console_pages + console_actions

    # When every page, link and endpoint is fetched with GET (and HEAD), as a signed-in manager with a token
    statuses = {}
    credentials = {"Authorization": f"Bearer {api_token}"}
    with (
        webkit.served(app) as upstream,
        webkit.IdentityProxy(upstream, "mia@example.com", roles=("manager",)) as proxy,
        httpx.Client(base_url=proxy.url, headers=credentials) as browser,
    ):
        for path in paths:
            for method in ("GET", "HEAD"):
                # Query parameters that a decision would take, in case a handler read them on GET
                query = f"{'&' if '?' in path else '?'}approval_id={approval.id}&comment=x&payload=1"
                statuses[method, path] = browser.request(method, path + query).status_code

    # Then the pages answered, the action URLs refused the method, and nothing at all changed
    assert statuses["GET", "/"] == 302  # to /runs
    assert all(statuses["GET", p] == 200 for p in paths[1:8]), statuses
    assert all(statuses["GET", p] == 405 for p in paths[8:15] + paths[17:21] + console_actions), statuses
    assert all(statuses["GET", p] == 200 for p in console_pages), statuses
    assert statuses["GET", f"/api/runs/{run.id}"] == 200 and statuses["GET", "/api/approvals"] == 200
    assert snapshot(stack, run.id) == before
    assert sink_lines(sink) == [f"{run.id} prepare"]


@pytest.mark.parametrize("deciders", [50])
def test_fifty_concurrent_decisions_over_http_apply_one_and_resume_once(stack, sink, deciders):
    # Given a parked run and the web app on a real threaded HTTP server
    run = pipeline.run(workflows.ApprovalWorkflow, input={"sink": str(sink)}, timeout=60)
    assert run.waiting_for_approval
    app = create_app(stack.runtime, secret_key=webkit.SECRET_KEY, authenticator=webkit.proxy_authenticator())
    tokens = [webkit.api_token(stack, f"lead{i}@example.com", "manager")[1] for i in range(deciders // 2)]
    barrier = threading.Barrier(deciders, timeout=60)

    with webkit.served(app) as upstream, webkit.IdentityProxy(upstream, "mia@example.com", roles=("manager",)) as proxy:
        # Half the deciders use the JSON API with their own tokens, half the page form through the proxy
        browsers = [httpx.Client(base_url=proxy.url, timeout=60) for _ in range(deciders - len(tokens))]
        csrf = [webkit.CSRF.search(b.get(f"/approvals/{run.id}").text).group(1) for b in browsers]

        def by_api(i: int) -> int:
            barrier.wait()
            return httpx.post(
                f"{upstream}/api/runs/{run.id}/approve",
                headers={"Authorization": f"Bearer {tokens[i]}"},
                json={"comment": f"api {i}"},
                timeout=60,
            ).status_code

        def by_page(i: int) -> int:
            barrier.wait()
            return browsers[i].post(f"/runs/{run.id}/approve", data={"csrf_token": csrf[i]}).status_code

        # When all of them decide at the same moment
        with ThreadPoolExecutor(max_workers=deciders) as pool:
            futures = [pool.submit(by_api, i) for i in range(len(tokens))]
            futures += [pool.submit(by_page, i) for i in range(len(browsers))]
            answers = [f.result() for f in futures]
        for browser in browsers:
            browser.close()

    # Then exactly one decision was applied (200 or the page's 303), every other one was told it came too late
    assert sorted(answers).count(409) == deciders - 1, answers
    assert len([a for a in answers if a in (200, 303)]) == 1, answers
    done = pipeline.wait(run.id, timeout=60)
    assert done.status == "completed", done.error
    types = [e.type for e in done.events]
    assert types.count("approval.approved") == 1
    assert types.count("run.resumed") == 1
    assert [a.status for a in done.approvals] == ["approved"]
    assert sink_lines(sink) == [f"{run.id} prepare", f"{run.id} after"]  # the step after the approval ran once
