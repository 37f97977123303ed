"""The ``rubot`` command line: run commands over both stacks, process commands, errors and the demo."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy.engine import make_url

import pipeline
from pipeline import runtime as rubot_runtime
from pipeline.hosting import make_app
from pipeline.store import migrate
from rubot_app.config.settings import load
from rubot_app.scripts import cli, demo, output
from tests import stacks, workflows
from tests.conftest import eventually, sink_lines

ROOT = Path(__file__).resolve().parent.parent


def rubot(*args: str) -> Result:
    return CliRunner().invoke(cli.main, list(args))


def handled_error(result: Result) -> bool:
    """The command failed on purpose: an exit status, a message on stderr, no traceback."""
    return (
        result.exit_code != 0
        and isinstance(result.exception, SystemExit)
        and result.stderr.startswith("rubot: error: ")
        and "Traceback" not in result.output
    )


def parked(sink: Path) -> pipeline.Run:
    run = pipeline.run(workflows.ApprovalWorkflow, input={"sink": str(sink)}, timeout=60)
    assert run.waiting_for_approval, run.error
    return run


# --- run commands on both stacks --------------------------------------------------------------------------


def test_migrate_reports_the_head_revision(stack):
    # Given a migrated stack / When `rubot migrate` runs again
    result = rubot("migrate")
    # Then it succeeds and says which database (password hidden) is at which revision
    assert result.exit_code == 0, result.output
    assert f"revision {migrate.head_revision()} (head)" in result.stdout
    assert make_url(stack.settings.database_url).render_as_string(hide_password=True) in result.stdout


def test_runs_lists_and_filters(stack, sink):
    # Given a parked run and a completed one
    waiting = parked(sink)
    done = pipeline.run(workflows.LinearWorkflow, input={"sink": str(sink), "n": 2}, timeout=60)

    # When runs are listed by status and workflow
    parked_list = rubot("runs", "--status", "waiting_for_approval", "--workflow", "ApprovalWorkflow")
    completed_list = rubot("runs", "--status", "completed", "--limit", "500")

    # Then each listing shows the right run in an aligned table with status and cost
    assert parked_list.exit_code == 0, parked_list.output
    header, rule, *rows = parked_list.stdout.splitlines()
    assert header.split() == ["id", "workflow", "status", "created", "cost", "/", "tokens"]
    assert any(row.startswith(waiting.id) and "waiting_for_approval" in row and "$0.0000" in row for row in rows)
    assert done.id not in parked_list.stdout
    assert done.id in completed_list.stdout and waiting.id not in completed_list.stdout


def test_runs_rejects_an_unknown_status(stack):
    result = rubot("runs", "--status", "sleeping")
    assert result.exit_code == 2 and "sleeping" in result.stderr


def test_show_prints_data_approvals_ledger_and_trail(stack, sink):
    # Given a run parked at its approval step
    run = parked(sink)

    # When it is shown
    result = rubot("show", run.id)

    # Then status, input, state, the pending approval, the ledger and the event trail are all there
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert f"run       {run.id}" in text and "status    waiting_for_approval" in text
    assert str(sink) in text  # the input
    assert '"prepare"' in text  # the state entry of the first step
    assert "(pending: manager - Needs a manager.)" in text
    ledger = text.split("ledger:")[1].split("events:")[0]
    assert re.search(r"^\s+prepare\s+tool\s", ledger, re.MULTILINE), ledger
    for event in ("run.enqueued", "step.completed", "approval.requested", "run.waiting_for_approval"):
        assert event in text
    assert "task_id" not in text  # plumbing stays out of the short trail


def test_approve_records_the_decision_and_the_run_resumes(stack, sink):
    # Given a parked run
    run = parked(sink)

    # When it is approved from the command line, waiting for the run
    result = rubot(
        "approve", run.id, "--by", "lead@example.com", "--comment", "fine", "--payload", '{"limit": 500}', "--wait"
    )

    # Then the decision is recorded with its comment and payload and the run completes
    assert result.exit_code == 0, result.output
    assert "Approved apr_" in result.stdout and "(manager, manager)" in result.stdout
    assert "Run is now completed." in result.stdout
    final = pipeline.get_run(run.id)
    assert final.completed
    approval = final.approvals[-1]
    assert (approval.decided_by, approval.comment, approval.decision_payload) == (
        "lead@example.com",
        "fine",
        {"limit": 500},
    )
    assert sink_lines(sink)[-1].endswith("after")


def test_approving_twice_is_a_clear_error(stack, sink):
    # Given a run approved once
    run = parked(sink)
    assert rubot("approve", run.id, "--by", "lead@example.com").exit_code == 0

    # When it is approved again
    again = rubot("approve", run.id, "--by", "someone@example.com")

    # Then the command fails with one line naming who decided, and nothing changes
    assert handled_error(again), again.output
    assert again.exit_code == cli.RUN_ERROR
    assert "already approved by lead@example.com" in again.stderr
    assert pipeline.get_run(run.id).approvals[-1].decided_by == "lead@example.com"


def test_reject_fails_the_run(stack, sink):
    run = parked(sink)
    result = rubot("reject", run.id, "--by", "lead@example.com", "--comment", "no budget")
    assert result.exit_code == 0, result.output
    assert "Rejected apr_" in result.stdout and "Run is now failed." in result.stdout
    final = pipeline.get_run(run.id)
    assert final.failed and final.error["reason"] == "rejected" and final.error["comment"] == "no budget"


def test_request_changes_records_the_decision(stack, sink):
    run = parked(sink)
    result = rubot("request-changes", run.id, "--by", "lead@example.com", "--comment", "cheaper hotel")
    assert result.exit_code == 0, result.output
    approval = pipeline.get_run(run.id).approvals[-1]
    assert (approval.status, approval.comment) == ("changes_requested", "cheaper hotel")


def test_cancel_then_cancel_again(stack, sink):
    # Given a parked run / When it is cancelled
    run = parked(sink)
    result = rubot("cancel", run.id, "--by", "ops@example.com", "--reason", "trip called off")
    # Then it is cancelled with the reason, and a second cancel is a clear error
    assert result.exit_code == 0, result.output
    assert "was waiting_for_approval" in result.stdout and "now cancelled" in result.stdout
    final = pipeline.get_run(run.id)
    assert final.cancelled and final.error["message"] == "trip called off"
    again = rubot("cancel", run.id)
    assert handled_error(again) and "already cancelled" in again.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["show", "run_nope"],
        ["approve", "run_nope", "--by", "x"],
        ["reject", "run_nope", "--by", "x"],
        ["cancel", "run_nope"],
    ],
)
def test_unknown_run_is_a_clear_error(stack, args):
    result = rubot(*args)
    assert handled_error(result), result.output
    assert result.stderr.strip() == "rubot: error: no run with id 'run_nope'"


def test_approving_a_run_that_is_not_waiting_is_a_clear_error(stack, sink):
    done = pipeline.run(workflows.LinearWorkflow, input={"sink": str(sink), "n": 1}, timeout=60)
    result = rubot("approve", done.id, "--by", "x")
    assert handled_error(result) and "has no pending approval" in result.stderr


def test_bad_payload_is_a_usage_error(stack, sink):
    run = parked(sink)
    result = rubot("approve", run.id, "--by", "x", "--payload", "{oops")
    assert result.exit_code == 2 and "not valid JSON" in result.stderr
    assert pipeline.get_run(run.id).waiting_for_approval


def test_approve_needs_an_identity(stack, sink):
    result = rubot("approve", "run_x")
    assert result.exit_code == 2 and "--by" in result.stderr


# --- setup errors ---------------------------------------------------------------------------------------


@pytest.fixture
def unmigrated(tmp_path):
    """An embedded stack whose database was never migrated, installed for the test."""
    fresh = stacks.embedded_stack(tmp_path)
    previous = rubot_runtime.install(fresh.runtime)
    yield fresh
    rubot_runtime.install(previous)
    fresh.runtime.db.dispose()


def test_commands_on_an_unmigrated_database_say_to_migrate(unmigrated):
    # Given a database with no Rubot tables / When runs are listed
    result = rubot("runs")
    # Then the command names the fix, with the setup exit status
    assert handled_error(result), result.output
    assert result.exit_code == cli.SETUP_ERROR and "run `rubot migrate`" in result.stderr

    # And `rubot migrate` fixes it
    assert rubot("migrate").exit_code == 0
    assert rubot("runs").stdout.strip() == "No runs match."


def test_an_unreachable_database_is_one_line(tmp_path):
    # Given a deployment whose Postgres is not listening / When runs are listed
    settings = load({"RUBOT_HOME": str(tmp_path), "RUBOT_DATABASE_URL": "postgresql://rubot@127.0.0.1:1/rubot"})
    previous = rubot_runtime.install(rubot_runtime.of_app(make_app(settings, name="rubot-unreachable")))
    try:
        result = rubot("runs")
    finally:
        rubot_runtime.install(previous)
    # Then the command says so in one line
    assert handled_error(result), result.output
    assert result.exit_code == cli.SETUP_ERROR and "cannot use the database" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# --- process commands -----------------------------------------------------------------------------------


@pytest.fixture
def exec_calls(monkeypatch, tmp_path):
    """Record what the process commands would exec, under a known environment."""
    calls: list[list[str]] = []
    monkeypatch.setattr(cli, "exec_command", lambda argv: calls.append(argv))
    for name in [k for k in os.environ if k.startswith("RUBOT_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("RUBOT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RUBOT_QUEUE", "rubot-cli-test")
    return calls


def test_worker_execs_celery_on_the_configured_queue(exec_calls):
    result = rubot("worker", "--concurrency", "3", "--pool", "threads", "-l", "WARNING", "--without-gossip")
    assert result.exit_code == 0, result.output
    assert exec_calls == [
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "rubot_app.tasks.app",
            "worker",
            "-Q",
            "rubot-cli-test",
            "--loglevel=WARNING",
            "--concurrency=3",
            "--pool=threads",
            "--without-gossip",
        ]
    ]


def test_beat_keeps_its_schedule_under_rubot_home(exec_calls, tmp_path):
    result = rubot("beat")
    assert result.exit_code == 0, result.output
    schedule = tmp_path / "home" / "celerybeat-schedule"
    assert exec_calls == [
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "rubot_app.tasks.app",
            "beat",
            f"--schedule={schedule}",
            "--loglevel=INFO",
        ]
    ]
    assert schedule.parent.is_dir()


def test_web_execs_gunicorn_on_the_app_factory(exec_calls):
    result = rubot("web", "--port", "8123", "--workers", "2")
    assert result.exit_code == 0, result.output
    assert exec_calls == [
        [
            sys.executable,
            "-m",
            "gunicorn",
            "rubot_app.scripts.web:create()",
            "--bind",
            "127.0.0.1:8123",
            "--workers",
            "2",
        ]
    ]


def test_flower_listens_on_loopback_by_default(exec_calls):
    result = rubot("flower", "--port", "5566")
    assert result.exit_code == 0, result.output
    assert exec_calls == [
        [sys.executable, "-m", "celery", "-A", "rubot_app.tasks.app", "flower", "--address=127.0.0.1", "--port=5566"]
    ]


def test_flower_refuses_a_public_address_without_basic_auth(exec_calls, monkeypatch):
    monkeypatch.delenv("FLOWER_BASIC_AUTH", raising=False)
    refused = rubot("flower", "--address", "0.0.0.0")
    assert handled_error(refused) and "FLOWER_BASIC_AUTH" in refused.stderr and exec_calls == []

    monkeypatch.setenv("FLOWER_BASIC_AUTH", "ops:secret")
    assert rubot("flower", "--address", "0.0.0.0").exit_code == 0
    assert "ops:secret" not in " ".join(exec_calls[0])  # the password stays out of the process list


def test_rubot_worker_consumes_the_queue(tmp_path):
    # Given a fresh embedded deployment with no worker
    fresh = stacks.embedded_stack(tmp_path)
    fresh.migrate()
    log = tmp_path / "worker.log"
    sink = tmp_path / "sink.log"
    sink.touch()
    command = [
        sys.executable,
        "-m",
        "rubot_app.scripts.cli",
        "worker",
        "--concurrency",
        "2",
        "--pool",
        "threads",
        "--without-gossip",
        "--without-mingle",
        "-n",
        f"cli-{uuid.uuid4().hex[:6]}@%h",
    ]

    # When `rubot worker` runs as its own process
    with log.open("wb") as handle:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=fresh.subprocess_env(),
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    previous = rubot_runtime.install(fresh.runtime)
    try:
        eventually(
            lambda: " ready." in log.read_text(errors="replace") or process.poll() is not None,
            timeout=60,
            what="the worker to start",
        )
        assert process.poll() is None, log.read_text(errors="replace")
        run = pipeline.run(workflows.LinearWorkflow, input={"sink": str(sink), "n": 4}, timeout=60)
    finally:
        rubot_runtime.install(previous)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)
        fresh.runtime.db.dispose()

    # Then it executed the run's steps from the configured queue
    assert run.completed, run.error
    assert run.output["n"] == 8
    assert [line.split()[1] for line in sink_lines(sink)] == ["first", "second"]


# --- demo -------------------------------------------------------------------------------------------------


def demo_env() -> dict[str, str]:
    """This environment without any Rubot setting or API key, importing the project from its checkout."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("RUBOT_") and k not in ("ANTHROPIC_API_KEY", "PYTHONPATH")
    }
    env["PYTHONPATH"] = str(ROOT)
    return env


