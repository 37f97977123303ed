"""``rubot demo support``: the refund desk over its seeded inbox of 50 e-mails, on a machine with no servers.

1. Builds the embedded default in a folder of its own (SQLite, ``filesystem://`` broker), migrates it and starts a
   real Celery worker on threads in this process; the carrier Meridian is put in outage mode.
2. Launches ``SupportDeskOperation`` for every e-mail (eight at a time) and prints one line per e-mail as it
   comes to rest: triage, the handling run, its action, turns and cost.
3. The refunds above the threshold are parked for a ``support_lead``. A support agent (no such role) trying to
   approve is refused; then a lead — a :class:`~pipeline.Principal` with the role, as the web pages establish
   one for a signed-in user — approves the first and rejects the second. The others stay parked.
4. Prints the report (:mod:`rubot_app.scripts.support_report`) and its checks: every refund applied once at the
   payment service, the injection refused by the policy, the repeated request answered without a second refund.

The model is the offline support agent (multi-turn, deterministic, token counts estimated); ``--model anthropic``
runs the same app on the real model when ``ANTHROPIC_API_KEY`` is set.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pipeline
from pipeline import Principal, runtime
from pipeline.embedded import inprocess
from pipeline.errors import ApprovalForbidden, RubotError
from pipeline.runs import Run
from pipeline.settings import Settings
from pipeline.store import migrate
from rubot_app.config.settings import load
from rubot_app.scripts import output, support_report
from rubot_app.scripts.demo import DemoFailure, patched_environ, prepare_home
from rubot_app.scripts.progress import Echo

WORKER_THREADS = 4
PARALLEL_EMAILS = 8
TIMEOUT = 300.0
LEAD = Principal.of("dana.lead@example.com", roles=["support_lead"], display_name="Dana (support lead)")
AGENT = Principal.of("sam.agent@example.com", roles=["support_agent"], display_name="Sam (support agent)")
OUTAGE = "Meridian"
MODEL_VARIABLES = ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "RUBOT_MODEL")


def demo_settings(home: Path, model: str) -> Settings:
    return load(
        {
            "RUBOT_HOME": str(home),
            "RUBOT_WORKFLOW_MODULES": "rubot_app.agents.support_desk",
            "RUBOT_MODEL_PROVIDER": model,
            "RUBOT_LOG_LEVEL": "ERROR",
            "RUBOT_MAX_RUNNING": "50",
            **({k: os.environ[k] for k in MODEL_VARIABLES if os.environ.get(k)} if model == "anthropic" else {}),
        }
    )


def describe(mail: dict[str, Any], run: Run) -> str:
    turns = sum(1 for e in run.effects if e.kind == "model_turn")
    if run.completed and isinstance(run.output, dict):
        action = run.output.get("action")
        cents = run.output.get("refund_cents") or 0
        detail = f"{action}" + (f" {cents / 100:,.2f} USD" if cents else "")
    elif run.waiting_for_approval:
        approval = run.pending_approval
        detail = f"PARKED for {approval.role if approval else '?'}: {approval.summary if approval else ''}"
    else:
        detail = f"{run.status}: {output.compact(run.error, 80)}"
    return f"{mail['email_id']}  {mail['kind']:<15} {run.workflow:<23} {detail}  ({turns} turns, ${run.cost_usd:.4f})"


def process_inbox(inbox: list[dict[str, Any]], echo: Echo) -> dict[str, Run]:
    """Launch the operation for every e-mail; one progress line per e-mail as it comes to rest."""
    from rubot_app.agents.support_desk import SupportDeskOperation, email_input

    results: dict[str, Run] = {}
    with ThreadPoolExecutor(PARALLEL_EMAILS, thread_name_prefix="desk") as pool:
        futures = {pool.submit(SupportDeskOperation.launch, email_input(mail)): mail for mail in inbox}
        for done, future in enumerate(as_completed(futures, timeout=TIMEOUT), 1):
            mail = futures[future]
            try:
                run = future.result()
            except RubotError as exc:
                echo(f"[{done:>2}/{len(inbox)}] {mail['email_id']}  {mail['kind']:<15} ERROR {exc.message}")
                continue
            results[mail["email_id"]] = run
            echo(f"[{done:>2}/{len(inbox)}] {describe(mail, run)}")
    return results


def decide_parked(parked: list[tuple[dict[str, Any], Run]], echo: Echo) -> None:
    """A support agent may not decide; the lead approves the first parked refund and rejects the second."""
    if not parked:
        raise DemoFailure("no refund was parked for a support lead")
    mail, run = parked[0]
    approval = run.pending_approval
    echo(f"{AGENT.display_name} tries to approve {approval.summary if approval else run.id}:")
    try:
        run.approve(AGENT)
        raise DemoFailure("a principal without the support_lead role was allowed to approve a refund")
    except ApprovalForbidden as exc:
        echo(f"  refused: {exc.message}")
    decisions = [("approve", parked[0])] + ([("reject", parked[1])] if len(parked) > 1 else [])
    for verb, (mail, run) in decisions:
        approval = run.pending_approval
        echo(f"{LEAD.display_name} {verb}s {mail['email_id']}: {approval.summary if approval else ''}")
        if verb == "approve":
            run.approve(LEAD, comment="Carrier confirmed the parcel lost.")
        else:
            run.reject(LEAD, comment="Open a carrier claim first; the parcel may still turn up.")
        final = pipeline.wait(run, timeout=TIMEOUT)
        echo(f"  -> {describe(mail, final)}")
    for mail, run in parked[2:]:
        echo(f"{mail['email_id']} stays parked for a support lead ({run.id}).")


def run_support_demo(home: Path, *, model: str = "offline", echo: Echo = print) -> bool:
    """The whole demo in a fresh embedded deployment under ``home``; True when every check held."""
    from pipeline.hosting import make_app
    from rubot_app.tools import support_inbox

    if model == "anthropic" and not os.environ.get("ANTHROPIC_API_KEY"):
        echo("Demo failed: --model anthropic needs ANTHROPIC_API_KEY")
        return False
    started = time.monotonic()
    try:
        home = prepare_home(home)
        settings = demo_settings(home, model)
        app = make_app(settings, name="rubot-support-demo")
        rt = runtime.of_app(app)
        with ExitStack() as stack:
            stack.callback(rt.db.dispose)
            revision = migrate.upgrade(rt.db)
            stack.enter_context(
                patched_environ(SUPPORT_DESK_CARRIER_OUTAGE=OUTAGE, SUPPORT_DESK_DATABASE_URL=settings.database_url)
            )
            stack.callback(runtime.install, runtime.install(rt))
            stack.enter_context(inprocess.worker(app, concurrency=WORKER_THREADS, loglevel="ERROR"))
            inbox = support_inbox.demo_inbox()
            echo("Rubot demo: the refund desk (second reference app), on this machine only.")
            model_line = (
                f"Anthropic {settings.default_model} (ANTHROPIC_API_KEY)"
                if model == "anthropic"
                else "offline support agent: deterministic multi-turn transcripts, token counts estimated and "
                f"priced as {settings.default_model}"
            )
            for line in output.key_values(
                [
                    ("home", f"{home} (wiped)"),
                    ("database", f"{settings.database_url} (migrated to revision {revision})"),
                    ("broker", f"{settings.broker_url}; in-process Celery worker, {WORKER_THREADS} threads"),
                    ("model", model_line),
                    ("inbox", f"{len(inbox)} seeded e-mails; carrier {OUTAGE} in outage mode"),
                ],
                indent="  ",
            ):
                echo(line)
            echo("")
            results = process_inbox(inbox, echo)
            echo("")
            parked = [(m, results[m["email_id"]]) for m in inbox if results.get(m["email_id"]) is not None
                      and results[m["email_id"]].waiting_for_approval]  # fmt: skip
            decide_parked(parked, echo)
            echo("")
            report = support_report.collect(inbox, settings)
            for line in support_report.render(report):
                echo(line)
            found = support_report.problems(report)
            echo("")
            echo("Checks:")
            if found:
                for problem in found:
                    echo(f"  FAILED: {problem}")
            else:
                echo("  every refund applied once at the payment service (by idempotency key and by order)")
                echo("  the prompt injection was refused by the desk's policy; no money moved")
                echo("  the repeated refund requests were answered without a second refund")
                echo("  every run is at rest (finished, or parked for a support lead)")
            echo("")
            echo(f"Demo finished in {time.monotonic() - started:.1f}s.")
            echo(f"Inspect the runs: RUBOT_DATABASE_URL={settings.database_url} rubot runs")
            return not found
    except (DemoFailure, RubotError) as exc:
        echo(f"Demo failed: {exc}")
        return False
