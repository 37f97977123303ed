"""The approver's path in a real headless Chromium, behind a stand-in for oauth2-proxy, on both stacks.

A ``role="engineering_manager"`` approval of the reference app: an engineer (no such role) clicks Approve and
gets a 403 page — and a 403 through the JSON API with her own token — and nothing changes; a manager clicks
Approve, the run completes, and its timeline shows the authenticated principal and the time. Screenshots are saved
under ``tests/artifacts/``.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import pipeline
from pipeline.web import create_app
from rubot_app.agents.conference_travel import ConferenceTravelManualApprovalWorkflow
from tests import webkit
from tests.conftest import ON_CI, eventually
from tests.stacks import ROOT

ARTIFACTS = ROOT / "tests" / "artifacts"
REVIEW = {
    "employee_id": "emp_7",
    "within_budget": False,
    "auto_approvable": False,
    "recommended": False,
    "risks": ["over budget"],
    "confidence_score": 0.7,
}


def chromium(profile: Path):
    """Headless Chromium through chromedriver (both from the system packages); skip loudly if missing."""
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if browser is None or driver is None:
        if ON_CI:
            pytest.fail("CI needs chromium and chromium-driver (apt-get install chromium chromium-driver)")
        pytest.skip("LOUD SKIP: chromium or chromedriver is not installed; the browser test did not run")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,1600",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


@pytest.fixture
def browsers(tmp_path) -> Iterator[callable]:
    opened = []

    def open_browser(name: str):
        driver = chromium(tmp_path / f"profile-{name}")
        opened.append(driver)
        return driver

    yield open_browser
    for driver in opened:
        driver.quit()


def shot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def test_only_an_engineering_manager_approves_in_the_browser_and_the_timeline_shows_who_and_when(
    stack, browsers, monkeypatch
):
    monkeypatch.setenv("SE_OFFLINE", "true")  # selenium must never try to download a driver
    # Given the reference app's manual approval, parked for an engineering manager
    run = pipeline.run(ConferenceTravelManualApprovalWorkflow, input={"review": REVIEW}, timeout=60)
    assert run.waiting_for_approval, run.error
    assert run.pending_approval.role == "engineering_manager"
    app = create_app(stack.runtime, secret_key=webkit.SECRET_KEY, authenticator=webkit.proxy_authenticator())
    _, eve_token = webkit.api_token(stack, "eve@example.com", "engineer")
    tag = f"{stack.name}-{uuid.uuid4().hex[:4]}"

    with (
        webkit.served(app) as upstream,
        webkit.IdentityProxy(upstream, "eve@example.com", roles=("engineer",)) as eve_proxy,
        webkit.IdentityProxy(upstream, "mia@example.com", roles=("engineering_manager", "staff")) as mia_proxy,
    ):
        # When an engineer opens the approval in her browser and clicks Approve
        eve = browsers("eve")
        eve.get(f"{eve_proxy.url}/approvals/{run.id}")
        assert "Signed in as" in eve.page_source and "eve@example.com" in eve.page_source
        assert "You may not decide this approval" in eve.find_element("id", "refusal").text
        eve.find_element("id", "approve").click()

        # Then she sees a 403 page saying why, and the API answers her token the same way
        eventually(lambda: "403" in eve.title, what="the 403 page")
        assert "does not hold the role 'engineering_manager'" in eve.find_element("id", "error-message").text
        shot(eve, f"approval-refused-{tag}")
        import httpx

        api = httpx.post(
            f"{upstream}/api/runs/{run.id}/approve",
            headers={"Authorization": f"Bearer {eve_token}"},
            json={"comment": "let me"},
        )
        assert api.status_code == 403 and api.json()["error"] == "approval_forbidden"
        # ... and nothing changed
        still = pipeline.get_run(run.id)
        assert still.status == "waiting_for_approval" and [a.status for a in still.approvals] == ["pending"]
        assert [e.type for e in still.events].count("approval.refused") == 2
        assert eve.get(f"{eve_proxy.url}/approvals") is None and run.id not in eve.page_source  # not in her inbox

        # When the engineering manager approves in hers
        mia = browsers("mia")
        mia.get(f"{mia_proxy.url}/approvals")
        assert run.id in mia.page_source  # her inbox lists it
        mia.get(f"{mia_proxy.url}/approvals/{run.id}")
        shot(mia, f"approval-page-{tag}")
        mia.find_element("id", "comment").send_keys("Approved: strong agenda fit.")
        mia.find_element("id", "approve").click()

        # Then the browser lands on the run page (post/redirect/get), the run completes, and the page's timeline
        # shows the authenticated principal and the time
        eventually(lambda: mia.title.startswith("Run "), what="the redirect to the run page")
        assert "was approved by mia@example.com" in mia.page_source
        done = eventually(
            lambda: (r := pipeline.get_run(run.id)).status in ("completed", "failed") and r, what="the run to finish"
        )
        assert done.status == "completed", done.error
        mia.get(f"{mia_proxy.url}/runs/{run.id}")
        assert mia.find_element("id", "run-status").text == "completed"
        approved = mia.find_element("css selector", 'tr.event[data-type="approval.approved"]')
        who, when = approved.find_element("class name", "who").text, approved.find_element("class name", "when").text
        assert who == "mia@example.com (mia@example.com, via proxy)"
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC", when)
        decided = mia.find_element("css selector", "tr.approval .decided-by").text
        assert "via proxy" in decided and "engineering_manager" in decided
        shot(mia, f"run-page-{tag}")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        mia.find_element("id", "timeline").screenshot(str(ARTIFACTS / f"run-timeline-{tag}.png"))

    approval = done.approvals[-1]
    assert approval.principal == {
        "id": "mia@example.com",
        "display_name": "mia@example.com",
        "roles": ["engineering_manager", "staff"],
        "via": "proxy",
    }
    assert done.output["approval"] == {"approved_by": "mia@example.com"}
    assert os.path.getsize(ARTIFACTS / f"run-timeline-{tag}.png") > 10_000