def test_demo_runs_both_paths_on_a_fresh_machine(tmp_path):
    # Given no Rubot configuration at all (and no API key)
    home = tmp_path / "demo"

    # When `rubot demo` runs
    done = subprocess.run(
        [sys.executable, "-m", "rubot_app.scripts.cli", "demo", "--home", str(home)],
        cwd=tmp_path,
        env=demo_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )

    # Then it exits 0 after the auto-approved path and the park / approve / complete path
    text = done.stdout
    assert done.returncode == 0, text + done.stderr
    assert "Traceback" not in done.stderr
    assert "offline deterministic model (no ANTHROPIC_API_KEY)" in text
    first, second = text.split("== Scenario 2")
    assert "auto-approvable: yes" in first and "-> completed" in first
    assert "conference_review  fits the policy, confidence 0.95" in first  # each step printed with its result
    assert "Scenario 1 ended as expected: ConferenceTravelReviewWorkflow completed, auto_approvable=True" in first
    waiting = second.index("-> waiting_for_approval")
    approved = second.index("approved by manager@example.com")
    completed = second.index("Scenario 2 ended as expected: ConferenceTravelManualApprovalWorkflow completed")
    assert waiting < approved < completed
    assert "role engineering_manager" in second and "Conference travel requires human approval." in second
    assert "/local/rails-edge-meetup" in second  # the demo's own page, fetched over loopback HTTP
    assert "2 of 2 scenarios ended as expected" in text
    assert (home / "rubot.sqlite3").exists()


