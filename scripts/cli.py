"""The ``rubot`` command line: operate a Rubot deployment and run the demo.

Commands that read or decide runs (``runs``, ``show``, ``approve``, ...) use the runtime this process has
installed (:func:`pipeline.runtime.current`); when there is none, they import this deployment's Celery app
module (``rubot_app.tasks.app``, or ``RUBOT_CELERY_APP``), which builds it from the environment and installs it.
The process commands (``worker``, ``beat``, ``web``, ``flower``) replace this process with the real server,
configured from the same environment; ``demo`` builds its own embedded deployment and ignores the database and
broker settings.

Errors Rubot raises on purpose print one line on stderr and exit with status 1 (a run cannot do that) or 2
(setup: configuration, migrations, a missing component); never a traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import os
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import click

from pipeline.errors import ConfigurationError, DefinitionError, RubotError
from pipeline.store.tables import RUN_STATUSES
from rubot_app.scripts import access, output

SETUP_ERROR = 2
RUN_ERROR = 1
DEFAULT_CELERY_APP = "rubot_app.tasks.app"
WEB_APP = "rubot_app.scripts.web"


class RubotGroup(click.Group):
    """A click group that turns Rubot and connection errors into one line on stderr and an exit status."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RubotError as exc:
            _fail(exc.message, SETUP_ERROR if isinstance(exc, DefinitionError) else RUN_ERROR)
        except Exception as exc:
            problem = _connection_problem(exc)
            if problem is None:
                raise
            _fail(problem, SETUP_ERROR)


def _connection_problem(exc: Exception) -> str | None:
    """A one-line explanation when the database or the broker cannot be reached, else ``None``."""
    from kombu.exceptions import OperationalError as BrokerError
    from sqlalchemy.exc import OperationalError as DatabaseError

    if isinstance(exc, DatabaseError):
        first_line = next(iter(str(exc.orig).strip().splitlines()), type(exc.orig).__name__)
        return f"cannot use the database: {first_line}"
    if isinstance(exc, BrokerError):
        return f"cannot reach the broker: {exc}"
    return None


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"rubot: error: {message}", err=True)
    raise click.exceptions.Exit(code)


def _echo_lines(lines: Sequence[str]) -> None:
    click.echo("\n".join(lines))


def _runtime(*, migrated: bool = True) -> Any:
    """The installed runtime; by default checked to be migrated, so a fresh database gets a clear error."""
    from pipeline import runtime

    try:
        rt = runtime.current()
    except ConfigurationError:
        module = _celery_app_module()
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigurationError(f"cannot import the Rubot Celery app module {module!r}: {exc}") from exc
        rt = runtime.current()
    if migrated:
        # The schema check goes through Alembic, whose INFO chatter is noise on a read command.
        logging.getLogger("alembic").setLevel(logging.WARNING)
        rt.db.check_migrated()
        # The workflow modules' schemas say which fields are sensitive: what is printed is redacted by them.
        from pipeline.definitions import registry

        registry.import_modules(rt.settings.workflow_modules)
    return rt


def _payload(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON ({exc.msg} at position {exc.pos})") from None


def _version() -> str:
    from configparser import ConfigParser
    from importlib import metadata

    try:
        return metadata.version("rubot")
    except metadata.PackageNotFoundError:  # a source checkout: read the version from setup.cfg
        config = ConfigParser()
        config.read(Path(__file__).resolve().parent.parent / "setup.cfg")
        return config.get("metadata", "version", fallback="unknown")


@click.group(cls=RubotGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(version=_version(), message="rubot %(version)s")
def main() -> None:
    """Rubot: governed AI-agent workflows on Celery.

    Configure with RUBOT_* environment variables (see the README); `rubot demo` needs none.
    """


# --- database ---------------------------------------------------------------------------------------------


@main.command()
def migrate() -> None:
    """Upgrade the configured database to the latest Rubot schema."""
    from sqlalchemy.engine import make_url

    from pipeline.store import migrate as store_migrate

    db = _runtime(migrated=False).db
    revision = store_migrate.upgrade(db)
    url = make_url(db.url).render_as_string(hide_password=True)
    click.echo(f"Database {url} is at revision {revision} (head).")


# --- runs -------------------------------------------------------------------------------------------------


@main.command()
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(RUN_STATUSES),
    help="Only runs in this status (repeatable).",
)
@click.option("--workflow", help="Only runs of this workflow (class name).")
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True, help="At most this many.")
def runs(statuses: tuple[str, ...], workflow: str | None, limit: int) -> None:
    """List recent runs, newest first."""
    import pipeline

    _runtime()
    _echo_lines(output.run_table(pipeline.list_runs(status=list(statuses) or None, workflow=workflow, limit=limit)))


