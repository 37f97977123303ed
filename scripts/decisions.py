"""Commands of the ``rubot`` command line that decide or move runs: approve, reject, request-changes,
launch-operation, cancel, reconcile and retry."""

from __future__ import annotations

from typing import Any

import click

from rubot_app.scripts import output
from rubot_app.scripts.clikit import RUN_ERROR, cli_runtime, fail, payload

# --- decisions --------------------------------------------------------------------------------------------


def _decision_command(name: str, method: str, verb: str, summary: str) -> click.Command:
    @click.command(name=name, help=summary)
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
    @click.option("--payload", callback=payload, metavar="JSON", help="JSON data stored with the decision.")
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

        rt = cli_runtime()
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
            fail(
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

    return command


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


approve = _decision_command("approve", "approve", "Approved", "Approve a run's pending approval; the run resumes.")
reject = _decision_command("reject", "reject", "Rejected", "Reject a run's pending approval.")
request_changes = _decision_command(
    "request-changes",
    "request_changes",
    "Requested changes on",
    "Send a run's pending approval back with requested changes.",
)


@click.command(name="launch-operation")
@click.argument("name")
@click.option("--input", "input_", callback=payload, metavar="JSON", help="The operation's input.")
@click.option("--subject", callback=payload, metavar="JSON", help="What the runs are about.")
@click.option("--context", callback=payload, metavar="JSON", help="The runs' context (e.g. the user).")
@click.option("--wait", "wait_", is_flag=True, help="Wait until the routing returned, as Operation.launch does.")
@click.option("--timeout", type=float, default=None, help="With --wait: give up after this many seconds.")
def launch_operation(name: str, input_: Any, subject: Any, context: Any, wait_: bool, timeout: float | None) -> None:
    """Start the Operation registered as NAME (its name or an entry point); print its run id."""
    import pipeline
    from pipeline.operations import returned_run

    cli_runtime()
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
            fail(f"{run.id} is {run.status}: {(run.error or {}).get('message', '')}", RUN_ERROR)


@click.command()
@click.argument("run_id")
@click.option("--by", help="Who cancels (recorded in the event trail).")
@click.option("--reason", help="Why (recorded on the run).")
def cancel(run_id: str, by: str | None, reason: str | None) -> None:
    """Cancel a run: no step starts after this."""
    import pipeline

    cli_runtime()
    run = pipeline.get_run(run_id)
    previous = run.status
    run.cancel(by=by, reason=reason)
    click.echo(f"Cancelled {run.id} (was {previous}); it is now {run.status}.")


@click.command()
@click.argument("run_id")
@click.option("--by", required=True, help="Who checked the downstream system (recorded).")
@click.option("--happened/--not-happened", required=True, help="Whether the interrupted side effect took place.")
@click.option("--result", callback=payload, metavar="JSON", help="Its outcome, when it happened.")
@click.option("--comment", help="What was checked.")
def reconcile(run_id: str, by: str, happened: bool, result: Any, comment: str | None) -> None:
    """Settle a run in needs_reconciliation: record the outcome, or run the operation again."""
    import pipeline

    cli_runtime()
    run = pipeline.get_run(run_id).reconcile(by=by, happened=happened, result=result, comment=comment)
    click.echo(f"Reconciled {run.id}; it is now {run.status}.")


@click.command()
@click.argument("run_id")
@click.option("--by", required=True, help="Who retries (recorded).")
def retry(run_id: str, by: str) -> None:
    """Run a dead_letter run again from its last recorded point."""
    import pipeline

    cli_runtime()
    run = pipeline.get_run(run_id).retry(by=by)
    click.echo(f"Retrying {run.id}; it is now {run.status}.")


COMMANDS = (approve, reject, request_changes, launch_operation, cancel, reconcile, retry)
