"""Beat schedules and batches: clock-aligned ticks, one run per tick whatever the number of beats, and batches
fanned out over many subjects under the caps, with their progress in the CLI and the console."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from celery.beat import BeatLazyFunc
from celery.schedules import crontab
from click.testing import CliRunner

import pipeline
from pipeline import batches, schedules
from pipeline.errors import ConfigurationError, DefinitionError
from pipeline.settings import load
from pipeline.web import create_app
from rubot_app.scripts import cli
from tests import schedule_workflows as sw
from tests.conftest import eventually
from tests.stacks import ROOT

NIGHT = "2026-01-01T03:00:00+00:00"


# --- ticks ------------------------------------------------------------------------------------------------


def test_every_fires_on_a_grid_shared_by_all_beats():
    five = pipeline.every(5)
    moment = datetime(2026, 1, 1, 12, 0, 7, 400_000, tzinfo=UTC)
    assert five.tick_at(moment) == datetime(2026, 1, 1, 12, 0, 5, tzinfo=UTC)
    # Two beats whose last sends fell in the previous interval are both due now; one that sent in this one is not
    assert five.is_due(datetime.now(UTC) - timedelta(seconds=6)).is_due
    assert not five.is_due(datetime.now(UTC)).is_due or five.tick_at(datetime.now(UTC)) > datetime.now(UTC)
    assert pipeline.every(timedelta(minutes=1)) == pipeline.every(60)


def test_a_crontab_tick_is_its_latest_minute_at_or_before_now():
    nightly = crontab(minute=0, hour=3)
    assert schedules.tick_of(nightly, datetime(2026, 1, 2, 3, 0, 40, tzinfo=UTC)) == datetime(
        2026, 1, 2, 3, 0, tzinfo=UTC
    )
    assert schedules.tick_of(nightly, datetime(2026, 1, 2, 2, 59, tzinfo=UTC)) == datetime(2026, 1, 1, 3, 0, tzinfo=UTC)
    weekly = crontab(minute=30, hour=8, day_of_week="mon")
    assert schedules.tick_of(weekly, datetime(2026, 1, 8, 9, 0, tzinfo=UTC)) == datetime(2026, 1, 5, 8, 30, tzinfo=UTC)


def test_the_run_id_is_derived_from_the_schedule_and_the_tick():
    assert schedules.run_id_for("Heartbeat", NIGHT) == schedules.run_id_for("Heartbeat", NIGHT)
    assert schedules.run_id_for("Heartbeat", NIGHT) != schedules.run_id_for("Heartbeat", "2026-01-02T03:00:00+00:00")
    assert len(schedules.run_id_for("x" * 200, NIGHT)) <= 40


@pytest.mark.parametrize("bad", [0.5, "every day", object(), True])
def test_a_bad_schedule_fails_at_class_creation(bad):
    with pytest.raises(DefinitionError, match=r"BadSchedule\.schedule"):

        class BadSchedule(pipeline.Workflow):
            schedule = bad

            @pipeline.step
            def s(self):
                return None


def test_the_settings_table_of_schedules():
    table = {
        "nightly": {"workflow": "ReviewOpenTickets", "schedule": "0 3 * * *", "input": {"ticket": 1}},
        "often": {"workflow": "Heartbeat", "schedule": 30},
    }
    settings = load({"RUBOT_HOME": "/tmp/rubot-sched", "RUBOT_SCHEDULES": json.dumps(table)})
    found = schedules.from_settings(settings.schedules)
    assert isinstance(found["nightly"].schedule, crontab) and found["often"].schedule == pipeline.every(30)
    with pytest.raises(ConfigurationError, match="RUBOT_SCHEDULES"):
        load({"RUBOT_SCHEDULES": "{not json"})
    with pytest.raises(ConfigurationError, match=r"RUBOT_SCHEDULES\['x'\]"):
        schedules.from_settings({"x": {"schedule": 5}})
    with pytest.raises(DefinitionError, match="crontab"):
        schedules.from_settings({"x": {"workflow": "W", "schedule": "99 * * * *"}})


def test_beat_entries_stamp_each_tick_when_beat_sends_it(stack):
    entries = schedules.beat_entries(stack.runtime)
    entry = entries["rubot-schedule:Heartbeat"]
    assert entry["task"] == "rubot.scheduled" and entry["args"] == ("Heartbeat",)
    assert isinstance(entry["kwargs"]["tick"], BeatLazyFunc)
    stamped = datetime.fromisoformat(entry["kwargs"]["tick"]())
    assert stamped.timestamp() % 2 == 0 and stamped <= datetime.now(UTC)
    assert {"rubot-recover", "rubot-expire-approvals"} <= set(entries)


# --- one run per tick, on a real worker ---------------------------------------------------------------------


def test_a_tick_sent_twice_launches_one_run(stack):
    # When the same tick of a schedule reaches the workers twice (two beats)
    tick = "2026-01-01T00:00:10+00:00"
    for _ in range(2):
        stack.app.send_task("rubot.scheduled", args=["Heartbeat"], kwargs={"tick": tick}, queue=stack.settings.queue)
    run_id = schedules.run_id_for("Heartbeat", tick)

    # Then one run exists, under the id derived from the tick, and it completes once
    run = pipeline.wait(eventually(lambda: _exists(run_id) and run_id, what="the tick's run"), timeout=60)
    assert run.completed and run.output == {"tick": tick}
    assert run.context["schedule"] == {"name": "Heartbeat", "tick": tick}
    assert [
        r.id for r in pipeline.list_runs(workflow="Heartbeat", limit=1000) if r.context["schedule"]["tick"] == tick
    ] == [run_id]


def test_a_batch_fans_out_over_every_subject_once_under_the_caps(stack):
    # When the nightly batch's tick arrives twice
    for _ in range(2):
        stack.app.send_task(
            "rubot.scheduled", args=["ReviewOpenTickets"], kwargs={"tick": NIGHT}, queue=stack.settings.queue
        )
    batch_id = schedules.batch_id_for("ReviewOpenTickets", NIGHT)

    # Then one batch launched one run per open ticket, and all of them finish
    view = eventually(lambda: _batch_done(stack, batch_id), timeout=90, what="every run of the batch finished")
    assert (view.status, view.total, view.counts) == ("launched", 6, {"completed": 6})
    runs = batches.runs_of(stack.runtime, batch_id)
    assert sorted(r.subject["id"] for r in runs) == sw.OPEN_TICKETS
    # ... never more than the workflow's cap (2) running at the same time
    assert _max_overlap(runs) <= 2
    assert any(e.type == "run.waiting_for_slot" for r in runs for e in r.events)

    # And its progress shows in the CLI and in the console
    listing = CliRunner().invoke(cli.main, ["batches"])
    assert listing.exit_code == 0 and batch_id in listing.stdout and "6 of 6 finished" in listing.stdout
    shown = CliRunner().invoke(cli.main, ["batch", "show", batch_id])
    assert shown.exit_code == 0, shown.output
    assert "completed 6" in shown.stdout and all(r.id in shown.stdout for r in runs)
    missing = CliRunner().invoke(cli.main, ["batch", "show", "batch_nope"])
    assert missing.exit_code == 1 and "no batch with id" in missing.stderr
    _screenshot(create_app(stack.runtime, secret_key="k"), f"/batches/{batch_id}", stack.home / "batch.png")
    page = create_app(stack.runtime, secret_key="k").test_client().get(f"/batches/{batch_id}")
    assert page.status_code == 200 and "6 of 6 finished" in page.text and "every run finished" in page.text
    assert create_app(stack.runtime, secret_key="k").test_client().get("/batches/batch_nope").status_code == 404


def _screenshot(app, path: str, target) -> None:
    """The page as headless Chromium renders it, saved for a person to look at (skipped without Chromium)."""
    import shutil
    import threading

    from werkzeug.serving import make_server

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        return
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--window-size=1200,700",
             f"--user-data-dir={target.parent / 'chromium-profile'}", f"--screenshot={target}",
             f"http://127.0.0.1:{server.server_port}{path}"],
            capture_output=True, timeout=90, check=True, env={**os.environ, "HOME": str(target.parent)},
        )  # fmt: skip
    finally:
        server.shutdown()
        thread.join(10)
    assert target.stat().st_size > 0


def _batch_done(stack, batch_id):
    try:
        view = batches.progress(stack.runtime, batch_id)
    except pipeline.errors.RunNotFound:
        return None
    return view if view.done else None


def _max_overlap(runs) -> int:
    moments = sorted([(r.started_at, 1) for r in runs] + [(r.finished_at, -1) for r in runs])
    running = peak = 0
    for _, change in moments:
        running += change
        peak = max(peak, running)
    return peak


def _exists(run_id: str) -> bool:
    try:
        pipeline.get_run(run_id)
    except pipeline.errors.RunNotFound:
        return False
    return True


# --- two beats at once, real processes --------------------------------------------------------------------


def test_two_beats_started_at_once_launch_exactly_one_run_per_tick(production, tmp_path):
    # Given a worker and TWO beat processes, started together, for a workflow scheduled every two seconds
    modules = {"RUBOT_WORKFLOW_MODULES": "tests.schedule_workflows"}
    env = production.subprocess_env(**modules, RUBOT_LOG_LEVEL="INFO", PYTHONUNBUFFERED="1")
    worker = production.start_worker_process(**modules)
    beats = []
    try:
        for n in (1, 2):
            log = tmp_path / f"beat{n}.log"
            argv = [sys.executable, "-m", "celery", "-A", "rubot_app.tasks.app", "beat", "--loglevel=INFO",
                    f"--schedule={tmp_path / f'schedule{n}'}"]  # fmt: skip
            beats.append((subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                                           start_new_session=True), log))  # fmt: skip

        # When they run for more than ten ticks
        def ticks() -> list[str]:
            return [r.context["schedule"]["tick"] for r in pipeline.list_runs(workflow="Heartbeat", limit=1000)]

        eventually(lambda: len(set(ticks())) >= 13, timeout=120, what="thirteen ticks")
    finally:
        for process, _ in beats:
            os.killpg(process.pid, signal.SIGTERM)
        for process, _ in beats:
            process.wait(30)
    sends = [log.read_text().count("Sending due task rubot-schedule:Heartbeat") for _, log in beats]
    eventually(lambda: all(r.finished for r in pipeline.list_runs(workflow="Heartbeat", limit=1000)), what="done")
    worker.stop()

    # Then both beats sent (nearly) every tick, yet each tick has exactly one run, and no tick in between is missing
    assert min(sends) >= 10, sends
    per_tick = Counter(ticks())
    assert set(per_tick.values()) == {1}, per_tick
    moments = sorted(datetime.fromisoformat(t) for t in per_tick)
    assert len(moments) >= 10
    inner = moments[1:-1]  # the first and last tick may have been seen by one beat only
    assert all((b - a) == timedelta(seconds=2) for a, b in zip(inner, inner[1:], strict=False)), moments
    assert all(r.completed for r in pipeline.list_runs(workflow="Heartbeat", limit=1000))