@main.command()
@click.argument("run_id")
@click.option("--full", is_flag=True, help="Do not shorten long values.")
def show(run_id: str, full: bool) -> None:
    """Show one run: status, data, approvals, ledger and event trail."""
    import pipeline

    _runtime()
    _echo_lines(output.run_detail(pipeline.get_run(run_id), full=full))


@main.command()
@click.argument("run_id", required=False)
def verify(run_id: str | None) -> None:
    """Check the event chain of RUN_ID (or of every run); exit 1 naming the first broken link of each."""
    import pipeline

    _runtime()
    broken = pipeline.verify(run_id)
    for found in broken:
        click.echo(found.describe())
    if broken:
        raise click.exceptions.Exit(RUN_ERROR)
    click.echo(f"Event chain intact: {run_id}." if run_id else "Every run's event chain is intact.")


@main.command()
@click.argument("run_id")
@click.option("--from", "from_step", metavar="STEP", help="Run live from this step or agent turn (research/turn-4).")
@click.option("--wait", is_flag=True, help="Wait until the new run completes, fails or waits for a person.")
@click.option("--diff", "show_diff", is_flag=True, help="Wait, then show where the new run departed from RUN_ID.")
@click.option("--timeout", type=float, default=300.0, show_default=True, help="Seconds --wait/--diff wait at most.")
def replay(run_id: str, from_step: str | None, wait: bool, show_diff: bool, timeout: float) -> None:
    """Start a new run from RUN_ID's records: reuse its model responses and tool results before --from."""
    import pipeline

    _runtime()
    run = pipeline.replay(run_id, from_step=from_step)
    click.echo(f"Replay {run.id} of {run_id} from {from_step or '(end)'}; it is {run.status}.")
    if wait or show_diff:
        run = pipeline.wait(run, timeout=timeout)
        click.echo(f"Run is now {run.status}.")
    if show_diff:
        _echo_departure(run_id, run.id)


@main.command()
@click.argument("run_a")
@click.argument("run_b")
def diff(run_a: str, run_b: str) -> None:
    """Show where RUN_B departed from RUN_A: the first step, turn or tool call whose recorded output differs."""
    _runtime()
    _echo_departure(run_a, run_b)


def _echo_departure(run_a: str, run_b: str) -> None:
    import pipeline

    found = pipeline.diff(run_a, run_b)
    if found is None:
        click.echo(f"No departure: {run_b} recorded what {run_a} recorded.")
        return
    click.echo(f"First departure: {found.describe()}")
    click.echo(f"  {run_a}: {output.compact(found.a, 300)}")
    click.echo(f"  {run_b}: {output.compact(found.b, 300)}")