# Scenario 1 expects the wrong path; scenario 2 names an employee with no policy, so its review run fails.
SURPRISES = """
import sys
from pathlib import Path
from rubot_app.scripts import demo
real = demo.scenarios
def surprising(url):
    first, second = real(url)
    return [demo.Scenario(1, "expects manual", first.input, manual=True),
            demo.Scenario(2, "unknown employee", {**second.input, "employee_id": "emp_404"}, manual=True)]
demo.scenarios = surprising
sys.exit(0 if demo.run_demo(Path(sys.argv[1])) else 1)
"""


def test_demo_exits_1_and_says_why_when_a_scenario_goes_wrong(tmp_path):
    # Given a demo whose scenarios do not end as expected
    # When it runs
    done = subprocess.run(
        [sys.executable, "-c", SURPRISES, str(tmp_path / "demo")],
        cwd=tmp_path,
        env=demo_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )

    # Then it exits 1, explains each failure in a line, shows the failed run's error, and still shuts down
    text = done.stdout
    assert done.returncode == 1, text + done.stderr
    assert "Scenario 1 FAILED: scenario 1: the operation returned a ConferenceTravelReviewWorkflow run" in text
    failure = next(line for line in text.splitlines() if line.startswith("Scenario 2 FAILED"))
    # (the operation routes a failed review: it returns that run, it does not raise)
    assert "the operation returned a ConferenceTravelReviewWorkflow run, expected ConferenceTravelManual" in failure
    assert re.search(r"run_\w+ ended failed: ", failure), failure
    assert "No travel policy found for employee 'emp_404'" in text  # the failed review's error, in its trail
    assert "0 of 2 scenarios ended as expected" in text
    assert "Traceback" not in done.stderr


