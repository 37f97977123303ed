"""``rubot demo``: the conference-travel reference app end to end, on a machine with no servers and no API key.

The demo builds the embedded default deployment in a folder of its own (SQLite database, ``filesystem://``
broker; database and broker settings from the environment are ignored), migrates it, starts a real Celery
worker on threads in this process and a local HTTP server with the seeded conference pages (so the fetch tool
really downloads pages over loopback), then launches ``ConferenceTravelApprovalOperation`` twice, exactly as
DESIGN.md §3 does:

1. emp_42 to Rails World, within budget: the review completes and is auto-approvable.
2. emp_7 to a meetup whose page the demo serves itself, over budget and with a non-refundable ticket: the
   review is not auto-approvable, the manual workflow parks for an engineering manager, the demo approves it
   as ``manager@example.com`` and the run completes.

Each step is printed as it completes (the demo follows the runs' event trails in SQL while the operation
waits), then every run's full trail, status and output. :func:`run_demo` returns whether both scenarios
ended as expected.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pipeline
from pipeline import runtime
from pipeline.embedded import inprocess
from pipeline.errors import RubotError
from pipeline.runs import Run
from pipeline.settings import Settings
from pipeline.store import migrate
from rubot_app.config.settings import load
from rubot_app.scripts import output
from rubot_app.scripts.progress import Echo, Follower, follow

MARKER = ".rubot-demo"
APPROVER = "manager@example.com"
APPROVAL_PAYLOAD = {"approved_budget_cents": 65_000, "note": "One-off exception: first conference this year."}
SCENARIO_TIMEOUT = 60.0
WORKER_THREADS = 4
REVIEW, MANUAL = "ConferenceTravelReviewWorkflow", "ConferenceTravelManualApprovalWorkflow"

LOCAL_PAGE_PATH = "/local/rails-edge-meetup"
LOCAL_PAGE = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Rails Edge Meetup 2025 | Lisbon</title></head>
<body>
  <h1>Rails Edge Meetup 2025</h1>
  <p>One day for people building web applications with Ruby on Rails: web development talks in the morning,
     hands-on workshops in the afternoon.</p>
  <h2>Agenda</h2>
  <ul>
    <li>Ruby 3.4 for everyday Rails code</li>
    <li>Testing Hotwire front ends without flaky system tests</li>
    <li>Workshop: upgrading a Rails 6 app to Rails 8</li>
  </ul>
  <h2>Tickets</h2>
  <p>Workshop tickets include lunch. All tickets are non-refundable.</p>
</body>
</html>
"""


class DemoFailure(Exception):
    """The demo could not run or a scenario did not end as expected; the message says why."""


@dataclass(frozen=True)
class Scenario:
    """One launch of the operation and the path it is expected to take."""

    number: int
    title: str
    input: dict[str, Any]
    manual: bool

    @property
    def subject(self) -> dict[str, str]:
        # Every run the operation starts carries the subject, which is how the demo finds them while waiting.
        return {"type": "travel_request", "id": f"demo-{self.number}"}


def scenarios(local_page_url: str) -> list[Scenario]:
    return [
        Scenario(
            1,
            "auto-approved: emp_42 to Rails World, within budget",
            {
                "employee_id": "emp_42",
                "conference_name": "Rails World",
                "conference_url": "https://rubyonrails.org/world",
                "estimated_cost_cents": 132_500,
            },
            manual=False,
        ),
        Scenario(
            2,
            "manual approval: emp_7 to the demo's own meetup page, over budget",
            {
                "employee_id": "emp_7",
                "conference_name": "Rails Edge Meetup",
                "conference_url": local_page_url,
                "estimated_cost_cents": 65_000,
            },
            manual=True,
        ),
    ]


# --- setup ------------------------------------------------------------------------------------------------


def prepare_home(home: Path) -> Path:
    """Wipe and recreate the demo folder, refusing to delete a folder the demo did not create."""
    home = home.expanduser().resolve()
    if home.exists():
        if not home.is_dir():
            raise DemoFailure(f"{home} exists and is not a folder")
        if any(home.iterdir()) and not (home / MARKER).exists():
            raise DemoFailure(
                f"refusing to wipe {home}: it is not empty and was not created by `rubot demo` "
                f"(no {MARKER} file); pass --home with a new or empty folder"
            )
        shutil.rmtree(home)
    home.mkdir(parents=True)
    (home / MARKER).write_text("Created by `rubot demo`, which wipes this folder every time it starts.\n")
    return home


def demo_settings(home: Path) -> Settings:
    """The embedded default under ``home``; no ``RUBOT_*`` variable from the environment applies."""
    return load(
        {
            "RUBOT_HOME": str(home),
            "RUBOT_WORKFLOW_MODULES": "rubot_app.agents.conference_travel",
            "RUBOT_MODEL_PROVIDER": "offline",
            "RUBOT_LOG_LEVEL": "WARNING",
        }
    )