@main.command()
@click.option("--workflow", help="Only runs of this workflow (class name).")
@click.option(
    "--since",
    default="24h",
    show_default=True,
    help="Runs created since: a span (30m, 24h, 7d, 2w) or an ISO date/time (UTC unless it says).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def stats(workflow: str | None, since: str, as_json: bool) -> None:
    """Metrics per workflow and agent: runs by status, turns, tokens, cost, tool errors, failures, approvals."""
    from pipeline.store import metrics

    try:
        start = metrics.parse_since(since)
    except ConfigurationError as exc:
        raise click.BadParameter(exc.message.removeprefix(f"--since {since!r} "), param_hint="--since") from None
    rt = _runtime()
    found = rt.db.reading(lambda s: metrics.collect(s, since=start, workflow=workflow))
    if as_json:
        click.echo(json.dumps(found.to_json(), indent=2))
    else:
        from rubot_app.scripts.stats_output import stats_lines

        _echo_lines(stats_lines(found))


@main.command()
@click.option("--runs", "count", type=click.IntRange(1, 1_000_000), default=300, show_default=True, help="Runs to add.")
@click.option(
    "--days", type=click.FloatRange(0.01, 365), default=7.0, show_default=True, help="Spread over this many days."
)
@click.option(
    "--seed", "seed_value", type=int, default=0, show_default=True, help="Random seed (same seed, same runs)."
)
def seed(count: int, days: float, seed_value: int) -> None:
    """Fill the database with made-up runs (statuses, turns, costs, approvals) for the console and stats.

    For a scratch database only: the runs are invented and never move.
    """
    from rubot_app.scripts.seed import seed as seed_runs

    done = seed_runs(_runtime(), count, days=days, seed=seed_value, prefix=f"seed{uuid.uuid4().hex[:6]}")
    click.echo(
        f"Seeded {done.runs} runs ({done.events} events, {done.effects} ledger rows, {done.approvals} approvals)."
    )


@main.command()
@click.argument("name")
def graph(name: str) -> None:
    """Print workflow NAME's steps as a Mermaid flowchart (what the console's workflow page draws)."""
    from pipeline.definitions import registry
    from pipeline.definitions.graph import mermaid

    click.echo(mermaid(registry.workflow_of(_runtime(migrated=False), name)), nl=False)


# --- decisions --------------------------------------------------------------------------------------------


def _decision_command(name: str, method: str, verb: str, summary: str) -> None:
    @main.command(name=name, help=summary)
    @click.argument("run_id")
    @click.option("--by", "by", required=True, help="Who decides (recorded on the approval).")
    @click.option(
        "--role",
        "roles",
        multiple=True,
        metavar="ROLE",
        help="A role WHO holds (repeatable). With --role the decision is checked like a web one: WHO must hold "
        "the approval's role or be its assignee. Without it this is a trusted operator's call (via cli).",
    )
    @click.option("--comment", help="A note stored with the decision.")
    @click.option("--payload", callback=_payload, metavar="JSON", help="JSON data stored with the decision.")
    @click.option("--approval", "approval_id", metavar="ID", help="Decide this approval (default: the pending one).")
    @click.option("--wait", is_flag=True, help="Wait until the run completes, fails or waits again.")
    @click.option("--timeout", type=float, default=120.0, show_default=True, help="Seconds --wait waits at most.")
    def command(
        run_id: str,
        by: str,
        roles: tuple[str, ...],
        comment: str | None,
        payload: Any,
        approval_id: str | None,
        wait: bool,
        timeout: float,
    ) -> None:
        from kombu.exceptions import OperationalError as BrokerError

        import pipeline
        from pipeline.auth import Principal
        from rubot_app.scripts import progress

        rt = _runtime()
        run = pipeline.get_run(run_id)
        seen = max((event.id for event in run.events), default=0)
        decider: Any = Principal.of(by, roles=roles, via="cli") if roles else by
        try:
            approval = getattr(run, method)(decider, payload, comment=comment, approval_id=approval_id, via="cli")
        except BrokerError as exc:
            # The decision committed before its resume message could be sent: say what is true.
            approval = _recorded_decision(pipeline.get_run(run_id), approval_id, by)
            if approval is None:
                raise
            click.echo(f"{verb} {approval.id} ({approval.step}, {approval.role}) of {run.id} by {by}.")
            url = _shown_url(rt.settings.broker_url)
            _fail(
                f"the decision is recorded, but the broker at {url} cannot be reached ({exc}); the run will resume "
                "when the broker is back (the recovery sweep of `rubot beat` sends it again)",
                RUN_ERROR,
            )
        click.echo(f"{verb} {approval.id} ({approval.step}, {approval.role}) of {run.id} by {by}.")
        if wait:
            click.echo(f"Waiting for {run.id} (at most {timeout:g}s)...")
            run = progress.follow(
                lambda: pipeline.wait(run, timeout=timeout),
                progress.RunFollower(run.id, click.echo, after=seen),
                timeout=timeout,
            )
        else:
            run.refresh()
        click.echo(f"Run is now {run.status}.")
        if run.status == "failed" and run.error:
            click.echo(f"Error: {output.compact(run.error, 200)}")


def _recorded_decision(run: Any, approval_id: str | None, by: str) -> Any:
    """The approval ``by`` just decided on ``run`` (``approval_id``, or the latest one), if it is recorded."""
    for approval in reversed(run.approvals):
        if approval_id is not None and approval.id != approval_id:
            continue
        if approval.status != "pending" and approval.decided_by == by:
            return approval
        return None
    return None


def _shown_url(url: str) -> str:
    from kombu.utils.url import maybe_sanitize_url

    return str(maybe_sanitize_url(url))


_decision_command("approve", "approve", "Approved", "Approve a run's pending approval; the run resumes.")
_decision_command("reject", "reject", "Rejected", "Reject a run's pending approval.")
_decision_command(
    "request-changes",
    "request_changes",
    "Requested changes on",
    "Send a run's pending approval back with requested changes.",
)


@main.command(name="launch-operation")
@click.argument("name")
@click.option("--input", "input_", callback=_payload, metavar="JSON", help="The operation's input.")
@click.option("--subject", callback=_payload, metavar="JSON", help="What the runs are about.")
@click.option("--context", callback=_payload, metavar="JSON", help="The runs' context (e.g. the user).")
@click.option("--wait", "wait_", is_flag=True, help="Wait until the routing returned, as Operation.launch does.")
@click.option("--timeout", type=float, default=None, help="With --wait: give up after this many seconds.")
def launch_operation(name: str, input_: Any, subject: Any, context: Any, wait_: bool, timeout: float | None) -> None:
    """Start the Operation registered as NAME (its name or an entry point); print its run id."""
    import pipeline
    from pipeline.operations import returned_run

    _runtime()
    run = pipeline.trigger(name, input_, subject=subject, context=context)
    click.echo(f"Launched {run.id} ({run.workflow}); it is {run.status}.")
    if wait_:
        run = pipeline.wait(run, timeout=timeout)
        returned = returned_run(run)
        if returned is not run:
            click.echo(f"{run.id} is {run.status}; it returned {returned.id} ({returned.workflow}), {returned.status}.")
        else:
            click.echo(f"{run.id} is {run.status}.")
        if run.status != "completed":
            _fail(f"{run.id} is {run.status}: {(run.error or {}).get('message', '')}", RUN_ERROR)


@main.command()
@click.argument("run_id")
@click.option("--by", help="Who cancels (recorded in the event trail).")
@click.option("--reason", help="Why (recorded on the run).")
def cancel(run_id: str, by: str | None, reason: str | None) -> None:
    """Cancel a run: no step starts after this."""
    import pipeline

    _runtime()
    run = pipeline.get_run(run_id)
    previous = run.status
    run.cancel(by=by, reason=reason)
    click.echo(f"Cancelled {run.id} (was {previous}); it is now {run.status}.")


@main.command()
@click.argument("run_id")
@click.option("--by", required=True, help="Who checked the downstream system (recorded).")
@click.option("--happened/--not-happened", required=True, help="Whether the interrupted side effect took place.")
@click.option("--result", callback=_payload, metavar="JSON", help="Its outcome, when it happened.")
@click.option("--comment", help="What was checked.")
def reconcile(run_id: str, by: str, happened: bool, result: Any, comment: str | None) -> None:
    """Settle a run in needs_reconciliation: record the outcome, or run the operation again."""
    import pipeline

    _runtime()
    run = pipeline.get_run(run_id).reconcile(by=by, happened=happened, result=result, comment=comment)
    click.echo(f"Reconciled {run.id}; it is now {run.status}.")


@main.command()
@click.argument("run_id")
@click.option("--by", required=True, help="Who retries (recorded).")
def retry(run_id: str, by: str) -> None:
    """Run a dead_letter run again from its last recorded point."""
    import pipeline

    _runtime()
    run = pipeline.get_run(run_id).retry(by=by)
    click.echo(f"Retrying {run.id}; it is now {run.status}.")


# --- batches ----------------------------------------------------------------------------------------------


@main.command()
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True, help="At most this many.")
def batches(limit: int) -> None:
    """List recent scheduled batches, newest first, with how far their runs got."""
    from pipeline import batches as batch_api

    _echo_lines(output.batch_table(batch_api.list_batches(_runtime(), limit=limit)))


