"""Real processes on Redis + Postgres: ``celery worker`` subprocesses, the §3 script, a host app layout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pipeline
from tests import workflows
from tests.conftest import eventually, sink_lines
from tests.stacks import ROOT

CONTRACT = ROOT / "tests" / "contract" / "design_example.py"


def test_a_worker_restarted_while_a_run_is_parked_still_resumes_it(production, sink):
    # Given a run parked for approval by a worker process
    worker = production.start_worker_process()
    run = pipeline.run(workflows.ApprovalWorkflow, input={"sink": str(sink)}, timeout=60)
    assert run.waiting_for_approval
    assert production.queue_length() == 0

    # When that worker dies and another one starts later
    worker.kill()
    replacement = production.start_worker_process()
    try:
        # Then approving resumes the run from SQL on the new worker
        run.approve(approved_by="manager@example.com")
        run = pipeline.wait(run, timeout=60)
    finally:
        replacement.stop()
    assert run.status == "completed", run.error
    assert sink_lines(sink) == [f"{run.id} prepare", f"{run.id} after"]


def _contract(production, employee: str) -> list[dict]:
    result = subprocess.run(
        [sys.executable, str(CONTRACT), employee],
        cwd=ROOT,
        env=production.subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def test_design_contract_runs_as_written_with_a_separate_celery_worker(production):
    worker = production.start_worker_process()
    try:
        # The auto-approved path: emp_42's policy covers Rails World and the estimate is within budget.
        launched, final = _contract(production, "emp_42")
        assert launched["workflow"] == "ConferenceTravelReviewWorkflow"
        assert final["status"] == "completed"
        assert final["output"]["auto_approvable"] is True

        # The manual path: emp_7's budget is too small; the run parks with an empty queue, then completes.
        launched, final = _contract(production, "emp_7")
        assert launched == {
            "event": "launched",
            "workflow": "ConferenceTravelManualApprovalWorkflow",
            "status": "waiting_for_approval",
            "queue_length": 0,
        }
        assert final["status"] == "completed"
        assert final["output"]["auto_approvable"] is False
        assert final["output"]["within_budget"] is False
    finally:
        worker.stop()


HOST_FILES = {
    "config/__init__.py": "HOST_CONFIG = True\n",
    "config/settings/__init__.py": "",
    "config/settings/base.py": "import os\nCELERY_BROKER_URL = os.environ['HOST_BROKER_URL']\n"
    "CELERY_BROKER_TRANSPORT_OPTIONS = {'global_keyprefix': os.environ['HOST_KEY_PREFIX']}\n"
    "CELERY_TASK_SERIALIZER = 'json'\n",
    "config/celery_app.py": textwrap.dedent("""\
        from celery import Celery

        app = Celery("hostproject")
        app.config_from_object("config.settings.base", namespace="CELERY")
        """),
    "enqueue.py": textwrap.dedent("""\
        import json, os, sys

        import config
        from config.celery_app import app
        from pipeline.client import launch

        assert hasattr(config, "HOST_CONFIG"), config.__file__  # the host's config, not Rubot's
        queue = os.environ["RUBOT_QUEUE"]
        by_helper = launch(app, "LinearWorkflow", {"sink": sys.argv[1], "n": 5}, queue=queue)
        by_name = "run_" + "0" * 24 + "hostsend"
        app.send_task("rubot.launch", args=["LinearWorkflow", {"sink": sys.argv[1], "n": 6}],
                      kwargs={"run_id": by_name}, queue=queue)
        print(json.dumps([by_helper, by_name]))
        """),
}


def test_a_host_app_with_its_own_config_package_enqueues_runs(production, sink, tmp_path):
    # Given a cookiecutter-django-like project whose top-level `config` package shadows Rubot's
    host = tmp_path / "hostproject"
    for name, text in HOST_FILES.items():
        (host / name).parent.mkdir(parents=True, exist_ok=True)
        (host / name).write_text(text)
    env = production.subprocess_env(
        HOST_BROKER_URL=production.settings.broker_url, HOST_KEY_PREFIX=production.settings.redis_key_prefix
    )
    env["PYTHONPATH"] = os.pathsep.join([str(host), str(ROOT)])  # the host first, as manage.py would have it

    # When it enqueues through pipeline.client and by task name, and Rubot's worker picks the runs up
    worker = production.start_worker_process()
    try:
        result = subprocess.run(
            [sys.executable, "enqueue.py", str(sink)], cwd=host, env=env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr[-3000:]
        run_ids = json.loads(result.stdout)
        runs = [pipeline.wait(eventually(lambda i=i: _exists(i) and i, what=f"run {i}"), timeout=60) for i in run_ids]
    finally:
        worker.stop()

    # Then both runs complete
    assert [r.status for r in runs] == ["completed", "completed"]
    assert [r.output["n"] for r in runs] == [10, 12]


def _exists(run_id: str) -> bool:
    from pipeline.errors import RunNotFound

    try:
        pipeline.get_run(run_id)
    except RunNotFound:
        return False
    return True
