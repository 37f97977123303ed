"""The refund desk's soak: many e-mails on Redis + Postgres while the Celery worker is SIGKILLed every few seconds.

    python -m rubot_app.scripts.soak_support --count 1000

What it does, in order:

1. Creates a fresh Postgres database (``--postgres-admin``, dropped at the end unless ``--keep``) and uses its own
   Redis queue and key prefix (``--redis``), so nothing it does touches another deployment. Rubot's tables are
   migrated; the payment service and outbox tables (the app's own) are created in the same database, which every
   process shares — that is where duplicate refunds would show.
2. Starts ``celery -A rubot_app.tasks.app worker`` as a subprocess (prefork, ``--concurrency``), short leases so a
   killed worker's work is taken over quickly, the carrier Meridian in outage mode, the offline support agent, and
   a payment service that answers ``--payment-latency`` seconds (0.5) after applying a refund — a kill in that
   window leaves a refund made but not recorded, which the retried call must not make again.
3. Enqueues one ``SupportTriageWorkflow`` run per generated e-mail (the demo's mix, repeated with fresh orders).
4. Every 2-6 seconds of work (``--kill-min``/``--kill-max``, counted from when the worker says it is ready)
   SIGKILLs the worker's whole process group and starts a new one, and sweeps for stuck runs every second as beat
   would, until every e-mail's runs are at rest (finished, or parked for a support lead).
5. Prints the desk's report (:mod:`rubot_app.scripts.support_report`) and the soak's figures: kills, recoveries,
   wall time, throughput, duplicate refunds at the payment service, runs not at rest. Exit status 0 when every
   check held.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

REDIS_URL = "redis://127.0.0.1:6379/14"
POSTGRES_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
ROOT = Path(__file__).resolve().parent.parent


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000, help="e-mails (default 1000)")
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes of the Celery worker")
    parser.add_argument("--kill-min", type=float, default=2.0, help="shortest time between two kills (s)")
    parser.add_argument("--kill-max", type=float, default=6.0, help="longest time between two kills (s)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="give up after this many seconds")
    parser.add_argument("--redis", default=os.environ.get("RUBOT_SOAK_REDIS", REDIS_URL))
    parser.add_argument("--postgres-admin", default=os.environ.get("RUBOT_SOAK_POSTGRES_ADMIN", POSTGRES_ADMIN))
    parser.add_argument("--home", type=Path, default=Path(".rubot/soak-support"), help="logs go here")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument(
        "--payment-latency",
        type=float,
        default=0.5,
        help="seconds the payment service takes to answer after applying a refund (kills land in that window)",
    )
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser.parse_args(argv)


def admin(url: str, statement: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(statement))
    engine.dispose()


class Worker:
    """A ``celery worker`` subprocess in its own session, so one SIGKILL takes its pool children too."""

    def __init__(self, env: dict[str, str], queue: str, concurrency: int, log: Path) -> None:
        self.env, self.queue, self.concurrency, self.log = env, queue, concurrency, log
        self.process: subprocess.Popen | None = None
        self.offset = 0

    def start(self) -> None:
        command = [sys.executable, "-m", "celery", "-A", "rubot_app.tasks.app", "worker", "--loglevel=INFO",
                   f"--concurrency={self.concurrency}", "--pool=prefork", "--without-gossip", "--without-mingle",
                   "-Q", self.queue, "-n", f"soak-{uuid.uuid4().hex[:6]}@%h"]  # fmt: skip
        self.log.touch()
        self.offset = self.log.stat().st_size
        with self.log.open("ab") as handle:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=self.env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_ready(self, timeout: float = 120.0) -> float:
        """Seconds until this start's worker logged that it is ready (the kill interval starts then)."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            with self.log.open("rb") as handle:
                handle.seek(self.offset)
                if b" ready." in handle.read():
                    break
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"the worker exited early; see {self.log}")
            time.sleep(0.1)
        return time.monotonic() - started

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()