def model_description(environ: Mapping[str, str]) -> str:
    if environ.get("ANTHROPIC_API_KEY"):
        return (
            "offline deterministic model (the demo always runs offline so its outcome is reproducible; "
            "`rubot worker` uses Anthropic because ANTHROPIC_API_KEY is set)"
        )
    return "offline deterministic model (no ANTHROPIC_API_KEY)"


@contextmanager
def patched_environ(**values: str) -> Iterator[None]:
    """Set environment variables for the demo's duration (the fetch tool reads them at call time)."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# --- step summaries ---------------------------------------------------------------------------------------


def money(cents: Any) -> str:
    return f"${cents / 100:,.2f}" if isinstance(cents, int) else "?"


def _yes(flag: Any) -> str:
    return "yes" if flag else "no"


def summarize_step(step: str, result: Any) -> str:
    """One line about a step's result, in the reference app's terms; generic JSON for anything else."""
    if not isinstance(result, dict):
        return output.compact(result)
    if step == "policy":
        return (
            f"budget {money(result.get('budget_limit_cents'))} for an estimate of "
            f"{money(result.get('estimated_cost_cents'))}; allowed topics: "
            f"{', '.join(result.get('allowed_topics', []))}"
        )
    if step == "conference_site":
        from rubot_app.tools.website import route

        url = result.get("conference_url", "")
        return (
            f'"{output.clip(result.get("page_title", ""), 48)}", {len(result.get("page_text", "")):,} chars '
            f"of text, fetched from {route(url).url}"
        )
    if step == "conference_review":
        risks = result.get("risks") or []
        verdict = "fits" if result.get("content_matches_policy") else "does not fit"
        return (
            f"{verdict} the policy, confidence {result.get('confidence_score', 0):.2f}, "
            f"{len(result.get('matched_topics', []))} topics matched, risks: "
            f"{'; '.join(risks) if risks else 'none'}"
        )
    if "auto_approvable" in result:
        text = (
            f"within budget: {_yes(result.get('within_budget'))}, "
            f"auto-approvable: {_yes(result.get('auto_approvable'))}"
        )
        if step == "hydrate_review":
            return f"review loaded ({text}, {len(result.get('risks') or [])} risk(s))"
        if "approval" in result:
            text += f", approval payload: {output.compact(result['approval'], 60)}"
        return text
    return output.compact(result)


# --- scenarios --------------------------------------------------------------------------------------------


def play(scenario: Scenario, echo: Echo) -> None:
    """Launch the operation for ``scenario``, approve if it parks, and check where it ends; raises on surprise."""
    echo("")
    echo(f"== Scenario {scenario.number}: {scenario.title} ==")
    follower = Follower(scenario.subject, echo, summarize=summarize_step)
    try:
        run = drive(scenario, follower, echo)
    except (DemoFailure, RubotError):
        raise
    except Exception as exc:  # e.g. the operation tripping over a failed review: say so, in one line
        failed = [
            f"; {r.workflow} {r.id} failed: {(r.error or {}).get('message')}" for r in follower.runs() if r.failed
        ]
        raise DemoFailure(f"the operation raised {type(exc).__name__}: {exc}{''.join(failed)}") from exc
    finally:
        print_trails(follower.runs(), echo)
    check(scenario, run, follower.runs())
    echo("")
    echo(
        f"Scenario {scenario.number} ended as expected: {run.workflow} {run.status}, "
        f"auto_approvable={run.output['auto_approvable']}."
    )


def drive(scenario: Scenario, follower: Follower, echo: Echo) -> Run:
    """The §3 snippet: launch, and if the run waits for approval, approve it and wait for the end."""
    from rubot_app.agents.conference_travel import ConferenceTravelApprovalOperation

    echo(f"ConferenceTravelApprovalOperation.launch(input={output.compact(scenario.input, 200)})")
    run = follow(
        lambda: ConferenceTravelApprovalOperation.launch(input=scenario.input, subject=scenario.subject),
        follower,
        timeout=SCENARIO_TIMEOUT,
    )
    if not run.waiting_for_approval:
        return run
    approval = run.pending_approval
    if approval is None:
        raise DemoFailure(f"{run.id} is waiting for approval but has no pending approval")
    echo("")
    echo(f"{run.workflow} {run.id} is {run.status}.")
    echo(f"Pending approval {approval.id}: step {approval.step}, role {approval.role}")
    echo(f"  reason: {approval.reason}")
    echo(f'run.approve(approved_by="{APPROVER}", payload={output.compact(APPROVAL_PAYLOAD, 120)})')
    run.approve(approved_by=APPROVER, payload=APPROVAL_PAYLOAD)
    return follow(lambda: pipeline.wait(run, timeout=SCENARIO_TIMEOUT), follower, timeout=SCENARIO_TIMEOUT)


def print_trails(runs: list[Run], echo: Echo) -> None:
    """Every run's event trail, final status, and output or error."""
    for run in runs:
        echo("")
        echo(f"Event trail of {run.id} ({run.workflow}):")
        for line in output.event_lines(run.events):
            echo(line)
        echo(f"  status: {run.status}")
        title, value = ("error", run.error) if run.error else ("output", run.output)
        echo(f"  {title}:")
        for line in output.pretty(value, indent="    "):
            echo(line)