@main.group(cls=RubotGroup)
def batch() -> None:
    """Inspect one scheduled batch."""


@batch.command("show")
@click.argument("batch_id")
@click.option("--limit", type=click.IntRange(1, 10_000), default=200, show_default=True, help="Runs to list.")
def batch_show(batch_id: str, limit: int) -> None:
    """Show a batch: its schedule and tick, progress by run status, and its runs."""
    from pipeline import batches as batch_api

    rt = _runtime()
    _echo_lines(output.batch_detail(batch_api.progress(rt, batch_id), batch_api.runs_of(rt, batch_id, limit=limit)))


# --- processes --------------------------------------------------------------------------------------------


def _settings() -> Any:
    from rubot_app.config.settings import load

    return load()


def _importable_workflows(settings: Any) -> None:
    """Import the workflow modules before starting a worker or beat, so a broken one is one line here and not a
    traceback in the server's log (``DefinitionError`` naming the module and its error)."""
    from pipeline.definitions import registry

    registry.import_modules(settings.workflow_modules)


def _celery_app_module() -> str:
    return os.environ.get("RUBOT_CELERY_APP", DEFAULT_CELERY_APP)


def exec_command(argv: list[str]) -> NoReturn:
    """Replace this process with ``argv`` (flushing our output first); tests replace this function."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp(argv[0], argv)


def worker_argv(
    settings: Any, *, concurrency: int | None, loglevel: str, pool: str | None, extra: Sequence[str] = ()
) -> list[str]:
    """``celery -A rubot_app.tasks.app worker -Q <queue> ...`` for this interpreter."""
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        _celery_app_module(),
        "worker",
        "-Q",
        settings.queue,
        f"--loglevel={loglevel}",
    ]
    if concurrency is not None:
        argv.append(f"--concurrency={concurrency}")
    if pool is not None:
        argv.append(f"--pool={pool}")
    return argv + list(extra)


def beat_argv(settings: Any, *, loglevel: str, extra: Sequence[str] = ()) -> list[str]:
    """``celery -A rubot_app.tasks.app beat`` with its schedule file kept under ``RUBOT_HOME``."""
    schedule = Path(settings.home) / "celerybeat-schedule"
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        _celery_app_module(),
        "beat",
        f"--schedule={schedule}",
        f"--loglevel={loglevel}",
        *extra,
    ]


def web_argv(*, host: str, port: int, extra: Sequence[str] = ()) -> list[str]:
    """gunicorn serving the approval and admin web app from its factory."""
    return [sys.executable, "-m", "gunicorn", f"{WEB_APP}:create()", "--bind", f"{host}:{port}", *extra]


PASSTHROUGH = {"ignore_unknown_options": True, "allow_extra_args": False}


@main.command(context_settings=PASSTHROUGH)
@click.option("--concurrency", "-c", type=click.IntRange(1), help="Worker processes/threads (Celery's default).")
@click.option("--loglevel", "-l", default="INFO", show_default=True, help="Celery log level.")
@click.option(
    "--pool",
    "-P",
    type=click.Choice(["prefork", "threads", "solo", "eventlet", "gevent"]),
    help="Celery execution pool (Celery's default: prefork).",
)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(concurrency: int | None, loglevel: str, pool: str | None, celery_args: tuple[str, ...]) -> None:
    """Run a Celery worker consuming the Rubot queue (extra arguments go to `celery worker`)."""
    settings = _settings()
    _importable_workflows(settings)
    exec_command(worker_argv(settings, concurrency=concurrency, loglevel=loglevel, pool=pool, extra=celery_args))


@main.command(context_settings=PASSTHROUGH)
@click.option("--loglevel", "-l", default="INFO", show_default=True, help="Celery log level.")
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def beat(loglevel: str, celery_args: tuple[str, ...]) -> None:
    """Run Celery beat (scheduled sweeps and batch jobs); its schedule file lives under RUBOT_HOME."""
    settings = _settings()
    _importable_workflows(settings)
    Path(settings.home).mkdir(parents=True, exist_ok=True)
    exec_command(beat_argv(settings, loglevel=loglevel, extra=celery_args))


@main.command(context_settings=PASSTHROUGH)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True, help="Port to listen on.")
@click.argument("gunicorn_args", nargs=-1, type=click.UNPROCESSED)
def web(host: str, port: int, gunicorn_args: tuple[str, ...]) -> None:
    """Serve the approval endpoint and admin pages with gunicorn (extra arguments go to gunicorn)."""
    try:
        found = importlib.util.find_spec(WEB_APP) is not None
    except ModuleNotFoundError:
        found = False
    if not found:
        raise ConfigurationError(f"the web app module {WEB_APP} is not available in this installation")
    access.announce_web_auth(host, loopback=LOOPBACK)
    exec_command(web_argv(host=host, port=port, extra=gunicorn_args))


LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def flower_argv(*, address: str, port: int, extra: Sequence[str] = ()) -> list[str]:
    """``celery -A rubot_app.tasks.app flower``; Flower reads ``FLOWER_BASIC_AUTH`` from the environment itself."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        _celery_app_module(),
        "flower",
        f"--address={address}",
        f"--port={port}",
        *extra,
    ]


