"""The HTML admin: runs, a run's trail, pending approvals, and the approval form that resumes a run.

Pages are GET only; the four actions are POST only and need the session's CSRF token. After a successful
action the browser is redirected to the run (post/redirect/get), so a reload never repeats a decision.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from werkzeug.exceptions import Forbidden
from werkzeug.wrappers import Response

from pipeline.auth.principal import Principal
from pipeline.errors import RubotError
from pipeline.redact import redact
from pipeline.store.tables import RUN_STATUSES
from pipeline.web import auth, console, decisions, links, principals, reads
from pipeline.web.errors import invalid_request, status_for
from pipeline.web.security import check_csrf, csrf_token, secure_headers

log = logging.getLogger("rubot.web")

bp = Blueprint("rubot", __name__, template_folder="templates")
bp.after_request(secure_headers)


@bp.app_template_filter("rubot_pretty")
def pretty(value: Any) -> str:
    """Indented JSON for the pages, secrets redacted (Jinja autoescape escapes it like any other string)."""
    return json.dumps(redact(value), indent=2, sort_keys=True, ensure_ascii=False, default=str)


@bp.app_template_filter("rubot_compact")
def compact(value: Any) -> str:
    """One-line JSON, secrets redacted (escaped by Jinja like any other string)."""
    return json.dumps(redact(value), sort_keys=True, ensure_ascii=False, default=str, separators=(", ", ": "))


@bp.app_template_filter("rubot_seconds")
def seconds(value: float | None) -> str:
    """A duration: ``0.42 s``, ``12.3 s``, ``4m05s``, ``2h07m``."""
    if value is None:
        return "—"
    if value < 60:
        return f"{value:.2f} s" if value < 10 else f"{value:.1f} s"
    whole = int(value)
    return f"{whole // 60}m{whole % 60:02d}s" if whole < 3600 else f"{whole // 3600}h{whole % 3600 // 60:02d}m"


@bp.app_template_filter("rubot_pretty_approver")
def pretty_for_approvers(value: Any) -> str:
    """:func:`pretty` for what an approver is shown: each sensitive field shows what it allows approvers."""
    return json.dumps(redact(value, for_approvers=True), indent=2, sort_keys=True, ensure_ascii=False, default=str)


@bp.app_template_filter("rubot_when")
def when(value: datetime | None) -> str:
    """A timestamp in UTC (SQLite hands back naive datetimes that are UTC already)."""
    if value is None:
        return "—"
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


bp.add_app_template_global(csrf_token, "rubot_csrf_token")


# Mounted in a host (the Flask extension, the Django app): no principal means the host's login, not a page.
bp.before_request(principals.require_principal)


@bp.before_request
def _require_csrf_on_post() -> None:
    if request.method == "POST":
        check_csrf()


@bp.errorhandler(RubotError)
def rubot_error_page(exc: RubotError) -> tuple[str, int]:
    """A Rubot error as an HTML page with its HTTP status (the Batches pages use it too)."""
    status = status_for(exc)
    if status >= 500:
        log.error("web request %s %s failed: %s", request.method, request.path, exc, exc_info=exc)
    run_id = (request.view_args or {}).get("run_id")
    return render_template(
        "rubot_error.html", status=status, reason=exc.reason, message=exc.message, run_id=run_id
    ), status


@bp.get("/")
def index() -> Response:
    return redirect(url_for("rubot.runs"))


@bp.get("/runs")
def runs() -> str:
    """The runs list, filtered by status, workflow, subject, user and creation date, paginated in SQL."""
    where = console.RunFilter.from_args(request.args)
    per_page = _int_arg("per_page", default=console.PER_PAGE, low=1, high=500)
    found = console.runs_page(where, page=_int_arg("page", default=1, low=1, high=10**9), per_page=per_page)
    return render_template("rubot_runs.html", found=found, where=where, statuses=RUN_STATUSES)


@bp.get("/runs/<run_id>")
def run_detail(run_id: str) -> str:
    """A run as a timeline (numbered events, step durations, who did what), its agents' transcripts, approvals,
    ledger and the operator's actions; refreshed while the run is queued or running."""
    run = reads.get_run(run_id)
    entries, steps = console.timeline(run)
    who = auth.principal()
    return render_template(
        "rubot_run.html",
        run=run,
        entries=entries,
        steps=steps,
        transcript=console.transcript(run),
        departure=reads.departure(run),
        operator=who is not None and auth.may_operate(who),
        refresh=run.status in ("queued", "running"),
    )


@bp.get("/approvals")
def approvals() -> str:
    """The inbox: only the approvals the signed-in principal may decide."""
    who = auth.principal()
    return render_template(
        "rubot_approvals.html",
        items=reads.pending_approvals(who),
        principal=who,
        configured=auth.page_authenticator() is not None,
    )


@bp.get("/approvals/<run_id>")
def approval(run_id: str) -> str:
    return _approval_page(run_id)


def _approval_page(run_id: str, *, error: str | None = None, form: dict[str, Any] | None = None) -> str:
    run = reads.get_run(run_id)
    decided = [a for a in run.approvals if a.status != "pending"]
    pending = reads.open_approval(run)
    who = auth.principal()
    return render_template(
        "rubot_approval.html",
        run=run,
        pending=pending,
        last=decided[-1] if decided else None,
        error=error,
        form=form or {},
        principal=who,
        configured=auth.page_authenticator() is not None,
        refusal=reads.refusal(run.id, pending.id, who) if pending is not None and who is not None else None,
        evidence=reads.evidence(run, pending) if pending is not None else None,
        action_url=lambda action: url_for(f"rubot.{action.replace('-', '_')}_run", run_id=run.id),
        hidden={},
    )


class NoAuthenticator(Forbidden):
    """No page authenticator is configured: the pages are read-only."""

    name = "No authenticator"
    description = auth.NO_AUTHENTICATOR


class NotSignedIn(Forbidden):
    name = "Not signed in"
    description = auth.NOT_SIGNED_IN


def require_principal() -> Principal:
    """The request's principal; a 403 that says what is missing when there is none."""
    if auth.page_authenticator() is None:
        raise NoAuthenticator()
    who = auth.principal()
    if who is None:
        raise NotSignedIn()
    return who


def _act(run_id: str, action: str) -> Response | tuple[str, int]:
    who = require_principal()
    try:
        decision = decisions.from_form(request.form)
    except RubotError as exc:
        if action == "cancel":
            raise
        # Show the approver their form again, filled in, with what was wrong: nothing was recorded.
        return _approval_page(run_id, error=exc.message, form=request.form.to_dict()), status_for(exc)
    run = reads.get_run(run_id)
    decisions.apply(run, action, decision, who, admin_role=auth.admin_role(), operator_role=auth.operator_role())
    flash(f"Run {run.id} was {decisions.PAST_TENSE[action]} by {who.display_name}; it is now {run.status}.")
    return redirect(url_for("rubot.run_detail", run_id=run.id), code=303)


def _register_actions() -> None:
    for action in decisions.ACTIONS:
        endpoint = f"{action.replace('-', '_')}_run"

        def view(run_id: str, _action: str = action) -> Response | tuple[str, int]:
            return _act(run_id, _action)

        view.__name__ = endpoint
        bp.add_url_rule(f"/runs/<run_id>/{action}", endpoint=endpoint, view_func=view, methods=["POST"])


_register_actions()
links.register(bp)


def _int_arg(name: str, *, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise invalid_request(f"{name} must be a whole number") from None
    return max(low, min(high, value))
