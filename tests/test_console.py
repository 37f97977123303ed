"""The console over 10,000 runs: bounded SQL per page, headless Chromium screenshots on a laptop-sized window,
and the operator's actions (retry, reconcile) as POSTs with CSRF by a principal holding the operator role.

Screenshots land in ``tests/artifacts/`` (console-*.png).
"""

from __future__ import annotations

import html
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import event, text

import pipeline
from pipeline import runtime as rubot_runtime
from pipeline.definitions.graph import mermaid
from pipeline.engine import transitions
from pipeline.store import queries
from pipeline.testing import reply
from pipeline.web import create_app
from rubot_app.scripts import cli
from rubot_app.scripts.seed import seed
from tests import agent_workflows as aw
from tests import engine_workflows as ew
from tests import stacks, webkit, workflows
from tests.conftest import _production
from tests.test_agent_loop import SUPPORT, final
from tests.test_browser_approvals import ARTIFACTS, chromium

LAPTOP = (1366, 768)
#: The most SQL statements any console page may run, whatever the number of runs.
MAX_QUERIES = {"dashboard": 16, "runs": 4, "runs-filtered": 4, "run": 6, "workflow": 12, "metrics": 14}


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[stacks.Stack]:
    """Given a Postgres database holding 10,000 seeded runs (bulk inserts; no worker)."""
    database = f"rubot_test_{uuid.uuid4().hex[:8]}"
    current = _production(tmp_path_factory.mktemp("console"), database)
    current.migrate()
    previous = rubot_runtime.install(current.runtime)
    assert seed(current.runtime, 10_000, days=14, seed=3).runs == 10_000
    yield current
    rubot_runtime.install(previous)
    current.runtime.db.dispose()
    stacks.drop_postgres_database(database)