@main.command(context_settings=PASSTHROUGH)
@click.option("--address", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=5555, show_default=True, help="Port to listen on.")
@click.argument("flower_args", nargs=-1, type=click.UNPROCESSED)
def flower(address: str, port: int, flower_args: tuple[str, ...]) -> None:
    """Run Flower to watch workers and queues (extra arguments go to Flower).

    Flower shows task arguments and can revoke tasks, so it listens on loopback unless FLOWER_BASIC_AUTH
    (user:password) is set; the credentials stay in the environment, out of the process list.
    """
    if address not in LOOPBACK and not os.environ.get("FLOWER_BASIC_AUTH"):
        raise ConfigurationError(f"refusing to serve Flower on {address} without FLOWER_BASIC_AUTH=user:password")
    exec_command(flower_argv(address=address, port=port, extra=flower_args))


# --- demo -------------------------------------------------------------------------------------------------


@main.command()
@click.argument("app", type=click.Choice(["travel", "support"]), default="travel")
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Demo folder (SQLite database and broker); wiped at the start. [default: .rubot/demo, .rubot/demo-support]",
)
@click.option(
    "--model",
    type=click.Choice(["offline", "anthropic"]),
    default="offline",
    show_default=True,
    help="support only: the offline support agent, or the real model (needs ANTHROPIC_API_KEY).",
)
def demo(app: str, home: Path | None, model: str) -> None:
    """Run a reference app end to end with no servers: APP is travel (the conference-travel review, the default)
    or support (the refund desk over its seeded inbox of 50 e-mails)."""
    if app == "support":
        from rubot_app.scripts.support_demo import run_support_demo

        ok = run_support_demo(home or Path(".rubot/demo-support"), model=model, echo=click.echo)
    else:
        from rubot_app.scripts.demo import run_demo

        ok = run_demo(home or Path(".rubot/demo"), echo=click.echo)
    if not ok:
        raise click.exceptions.Exit(RUN_ERROR)