def test_demo_ignores_database_and_broker_settings(monkeypatch, tmp_path):
    monkeypatch.setenv("RUBOT_DATABASE_URL", "postgresql://nobody@db.invalid/rubot")
    monkeypatch.setenv("RUBOT_BROKER_URL", "redis://broker.invalid:6379/0")
    settings = demo.demo_settings(tmp_path)
    assert settings.embedded and settings.database_url == f"sqlite:///{tmp_path / 'rubot.sqlite3'}"
    assert settings.model_provider == "offline"


def test_demo_says_the_model_is_offline_even_with_a_key():
    assert "offline deterministic model" in demo.model_description({"ANTHROPIC_API_KEY": "sk-ant-x"})


def test_demo_refuses_to_wipe_a_folder_it_did_not_create(tmp_path):
    # Given a folder with someone's file in it
    keep = tmp_path / "precious.txt"
    keep.write_text("mine")
    lines: list[str] = []

    # When the demo is pointed at it
    ok = demo.run_demo(tmp_path, echo=lines.append)

    # Then it refuses and the file survives
    assert not ok and "refusing to wipe" in lines[-1]
    assert keep.read_text() == "mine"


# --- formatting -----------------------------------------------------------------------------------------


def test_table_aligns_columns():
    lines = output.table(["id", "status"], [["run_1", "completed"], ["run_22", "failed"]])
    assert lines == ["id      status", "------  ---------", "run_1   completed", "run_22  failed"]


def test_pretty_shortens_long_strings_unless_full():
    value = {"page_text": "x" * 500}
    assert "(+340 chars)" in "\n".join(output.pretty(value))
    assert json.loads("\n".join(output.pretty(value, full=True))) == value


def test_reconcile_and_retry_refuse_runs_in_other_states(stack, sink):
    run = parked(sink)
    reconcile = rubot("reconcile", run.id, "--by", "ops@example.com", "--happened")
    retry = rubot("retry", run.id, "--by", "ops@example.com")
    assert handled_error(reconcile) and "not needs_reconciliation" in reconcile.stderr
    assert handled_error(retry) and "not dead_letter" in retry.stderr
    assert pipeline.get_run(run.id).waiting_for_approval
