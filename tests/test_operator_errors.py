"""Clear errors for operators: the real ``rubot`` command, run as a process, says what is wrong in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

import pipeline
from pipeline import Workflow, step
from pipeline.engine import recovery
from pipeline.errors import DefinitionError
from pipeline.store.tables import utcnow
from tests import stacks, workflows
from tests.conftest import sink_lines

ROOT = Path(__file__).resolve().parent.parent
UNREACHABLE_BROKER = "redis://rubot:hunter2@127.0.0.1:1/0"


def rubot(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The installed ``rubot`` command as its own process."""
    command = [sys.executable, "-m", "rubot_app.scripts.cli", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def plain_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUBOT_", "ANTHROPIC_"))}
    env.update({"RUBOT_HOME": str(tmp_path / "home"), **settings})
    return env


def one_line_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The command failed with ``code`` and exactly one ``rubot: error:`` line, no traceback; that line."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rubot: error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("RUBOT_DATABASE_URL", "postgresql://rubot:hunter2@db:notaport/rubot", "is not a database URL"),
        ("RUBOT_DATABASE_URL", "not a url", "is not a database URL"),
        ("RUBOT_DATABASE_URL", "mysql://rubot@db/rubot", "unsupported database 'mysql'"),
        ("RUBOT_BROKER_URL", "reddis://rubot:hunter2@127.0.0.1:6379/0", "unknown scheme 'reddis'"),
        ("RUBOT_BROKER_URL", "127.0.0.1:6379", "unknown scheme"),
        ("RUBOT_MAX_RUNNING", "fifty", "must be a number, got 'fifty'"),
        ("RUBOT_LEASE_SECONDS", "30s", "must be a number, got '30s'"),
        ("RUBOT_BATCH_MAX_ATTEMPTS", "0", "must be a positive int"),
    ],
)
def test_a_bad_setting_is_one_line_naming_the_variable(tmp_path, name, value, says):
    # Given a deployment with one malformed setting / When an operator lists runs
    result = rubot("runs", env=plain_env(tmp_path, **{name: value}))

    # Then the command exits with the setup status and one line naming the variable; a password stays hidden
    line = one_line_error(result, 2)
    assert name in line and says in line, line
    assert "hunter2" not in line


def test_a_workflow_module_that_fails_to_import_is_one_line(tmp_path):
    # Given workflow modules that raise, do not parse, or do not exist
    (tmp_path / "raises_wf.py").write_text('raise RuntimeError("the policy table is missing")\n')
    (tmp_path / "broken_wf.py").write_text("def oops(:\n    pass\n")
    cases = {
        "raises_wf": "RuntimeError: the policy table is missing",
        "broken_wf": "SyntaxError",
        "missing_wf": "No module named 'missing_wf'",
    }
    for module, why in cases.items():
        env = plain_env(tmp_path, RUBOT_WORKFLOW_MODULES=module, PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}")
        for command in ("worker", "beat"):
            # When the worker (or beat) is started
            result = rubot(command, env=env)
            # Then it does not start; one line names the module and its error
            line = one_line_error(result, 2)
            assert f"cannot import workflow module {module!r}" in line and why in line, line


def test_a_workflow_built_with_type_is_a_definition_error():
    # Given steps in a dict / When a Workflow class is built with type() / Then it is a DefinitionError
    with pytest.raises(DefinitionError, match="class statement"):
        type("TypeBuilt", (Workflow,), {"only": step(lambda self: {"ok": True})})


def test_approve_with_the_broker_down_says_the_decision_is_recorded(stack, sink):
    # Given a parked run
    run = pipeline.run(workflows.ApprovalWorkflow, input={"sink": str(sink)}, timeout=60)
    assert run.waiting_for_approval, run.error

    # When it is approved from a process whose broker cannot be reached
    env = stack.subprocess_env(RUBOT_BROKER_URL=UNREACHABLE_BROKER, RUBOT_RESULT_BACKEND=UNREACHABLE_BROKER)
    result = rubot("approve", run.id, "--by", "lead@example.com", env=env)

    # Then it says that the decision is recorded and the run resumes when the broker is back (no traceback)
    line = one_line_error(result, 1)
    assert "the decision is recorded" in line and "will resume when the broker is back" in line, line
    assert "hunter2" not in line
    assert "Approved apr_" in result.stdout
    decided = pipeline.get_run(run.id)
    assert decided.approvals[-1].status == "approved" and decided.approvals[-1].decided_by == "lead@example.com"

    # And once the broker answers, the recovery sweep carries the run on to completion
    later = utcnow() + timedelta(seconds=3 * stack.settings.lease_seconds)
    assert run.id in recovery.sweep(stack.runtime, now=later)
    final = pipeline.wait(run, timeout=60)
    assert final.completed, final.error
    assert sink_lines(sink)[-1].endswith("after")


def test_approve_wait_shows_progress(stack, sink):
    # Given a parked run
    run = pipeline.run(workflows.ApprovalWorkflow, input={"sink": str(sink)}, timeout=60)
    assert run.waiting_for_approval, run.error

    # When it is approved from the command line with --wait (a worker of the stack carries it on)
    result = rubot("approve", run.id, "--by", "lead@example.com", "--wait", env=stack.subprocess_env())

    # Then the command shows the steps as they happen, then the final status
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Approved apr_") and lines[1].startswith(f"Waiting for {run.id}")
    assert any(line.split()[:1] == ["after"] for line in lines), result.stdout
    assert "-> completed" in result.stdout and lines[-1] == "Run is now completed."


def test_the_stacks_module_still_loads_valid_settings(tmp_path):
    # Given the test stacks' own settings / Then validation accepts them (filesystem, redis, sqlite, postgresql)
    assert stacks.embedded_stack(tmp_path).settings.embedded
