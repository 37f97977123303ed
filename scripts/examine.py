"""Commands of the ``rubot`` command line that examine what happened: verify, replay, diff, stats, seed, graph."""

from __future__ import annotations

import json
import uuid

import click

from pipeline.errors import ConfigurationError
from rubot_app.scripts import output
from rubot_app.scripts.clikit import RUN_ERROR, cli_runtime, echo_lines


@click.command()
@click.argument("run_id", required=False)
def verify(run_id: str | None) -> None:
    """Check the event chain of RUN_ID (or of every run); exit 1 naming the first broken link of each."""
    import pipeline

    cli_runtime()
    broken = pipeline.verify(run_id)
    for found in broken:
        click.echo(found.describe())
    if broken:
        raise click.exceptions.Exit(RUN_ERROR)
    click.echo(f"Event chain intact: {run_id}." if run_id else "Every run's event chain is intact.")


@click.command()
@click.argument("run_id")
@click.option("--from", "from_step", metavar="STEP", help="Run live from this step or agent turn (research/turn-4).")
@click.option("--wait", is_flag=True, help="Wait until the new run completes, fails or waits for a person.")
@click.option("--diff", "show_diff", is_flag=True, help="Wait, then show where the new run departed from RUN_ID.")
@click.option("--timeout", type=float, default=300.0, show_default=True, help="Seconds --wait/--diff wait at most.")
def replay(run_id: str, from_step: str | None, wait: bool, show_diff: bool, timeout: float) -> None:
    """Start a new run from RUN_ID's records: reuse its model responses and tool results before --from."""
    import pipeline

    cli_runtime()
    run = pipeline.replay(run_id, from_step=from_step)
    click.echo(f"Replay {run.id} of {run_id} from {from_step or '(end)'}; it is {run.status}.")
    if wait or show_diff:
        run = pipeline.wait(run, timeout=timeout)
        click.echo(f"Run is now {run.status}.")
    if show_diff:
        _echo_departure(run_id, run.id)


@click.command()
@click.argument("run_a")
@click.argument("run_b")
def diff(run_a: str, run_b: str) -> None:
    """Show where RUN_B departed from RUN_A: the first step, turn or tool call whose recorded output differs."""
    cli_runtime()
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


@click.command()
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
    rt = cli_runtime()
    found = rt.db.reading(lambda s: metrics.collect(s, since=start, workflow=workflow))
    if as_json:
        click.echo(json.dumps(found.to_json(), indent=2))
    else:
        from rubot_app.scripts.stats_output import stats_lines

        echo_lines(stats_lines(found))


@click.command()
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

    done = seed_runs(cli_runtime(), count, days=days, seed=seed_value, prefix=f"seed{uuid.uuid4().hex[:6]}")
    click.echo(
        f"Seeded {done.runs} runs ({done.events} events, {done.effects} ledger rows, {done.approvals} approvals)."
    )


@click.command()
@click.argument("name")
def graph(name: str) -> None:
    """Print workflow NAME's steps as a Mermaid flowchart (what the console's workflow page draws)."""
    from pipeline.definitions import registry
    from pipeline.definitions.graph import mermaid

    click.echo(mermaid(registry.workflow_of(cli_runtime(migrated=False), name)), nl=False)


COMMANDS = (verify, replay, diff, stats, seed, graph)