@contextmanager
def counted(stack: stacks.Stack) -> Iterator[list[str]]:
    """Every SQL query the stack's engine executes inside the block (transaction control left out)."""
    statements: list[str] = []

    def count(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        if not statement.lstrip().upper().startswith(("BEGIN", "COMMIT", "ROLLBACK")):  # SQLite's BEGIN IMMEDIATE
            statements.append(statement)

    engine = stack.runtime.db.engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", count)


def agent_run(stack: stacks.Stack) -> str:
    """A seeded SupportDesk run that waits for approval after several agent turns, one with a stored result."""
    with stack.runtime.db.engine.connect() as c:
        return c.execute(
            text(
                "SELECT r.id FROM rubot_runs r JOIN rubot_blobs b ON b.run_id = r.id "
                "WHERE r.workflow = 'SupportDesk' ORDER BY r.created_at DESC LIMIT 1"
            )
        ).scalar_one()


def pages(stack: stacks.Stack) -> dict[str, str]:
    return {
        "dashboard": "/dashboard",
        "runs": "/runs",
        "runs-filtered": "/runs?status=failed&workflow=SupportDesk&user=u_bo&since=2000-01-01&page=2&per_page=20",
        "run": f"/runs/{agent_run(stack)}",
        "workflow": "/workflows/ConferenceTravelManualApprovalWorkflow",
        "metrics": "/metrics",
    }


@pytest.fixture(scope="module")
def big_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[stacks.Stack]:
    """The same 10,000 runs on the embedded default (SQLite)."""
    current = stacks.embedded_stack(tmp_path_factory.mktemp("console-sqlite"))
    current.migrate()
    assert seed(current.runtime, 10_000, days=14, seed=3).runs == 10_000
    yield current
    current.runtime.db.dispose()


def test_every_console_page_renders_with_a_bounded_number_of_queries_over_ten_thousand_runs(big):
    assert_bounded_pages(big)


def test_the_same_bounds_hold_on_the_embedded_default(big_sqlite):
    previous = rubot_runtime.install(big_sqlite.runtime)
    try:
        assert_bounded_pages(big_sqlite)
    finally:
        rubot_runtime.install(previous)


def assert_bounded_pages(big: stacks.Stack) -> None:
    app = create_app(big.runtime, secret_key=webkit.SECRET_KEY)
    client = app.test_client()
    for name, path in pages(big).items():
        # When the page is fetched
        with counted(big) as statements:
            page = client.get(path)
        # Then it renders, with no more statements than its bound (the listener sees every one)
        assert page.status_code == 200, (name, page.get_data(as_text=True)[:400])
        assert 0 < len(statements) <= MAX_QUERIES[name], (name, len(statements), statements)

    # And a run page reloads itself while its run is running, not once it finished
    with big.runtime.db.engine.connect() as c:
        running, done = (
            c.execute(text("SELECT id FROM rubot_runs WHERE status = :s LIMIT 1"), {"s": s}).scalar_one()
            for s in ("running", "completed")
        )
    assert 'http-equiv="refresh"' in client.get(f"/runs/{running}").get_data(as_text=True)
    assert 'http-equiv="refresh"' not in client.get(f"/runs/{done}").get_data(as_text=True)

    # And the runs list is paginated in SQL: 10,000 runs, 50 on a page, and a count of them all
    listing = client.get("/runs").get_data(as_text=True)
    assert "10,000 runs; page 1 of 200" in listing
    assert listing.count('<a href="/runs/seed') == 50


def test_the_console_in_headless_chromium_on_a_laptop_screen(big, browsers):
    # Given the console behind the identity proxy, as an operator
    app = create_app(big.runtime, secret_key=webkit.SECRET_KEY, authenticator=webkit.proxy_authenticator())
    run_id = agent_run(big)
    with (
        webkit.served(app) as upstream,
        webkit.IdentityProxy(upstream, "ops@example.com", roles=("rubot_operator",)) as proxy,
    ):
        browser = browsers("console")
        browser.set_window_size(*LAPTOP)
        shots = {
            "console-dashboard": "/dashboard",
            "console-runs": "/runs?workflow=SupportDesk",
            "console-run-timeline": f"/runs/{run_id}",
            "console-workflow-graph": "/workflows/ReviewedSupportWorkflow",
        }
        for name, path in shots.items():
            # When each page is opened
            browser.get(proxy.url + path)
            if name == "console-workflow-graph":
                # Mermaid (served by Rubot, no CDN) has drawn the graph
                webkit_wait(browser, "document.querySelector('#graph svg') !== null")
                labels = browser.find_element("id", "graph").text
                assert "desk · agent support_agent" in labels and "review · approval by support_lead" in labels
            # Then nothing is wider than a laptop screen (no horizontal scrolling)
            width = browser.execute_script("return document.documentElement.scrollWidth")
            assert width <= browser.execute_script("return document.documentElement.clientWidth"), (name, width)
            height = browser.execute_script("return document.documentElement.scrollHeight")
            browser.set_window_size(LAPTOP[0], min(max(height + 120, LAPTOP[1]), 5000))
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            browser.save_screenshot(str(ARTIFACTS / f"{name}.png"))
            browser.set_window_size(*LAPTOP)

        # The run page: numbered timeline, step durations, transcript with tool calls, tokens, cost, stored result
        browser.get(f"{proxy.url}/runs/{run_id}")
        numbers = [int(td.text) for td in browser.find_elements("css selector", "#timeline td.number")]
        assert numbers == list(range(1, len(numbers) + 1))
        assert browser.find_elements("css selector", "#steps td.duration")
        turns = browser.find_elements("css selector", "#transcript .turn")
        assert turns and all("cache read" in t.text and "$" in t.text for t in turns)
        assert browser.find_elements("css selector", "#transcript .call code.arguments")
        stored = browser.find_element("css selector", "#transcript a.stored")
        stored.click()
        assert '"status": "delivered"' in browser.find_element("id", "stored-content").text


def webkit_wait(browser, script: str, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, timeout).until(lambda b: b.execute_script(f"return {script}"))


@pytest.fixture
def browsers(tmp_path: Path) -> Iterator:  # type: ignore[type-arg]
    opened = []

    def open_browser(name: str):  # type: ignore[no-untyped-def]
        driver = chromium(tmp_path / f"profile-{name}")
        opened.append(driver)
        return driver

    yield open_browser
    for driver in opened:
        driver.quit()


# --- actions -------------------------------------------------------------------------------------------------


def operator_client(stack, user: str = "ops@example.com", roles: tuple[str, ...] = ("rubot_operator",)):  # type: ignore[no-untyped-def]
    app = create_app(stack.runtime, secret_key=webkit.SECRET_KEY, authenticator=webkit.proxy_authenticator())
    return webkit.signed_in(app.test_client(), user, roles=roles)


def dead_letter(sink: Path) -> str:
    """A run of ApprovalWorkflow set aside as dead_letter by the state machine (as the sweeper would)."""
    run = pipeline.run(workflows.ApprovalWorkflow, input={"sink": str(sink)}, timeout=60)
    with rubot_runtime.current().db.transaction() as s:
        row = queries.lock_run(s, run.id)
        transitions.set_aside(s, row, "dead_letter", {"reason": "too_many_recoveries", "message": "kept crashing"})
    return run.id


def test_an_operator_retries_a_dead_letter_run_from_its_page(stack, sink):
    run_id = dead_letter(sink)
    client = operator_client(stack)
    page = client.get(f"/runs/{run_id}").get_data(as_text=True)
    assert f"/runs/{run_id}/retry" in page
    token = webkit.CSRF.search(page).group(1)

    # A POST without the CSRF token changes nothing
    assert client.post(f"/runs/{run_id}/retry", data={}).status_code == 400
    # Someone without the operator role is refused
    other = operator_client(stack, "eve@example.com", roles=("engineer",))
    other_token = webkit.csrf_token(other, f"/runs/{run_id}")
    assert other.post(f"/runs/{run_id}/retry", data={"csrf_token": other_token}).status_code == 403
    assert pipeline.get_run(run_id).status == "dead_letter"

    # When the operator retries it
    answer = client.post(f"/runs/{run_id}/retry", data={"csrf_token": token})
    assert answer.status_code == 303
    # Then it runs again from its last recorded point (and parks on its approval), recorded as theirs
    run = pipeline.wait(pipeline.get_run(run_id), timeout=60)
    assert run.status == "waiting_for_approval"
    retried = [e for e in run.events if e.type == "run.retried"]
    assert [e.data["by"] for e in retried] == ["ops@example.com"]
    assert "was retried by ops@example.com" in client.get(f"/runs/{run_id}").get_data(as_text=True)


def test_an_operator_reconciles_an_interrupted_side_effect_with_the_outcome_form(stack, sink):
    run = pipeline.run(ew.SlowTransferWorkflow, input={"sink": str(sink), "seconds": 5}, timeout=60)
    assert run.status == "needs_reconciliation"
    client = operator_client(stack)
    page = client.get(f"/runs/{run.id}").get_data(as_text=True)
    assert 'id="reconcile-form"' in page
    token = webkit.CSRF.search(page).group(1)

    # A form that does not say whether it happened is a clear 400 and changes nothing
    bad = client.post(f"/runs/{run.id}/reconcile", data={"csrf_token": token, "result": "{}"})
    assert bad.status_code == 400
    bad_json = client.post(f"/runs/{run.id}/reconcile", data={"csrf_token": token, "happened": "yes", "result": "{"})
    assert bad_json.status_code == 400 and "not valid JSON" in bad_json.get_data(as_text=True)
    assert pipeline.get_run(run.id).status == "needs_reconciliation"

    # When the operator records that the transfer happened, with its result
    answer = client.post(
        f"/runs/{run.id}/reconcile",
        data={"csrf_token": token, "happened": "yes", "result": '{"waited": 5.0}', "comment": "bank says yes"},
    )
    assert answer.status_code == 303
    # Then the run goes on from there and completes with that outcome
    done = pipeline.wait(pipeline.get_run(run.id), timeout=60)
    assert done.status == "completed", done.error
    assert done.output == {"waited": 5.0}
    [reconciled] = [e for e in done.events if e.type == "run.reconciled"]
    assert reconciled.data["by"] == "ops@example.com" and reconciled.data["happened"] is True
    assert re.search(r"reconciled by ops@example.com", client.get(f"/runs/{run.id}").get_data(as_text=True))


def test_a_real_agent_runs_page_shows_its_transcript_and_a_timeline_numbered_from_one(stack, model, sink):
    # Given a run whose agent called a tool, then answered (after other runs' events, so ids do not start at 1)
    assert pipeline.run(workflows.LinearWorkflow, input={"sink": str(sink), "n": 1}, timeout=60).completed
    model.add(
        reply("Let me check.", tool_uses=[("lookup_order", {"order_id": 7})], usage={"input_tokens": 300}),
        final("delivered; no refund"),
    )
    run = pipeline.run(aw.SupportWorkflow, input=SUPPORT, timeout=60)
    assert run.status == "completed", run.error

    # When its page is opened
    page = html.unescape(
        create_app(stack.runtime, secret_key="k").test_client().get(f"/runs/{run.id}").get_data(as_text=True)
    )

    # Then the timeline is numbered 1..n for this run, whatever the global event ids
    numbers = [int(n) for n in re.findall(r'<td class="num number">(\d+)</td>', page)]
    assert numbers == list(range(1, len(run.events) + 1))
    # and the transcript shows each turn's text, the tool call's arguments and result, tokens and cost
    assert 'id="turn-desk-1"' in page and 'id="turn-desk-2"' in page
    assert "Let me check." in page
    assert '<code class="arguments">{"order_id": 7}</code>' in page
    assert '"status": "delivered"' in page
    assert "tokens in 300" in page and "cache read 0" in page
    assert "refresh" not in page.split("</head>")[0]  # a finished run does not reload


def test_rubot_graph_prints_what_the_workflow_page_draws(stack):
    result = CliRunner().invoke(cli.main, ["graph", "ApprovalWorkflow"])
    assert result.exit_code == 0, result.output
    assert result.stdout == mermaid(workflows.ApprovalWorkflow)
    assert result.stdout.startswith("flowchart TD\n") and "approval by manager" in result.stdout
    page = create_app(stack.runtime, secret_key="k").test_client().get("/workflows/ApprovalWorkflow")
    assert html.unescape(page.get_data(as_text=True)).count(result.stdout.strip()) == 1
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]

    unknown = CliRunner().invoke(cli.main, ["graph", "NoSuchWorkflow"])
    assert unknown.exit_code == 2 and "no workflow named 'NoSuchWorkflow'" in unknown.stderr
    assert "Traceback" not in unknown.output
    assert create_app(stack.runtime, secret_key="k").test_client().get("/workflows/NoSuchWorkflow").status_code == 404
