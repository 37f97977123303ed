"""Rubot inside real host applications, each importing the INSTALLED wheel (never this checkout).

A Django project made by ``django-admin startproject config .`` and a Flask app with an app factory, each with
its own top-level ``config``, ``tasks`` and ``tools`` packages and its own Celery app with ``pipeline.install``:
the web process (gunicorn) launches a workflow with ``.delay()`` (in ``transaction.on_commit`` for Django) and
reads the run in-process; the host's own ``celery -A ... worker`` runs it over Redis with Postgres; a user
logged into the host approves it through Rubot's pages mounted under ``/ops/rubot/``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

import pipeline
from pipeline.errors import RunNotFound
from tests.conftest import eventually
from tests.stacks import ROOT, free_port

HOSTS = ROOT / "tests" / "hosts"
INPUT = {"ticket": 42, "amount_cents": 1200}


def host_env(production, python: Path, **extra: str) -> dict[str, str]:
    """The host's environment: its own settings only (no RUBOT_*, no PYTHONPATH to this checkout)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUBOT_", "PYTHONPATH", "DJANGO_"))}
    env.update(
        PATH=os.pathsep.join([str(python.parent), env.get("PATH", "")]),
        HOST_BROKER_URL=production.settings.broker_url,
        HOST_KEY_PREFIX=production.settings.redis_key_prefix,
        HOST_RUBOT_QUEUE=production.settings.queue,
        RUBOT_FORBID_NETWORK_MODELS="1",
        **extra,
    )
    return env