def check(scenario: Scenario, final: Run, runs: list[Run]) -> None:
    """Raise ``DemoFailure`` unless the scenario took its expected path."""
    problems = []
    expected_workflow = MANUAL if scenario.manual else REVIEW
    if final.workflow != expected_workflow:
        problems.append(f"the operation returned a {final.workflow} run, expected {expected_workflow}")
    if not final.completed:
        problems.append(f"{final.id} ended {final.status}: {output.compact(final.error)}")
    elif final.output.get("auto_approvable") is not (not scenario.manual):
        problems.append(f"auto_approvable is {final.output.get('auto_approvable')}")
    if scenario.manual:
        decided = [a for a in final.approvals if a.status == "approved" and a.decided_by == APPROVER]
        if not decided:
            problems.append(f"{final.id} has no approval decided by {APPROVER}")
        if final.completed and final.output.get("approval") != APPROVAL_PAYLOAD:
            problems.append("the approval payload did not reach the output")
        reviews = [r for r in runs if r.workflow == REVIEW]
        if not reviews or not reviews[0].completed or reviews[0].output.get("auto_approvable"):
            problems.append("the review run did not complete as not auto-approvable")
    if problems:
        raise DemoFailure(f"scenario {scenario.number}: " + "; ".join(problems))


# --- entry point ------------------------------------------------------------------------------------------


def run_demo(home: Path, *, echo: Echo = print) -> bool:
    """Run both scenarios in a fresh embedded deployment under ``home``; True if both ended as expected."""
    from pipeline.hosting import make_app
    from rubot_app.tools.sites import serve_sites

    started = time.monotonic()
    passed = 0
    all_scenarios: list[Scenario] = []
    try:
        home = prepare_home(home)
        settings = demo_settings(home)
        app = make_app(settings, name="rubot-demo")
        rt = runtime.of_app(app)
        with ExitStack() as stack:
            stack.callback(rt.db.dispose)
            revision = migrate.upgrade(rt.db)
            sites = stack.enter_context(serve_sites())
            local_url = sites.add_page(LOCAL_PAGE_PATH, LOCAL_PAGE)
            stack.enter_context(patched_environ(RUBOT_SITE_MIRROR=sites.url, RUBOT_SITES="seeded"))
            stack.callback(runtime.install, runtime.install(rt))
            stack.enter_context(inprocess.worker(app, concurrency=WORKER_THREADS, loglevel="WARNING"))
            echo("Rubot demo: the conference-travel reference app of DESIGN.md §3, on this machine only.")
            for line in output.key_values(
                [
                    ("home", f"{home} (wiped)"),
                    ("database", f"{settings.database_url} (migrated to revision {revision})"),
                    (
                        "broker",
                        f"{settings.broker_url} queue {settings.queue!r}; in-process Celery worker, "
                        f"{WORKER_THREADS} threads",
                    ),
                    (
                        "websites",
                        f"{sites.url} serves the seeded conference pages (RUBOT_SITE_MIRROR) "
                        f"and the demo's page {LOCAL_PAGE_PATH}",
                    ),
                    ("model", model_description(os.environ)),
                ],
                indent="  ",
            ):
                echo(line)
            all_scenarios = scenarios(local_url)
            for scenario in all_scenarios:
                try:
                    play(scenario, echo)
                    passed += 1
                except (DemoFailure, RubotError) as exc:
                    echo("")
                    echo(f"Scenario {scenario.number} FAILED: {exc}")
            echo("")
            echo("Stopping the worker and the site server...")
    except (DemoFailure, RubotError) as exc:
        echo(f"Demo failed: {exc}")
        return False
    total = len(all_scenarios)
    echo(f"Demo finished in {time.monotonic() - started:.1f}s: {passed} of {total} scenarios ended as expected.")
    if passed == total:
        echo(f"Inspect the runs: RUBOT_DATABASE_URL={settings.database_url} rubot runs   (then: rubot show RUN_ID)")
    return passed == total
