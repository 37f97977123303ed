"""Signed approval links from notifications: ``GET /links/<token>`` shows, ``POST /links/<token>/<action>`` decides.

Mail scanners and link previews fetch every link in a message, so opening one never decides anything: it shows the
approval (and its evidence) with a form. The POST needs that page's CSRF token; the link then authenticates its one
approver (``via="link"``) for its one approval, and the decision records the link as used in the same transaction
(:mod:`pipeline.notify.link_uses`), so a link decides at most once. A link that was tampered with, has expired, was
used already, or whose approval is no longer pending gets a page saying so, and changes nothing.
"""

from __future__ import annotations

import os

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from werkzeug.exceptions import Forbidden, Gone
from werkzeug.wrappers import Response

from pipeline.errors import RubotError
from pipeline.notify import link_uses
from pipeline.notify.links import DEFAULT_MAX_AGE, LinkClaim, LinkInvalid, LinkSigner
from pipeline.web import decisions, reads
from pipeline.web.errors import status_for

VERBS = {"approve": "approved", "reject": "rejected", "request-changes": "changes_requested"}


class LinksDisabled(Forbidden):
    name = "Links disabled"
    description = (
        "Approval links are disabled: this web process has no RUBOT_WEB_SECRET_KEY, so it cannot check them. "
        "Open the approval from the inbox instead."
    )


class LinkUsed(Gone):
    name = "Link used"
    description = "This approval link was already used to decide; it works once. Open the run to see the decision."


def register(bp: Blueprint) -> None:
    bp.add_url_rule("/links/<token>", "link", show, methods=["GET"])
    bp.add_url_rule("/links/<token>/<action>", "link_decide", decide, methods=["POST"])


def _claim(token: str) -> LinkClaim:
    settings = current_app.extensions[reads.EXTENSION]
    if not settings.get("secret_key_configured"):
        raise LinksDisabled()
    max_age = int(os.environ.get("RUBOT_LINK_MAX_AGE_SECONDS") or DEFAULT_MAX_AGE)
    try:
        return LinkSigner(current_app.secret_key, max_age=max_age).verify(token)  # type: ignore[arg-type]
    except LinkInvalid as exc:
        raise Forbidden(exc.message) from None


def _used(claim: LinkClaim) -> bool:
    rt = reads.runtime()
    with rt.db.transaction() as s:
        return link_uses.used(s, claim.link_id)


def show(token: str) -> str | tuple[str, int]:
    """The approval the link is for, with a decision form. Never decides (scanners prefetch links)."""
    claim = _claim(token)
    if _used(claim):
        raise LinkUsed()
    run = reads.get_run(claim.run_id)
    pending = next((a for a in run.approvals if a.id == claim.approval_id and a.status == "pending"), None)
    if pending is None or not run.waiting_for_approval:
        approval = next((a for a in run.approvals if a.id == claim.approval_id), None)
        state = approval.status if approval is not None else "gone"
        message = f"The approval this link is for is no longer pending (it is {state}); the link decides nothing."
        return render_template(
            "rubot_error.html", status=409, reason="not_pending", message=message, run_id=run.id
        ), 409
    principal = claim.principal()
    return render_template(
        "rubot_approval.html",
        run=run,
        pending=pending,
        last=None,
        error=None,
        form={},
        principal=principal,
        configured=True,
        refusal=reads.refusal(run.id, pending.id, principal),
        evidence=reads.evidence(run, pending),
        action_url=lambda action: url_for("rubot.link_decide", token=token, action=action),
        hidden={},
    )


def decide(token: str, action: str) -> Response | tuple[str, int]:
    """Decide the link's approval as the link's approver (CSRF is checked before this runs)."""
    if action not in VERBS:
        raise Forbidden(f"unknown action {action!r}")
    claim = _claim(token)
    if _used(claim):
        raise LinkUsed()
    principal = claim.principal()
    try:
        decision = decisions.from_form(request.form)
    except RubotError as exc:
        return render_template(
            "rubot_error.html", status=status_for(exc), reason=exc.reason, message=exc.message, run_id=claim.run_id
        ), status_for(exc)
    run = reads.get_run(claim.run_id)
    run._decide(
        VERBS[action],
        principal,
        decision.payload,
        decision.comment,
        claim.approval_id,
        "link",
        link_id=claim.link_id,
    )
    flash(f"Run {run.id} was {decisions.PAST_TENSE[action]} by {principal.display_name}; it is now {run.status}.")
    return redirect(url_for("rubot.run_detail", run_id=run.id), code=303)