@contextmanager
def process(argv: list[str], *, cwd: Path, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    handle = log.open("wb")
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def worker_argv(python: Path, app: str, queue: str) -> list[str]:
    return [str(python), "-m", "celery", "-A", app, "worker", "-Q", f"{queue},celery", "--pool=prefork",
            "--concurrency=2", "--without-gossip", "--without-mingle", "--loglevel=INFO",
            "-n", f"host-{uuid.uuid4().hex[:6]}@%h"]  # fmt: skip


def ready(proc: subprocess.Popen, log: Path, marker: str) -> bool:
    assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
    return marker in log.read_text(errors="replace")


def answers(client: httpx.Client, path: str) -> bool:
    try:
        return client.get(path).status_code < 500
    except httpx.HTTPError:
        return False


def run_hosted(host: Path, python: Path, env: dict[str, str], celery_app: str, wsgi: str, tmp: Path):
    """Start the host's worker and web processes; yield an HTTP client of the web process."""
    port = free_port()
    worker_log, web_log = tmp / "worker.log", tmp / "web.log"
    web = [str(python), "-m", "gunicorn", wsgi, "--bind", f"127.0.0.1:{port}", "--workers", "1"]
    return port, worker_log, web_log, worker_argv(python, celery_app, env["HOST_RUBOT_QUEUE"]), web


def hidden(html: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert found, f"no {name} in the page:\n{html[:2000]}"
    return found.group(1)


def approve_through_the_pages(client: httpx.Client, run_id: str, login) -> httpx.Response:
    """As an anonymous visitor, then as the logged-in user: open the approval page and approve."""
    page = f"/ops/rubot/approvals/{run_id}"
    anonymous = client.get(page)
    assert anonymous.status_code == 302 and "login" in anonymous.headers["location"], anonymous.text[:500]
    login(client)
    html = client.get(page)
    assert html.status_code == 200, html.text[:2000]
    assert f'action="/ops/rubot/runs/{run_id}/approve"' in html.text  # url_for under the mount point
    assert 'id="principal-name"' in html.text and 'name="decided_by"' not in html.text
    return client.post(
        f"/ops/rubot/runs/{run_id}/approve",
        data={
            "csrf_token": hidden(html.text, "csrf_token"),
            "approval_id": hidden(html.text, "approval_id"),
            "decided_by": "mallory@example.com",  # a forged field: the logged-in user decides, not the form
            "comment": "ok from the host",
        },
    )


def status(client: httpx.Client, run_id: str) -> dict:
    answer = client.get(f"/refunds/{run_id}")
    return answer.json() if answer.status_code == 200 else {"status": None}


def test_a_django_project_runs_rubot_in_its_own_celery_app(production, host_python, tmp_path):
    # Given `django-admin startproject config .` with the project's own config, tasks and tools packages
    host = tmp_path / "djangohost"
    host.mkdir()
    django_admin = Path(sys.executable).parent / "django-admin"
    subprocess.run([str(django_admin), "startproject", "config", "."], cwd=host, check=True, timeout=60)
    shutil.copytree(HOSTS / "django", host, dirs_exist_ok=True)
    settings = host / "config" / "settings.py"
    settings.write_text(settings.read_text() + (host / "config" / "settings_rubot.py").read_text())
    database = production.settings.database_url.rsplit("/", 1)[1]
    env = host_env(production, host_python, HOST_DB_NAME=database)

    def manage(*args: str) -> str:
        result = subprocess.run([str(host_python), "manage.py", *args], cwd=host, env=env, capture_output=True,
                                text=True, timeout=120)  # fmt: skip
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        return result.stdout

    manage("migrate", "-v", "0")  # Django's tables in the Postgres database
    assert "(head)" in manage("rubot_migrate")  # Rubot's, through the installed app's management command
    manage("shell", "-c", "from django.contrib.auth.models import Group, User; "
           "u = User.objects.create_user('lena', password='lena-pass', first_name='Lena', last_name='Lead'); "
           "u.groups.add(Group.objects.create(name='support_lead'))")  # fmt: skip
    # ... which imports the installed distribution, not this checkout, and its own `config`
    where = manage("shell", "-c", "import config, pipeline; print(config.__file__, pipeline.__file__)")
    assert str(host) in where and str(ROOT) not in where

    port, worker_log, web_log, worker, web = run_hosted(host, host_python, env, "config", "config.wsgi", tmp_path)
    with (
        process(worker, cwd=host, env=env, log=worker_log) as worker_proc,
        process(web, cwd=host, env=env, log=web_log),
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=20) as client,
    ):
        eventually(lambda: ready(worker_proc, worker_log, " ready."), timeout=90, what="the Django worker")
        eventually(lambda: answers(client, "/accounts/login/"), timeout=90, what="the Django web process")

        # When a view launches with .delay() inside transaction.on_commit — once rolled back, once committed
        rolled_back = client.post("/refunds/", json={"input": INPUT, "rollback": True}).json()["run_id"]
        run_id = client.post("/refunds/", json={"input": INPUT}).json()["run_id"]

        # Then the committed run parks for approval (read by the web process itself) ...
        eventually(lambda: status(client, run_id)["status"] == "waiting_for_approval", timeout=60, what="parked")

        # ... a user logged into Django approves it through the mounted pages ...
        def login(c: httpx.Client) -> None:
            form = c.get("/accounts/login/")
            answer = c.post("/accounts/login/", data={"username": "lena", "password": "lena-pass",
                            "csrfmiddlewaretoken": hidden(form.text, "csrfmiddlewaretoken")})  # fmt: skip
            assert answer.status_code == 302, answer.text[:1000]

        decided = approve_through_the_pages(client, run_id, login)
        assert decided.status_code == 303 and decided.headers["location"] == f"/ops/rubot/runs/{run_id}"

        # ... and the host's worker completes it, decided by the Django user (not the forged form field)
        final = eventually(lambda: (s := status(client, run_id))["status"] == "completed" and s, timeout=60,
                           what="completed")  # fmt: skip
        assert final["output"] == {"ticket": 42, "approved_by": "lena"} and final["decided_by"] == ["lena"]
        assert client.get(f"/ops/rubot/runs/{run_id}").status_code == 200
        # The rolled-back launch was never sent: it was launched first, yet no run exists under its id
        assert client.get(f"/refunds/{rolled_back}").status_code == 404
    assert _missing(rolled_back)
    assert "rubot.launch" in worker_log.read_text() and "host.ping" in worker_log.read_text()


def test_a_flask_app_factory_runs_rubot_in_its_own_celery_app(production, host_python, tmp_path):
    # Given a Flask app with an app factory, Flask-Login, its own config, tasks and tools packages
    host = tmp_path / "flaskhost"
    shutil.copytree(HOSTS / "flask", host)
    env = host_env(production, host_python, HOST_SECRET_KEY="flask-host-secret",
                   HOST_RUBOT_DATABASE_URL=production.settings.database_url)  # fmt: skip
    migrate = subprocess.run(
        [str(host_python), "-c", "from webapp import create_app; import pipeline; create_app(); "
         "print(pipeline.migrate(), pipeline.__file__)"],
        cwd=host, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    assert str(ROOT) not in migrate.stdout

    port, worker_log, web_log, worker, web = run_hosted(
        host, host_python, env, "make_celery", "webapp:create_app()", tmp_path
    )
    with (
        process(worker, cwd=host, env=env, log=worker_log) as worker_proc,
        process(web, cwd=host, env=env, log=web_log),
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=20) as client,
    ):
        eventually(lambda: ready(worker_proc, worker_log, " ready."), timeout=90, what="the Flask worker")
        eventually(lambda: answers(client, "/login"), timeout=90, what="the Flask web process")

        # When the app launches with .delay() and reads the run in-process
        run_id = client.post("/refunds", json={"input": INPUT}).json()["run_id"]
        eventually(lambda: status(client, run_id)["status"] == "waiting_for_approval", timeout=60, what="parked")

        # Then a user logged in with Flask-Login approves it through the pages under /ops/rubot
        def login(c: httpx.Client) -> None:
            answer = c.post("/login", data={"username": "lena", "password": "lena-pass"})
            assert answer.status_code == 302, answer.text[:1000]

        decided = approve_through_the_pages(client, run_id, login)
        assert decided.status_code == 303 and decided.headers["location"] == f"/ops/rubot/runs/{run_id}"
        final = eventually(lambda: (s := status(client, run_id))["status"] == "completed" and s, timeout=60,
                           what="completed")  # fmt: skip
        assert final["output"] == {"ticket": 42, "approved_by": "lena"} and final["decided_by"] == ["lena"]
    # And this test process, reading the same database, sees the same run
    assert pipeline.get_run(run_id).approvals[-1].decided_by == "lena"
    assert json.loads(json.dumps(final))["status"] == "completed"


def _missing(run_id: str) -> bool:
    try:
        pipeline.get_run(run_id)
    except RunNotFound:
        return True
    return False
