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
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import click

from pipeline.errors import ConfigurationError
from pipeline.store.tables import RUN_STATUSES
from rubot_app.scripts import access, decisions, examine, output
from rubot_app.scripts.clikit import (
    RUN_ERROR,
    SETUP_ERROR,  # noqa: F401  (part of this module's interface: the exit status of setup errors)
    RubotGroup,
    celery_app_module,
    cli_runtime,
    echo_lines,
)

WEB_APP = "rubot_app.scripts.web"


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

    db = cli_runtime(migrated=False).db
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

    cli_runtime()
    echo_lines(output.run_table(pipeline.list_runs(status=list(statuses) or None, workflow=workflow, limit=limit)))


@main.command()
@click.argument("run_id")
@click.option("--full", is_flag=True, help="Do not shorten long values.")
def show(run_id: str, full: bool) -> None:
    """Show one run: status, data, approvals, ledger and event trail."""
    import pipeline

    cli_runtime()
    echo_lines(output.run_detail(pipeline.get_run(run_id), full=full))


# --- batches ----------------------------------------------------------------------------------------------


@main.command()
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True, help="At most this many.")
def batches(limit: int) -> None:
    """List recent scheduled batches, newest first, with how far their runs got."""
    from pipeline import batches as batch_api

    echo_lines(output.batch_table(batch_api.list_batches(cli_runtime(), limit=limit)))


@main.group(cls=RubotGroup)
def batch() -> None:
    """Inspect one scheduled batch."""


@batch.command("show")
@click.argument("batch_id")
@click.option("--limit", type=click.IntRange(1, 10_000), default=200, show_default=True, help="Runs to list.")
def batch_show(batch_id: str, limit: int) -> None:
    """Show a batch: its schedule and tick, progress by run status, and its runs."""
    from pipeline import batches as batch_api

    rt = cli_runtime()
    echo_lines(output.batch_detail(batch_api.progress(rt, batch_id), batch_api.runs_of(rt, batch_id, limit=limit)))


# --- processes --------------------------------------------------------------------------------------------


def _settings() -> Any:
    from rubot_app.config.settings import load

    return load()


def _importable_workflows(settings: Any) -> None:
    """Import the workflow modules before starting a worker or beat, so a broken one is one line here and not a
    traceback in the server's log (``DefinitionError`` naming the module and its error)."""
    from pipeline.definitions import registry

    registry.import_modules(settings.workflow_modules)


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
        celery_app_module(),
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
        celery_app_module(),
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
        celery_app_module(),
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


for command in (access.tokens, *examine.COMMANDS, *decisions.COMMANDS):
    main.add_command(command)

if __name__ == "__main__":
    main()