def at_rest(runtime: Any, count: int) -> tuple[bool, Counter]:
    """Whether all ``count`` e-mails' triage and handling runs rest; the run statuses by workflow."""
    from sqlalchemy import func, select

    from pipeline.store.tables import RunRow
    from rubot_app.scripts.support_report import RESTING

    def read(s: Any) -> Counter:
        rows = s.execute(select(RunRow.workflow, RunRow.status, func.count()).group_by(RunRow.workflow, RunRow.status))
        return Counter({(w, st): n for w, st, n in rows})

    statuses = runtime.db.reading(read)
    triaged = sum(n for (w, st), n in statuses.items() if w == "SupportTriageWorkflow" and st == "completed")
    triage_rest = sum(n for (w, st), n in statuses.items() if w == "SupportTriageWorkflow" and st in RESTING)
    handlers = sum(n for (w, st), n in statuses.items() if w != "SupportTriageWorkflow" and st in RESTING)
    return triage_rest == count and handlers == triaged, statuses


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    database = f"rubot_soak_{uuid.uuid4().hex[:8]}"
    url = args.postgres_admin.rsplit("/", 1)[0] + f"/{database}"
    admin(args.postgres_admin, f'CREATE DATABASE "{database}"')
    try:
        return soak(args, url)
    finally:
        if not args.keep:
            admin(args.postgres_admin, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        else:
            print(f"database kept: {url}")


def soak(args: argparse.Namespace, url: str) -> int:
    tag = uuid.uuid4().hex[:8]
    env = {
        "RUBOT_HOME": str(args.home.resolve()),
        "RUBOT_DATABASE_URL": url,
        "RUBOT_BROKER_URL": args.redis,
        "RUBOT_RESULT_BACKEND": args.redis,
        "RUBOT_QUEUE": f"rubot-soak-{tag}",
        "RUBOT_REDIS_KEY_PREFIX": f"rubot-soak-{tag}:",
        "RUBOT_WORKFLOW_MODULES": "rubot_app.agents.support_desk",
        "RUBOT_MODEL_PROVIDER": "offline",
        "RUBOT_LOG_LEVEL": "WARNING",
        "RUBOT_LEASE_SECONDS": "4",
        "RUBOT_VISIBILITY_TIMEOUT": "8",
        "RUBOT_MAX_RECOVERIES": "50",
        "SUPPORT_DESK_CARRIER_OUTAGE": "Meridian",
        "SUPPORT_DESK_DATABASE_URL": url,
        "SUPPORT_DESK_PAYMENT_LATENCY": str(args.payment_latency),
    }
    os.environ.update(env)
    args.home.mkdir(parents=True, exist_ok=True)
    worker_env = {k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")}
    worker_env["PYTHONPATH"] = os.pathsep.join([str(ROOT), worker_env.get("PYTHONPATH", "")]).rstrip(os.pathsep)

    import pipeline
    from pipeline import runtime as rubot_runtime
    from pipeline.engine import recovery
    from pipeline.hosting import make_app
    from pipeline.store import migrate
    from rubot_app.agents.support_desk import SupportTriageWorkflow, customer_context, email_input
    from rubot_app.config.settings import load
    from rubot_app.scripts import support_report
    from rubot_app.tools import support_inbox, support_payments

    settings = load(env)
    runtime = rubot_runtime.of_app(make_app(settings, name="rubot-soak"))
    rubot_runtime.install(runtime)
    migrate.upgrade(runtime.db)
    support_payments.engine(url)
    inbox = support_inbox.generate(args.count)
    rng = random.Random(args.seed)
    log = args.home / f"worker-{tag}.log"
    worker = Worker(worker_env, settings.queue, args.concurrency, log)
    print(f"soak: {args.count} e-mails, Redis {args.redis} queue {settings.queue}, Postgres {url}")
    print(f"soak: worker log {log}; killing the worker every {args.kill_min:g}-{args.kill_max:g}s")

    started = time.monotonic()
    worker.start()
    startup = [worker.wait_ready()]
    for mail in inbox:
        pipeline.enqueue(
            SupportTriageWorkflow,
            email_input(mail),
            subject={"type": "support_email", "id": mail["email_id"]},
            context=customer_context(mail["from"]),
        )
    print(f"soak: {len(inbox)} e-mails enqueued in {time.monotonic() - started:.1f}s")
    kills = 0
    done = False
    statuses: Counter = Counter()
    last_print = 0.0
    try:
        while time.monotonic() - started < args.timeout:
            pause = rng.uniform(args.kill_min, args.kill_max)
            slept = 0.0
            while slept < pause:
                time.sleep(min(1.0, pause - slept))
                slept += 1.0
                recovery.sweep(runtime)  # as beat would, every second
            done, statuses = at_rest(runtime, args.count)
            if done:
                break
            worker.kill()
            kills += 1
            worker.start()
            startup.append(worker.wait_ready())  # a kill every few seconds of work, not of start-up
            if time.monotonic() - last_print > 30:
                last_print = time.monotonic()
                resting = sum(n for (_w, st), n in statuses.items() if st in support_report.RESTING)
                print(f"soak: {time.monotonic() - started:6.0f}s  kills {kills:4d}  runs at rest {resting}")
        if not done:  # out of time: stop killing, give the last worker a chance to finish
            while time.monotonic() - started < args.timeout + 300 and not done:
                time.sleep(1)
                recovery.sweep(runtime)
                done, statuses = at_rest(runtime, args.count)
    finally:
        worker.stop()
    elapsed = time.monotonic() - started

    report = support_report.collect(inbox, settings)
    title = f"Soak report: {args.count} e-mails, worker SIGKILLed {kills} times"
    for line in support_report.render(report, title=title):
        print(line)
    found = support_report.problems(report)
    runs = [r for m in report.mails for r in m.runs]
    not_resting = [r for r in runs if r.status not in support_report.RESTING]
    replays = sum(1 for call in report.ledger.calls if call["outcome"] == "replayed")
    duplicates = sum(1 for n in report.ledger.applied_per_key().values() if n > 1)
    duplicates += sum(1 for n in report.ledger.refunds_per_order().values() if n > 1)
    figures = {
        "emails": args.count,
        "runs": len(runs),
        "kills": kills,
        "recoveries": sum(r.recoveries for r in runs),
        "seconds": round(elapsed, 1),
        "worker_startup_seconds_mean": round(sum(startup) / len(startup), 1),
        "emails_per_minute": round(args.count / elapsed * 60, 1),
        "refunds": len(report.ledger.refunds),
        "payment_calls": len(report.ledger.calls),
        "replayed_refund_calls": replays,
        "duplicate_refunds": duplicates,
        "runs_not_at_rest": len(not_resting),
        "statuses": {f"{w} {s}": n for (w, s), n in sorted(statuses.items())},
        "cost_per_email_p50_usd": round(support_report.percentile(report.costs, 50), 5),
        "cost_per_email_p95_usd": round(support_report.percentile(report.costs, 95), 5),
        "problems": found,
    }
    print("")
    print("Soak figures:")
    print(f"  e-mails {args.count}, runs {len(runs)}, worker SIGKILLs {kills}, recoveries {figures['recoveries']}")
    print(
        f"  wall time {elapsed:.0f}s (of it, worker start-ups: {sum(startup):.0f}s, "
        f"mean {figures['worker_startup_seconds_mean']}s), throughput {figures['emails_per_minute']} e-mails/min"
    )
    print(f"  refunds {figures['refunds']}; payment calls {figures['payment_calls']} "
          f"(replayed by idempotency key after a kill: {replays}); duplicate refunds: {duplicates}")  # fmt: skip
    print(f"  runs not in a terminal or operator state: {len(not_resting)}")
    print(f"  cost per e-mail p50 {figures['cost_per_email_p50_usd']} USD, p95 {figures['cost_per_email_p95_usd']} USD")
    for problem in found[:20]:
        print(f"  FAILED: {problem}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0 if done and not found and not not_resting else 1


if __name__ == "__main__":
    sys.exit(main())