@main.command()
@click.option(
    "--stack",
    type=click.Choice(["all", "production", "embedded"]),
    default="all",
    show_default=True,
    help="production: Redis + Postgres (RUBOT_BENCH_REDIS, RUBOT_BENCH_POSTGRES_ADMIN); embedded: SQLite + files.",
)
@click.option("--repeats", type=click.IntRange(1), default=7, show_default=True, help="Measurements per scenario.")
@click.option("--runs", type=click.IntRange(1), default=300, show_default=True, help="Runs in the throughput scenario.")
@click.option("--concurrency", type=click.IntRange(1), default=4, show_default=True, help="Worker processes per side.")
@click.option("--quick", is_flag=True, help="A smoke run: one repeat, ten runs (CI).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Also write JSON here.")
def bench(stack: str, repeats: int, runs: int, concurrency: int, quick: bool, json_path: Path | None) -> None:
    """Measure Rubot's hot path against raw Celery in the same run and print the ratios."""
    from rubot_app.scripts.bench import main as bench_main

    argv = ["--stack", stack, "--repeats", str(repeats), "--runs", str(runs), "--concurrency", str(concurrency)]
    argv += ["--quick"] if quick else []
    argv += ["--json", str(json_path)] if json_path else []
    raise click.exceptions.Exit(bench_main(argv))


main.add_command(access.tokens)

if __name__ == "__main__":
    main()
