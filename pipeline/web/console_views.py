"""The console's operator pages: the dashboard, workflows drawn as graphs, stored results, retry and reconcile.

Pages are GET only. Retry and reconcile are POSTs with the session's CSRF token (checked by the ``rubot``
blueprint's rule, shared here) by a principal holding the operator role (``RUBOT_WEB_OPERATOR_ROLE``,
``rubot_operator``) or the admin role; anyone else gets a 403 and nothing changes.
"""

from __future__ import annotations

import json
from datetime import timedelta

from flask import Blueprint, flash, redirect, render_template, request, url_for
from werkzeug.exceptions import Forbidden, NotFound
from werkzeug.wrappers import Response

from pipeline.definitions import registry
from pipeline.definitions.graph import mermaid
from pipeline.errors import DefinitionError, RubotError
from pipeline.redact import redact
from pipeline.store import metrics
from pipeline.store.tables import BlobRow, utcnow
from pipeline.web import auth, console, decisions, principals, reads, views
from pipeline.web.errors import invalid_request
from pipeline.web.security import CONTENT_SECURITY_POLICY, check_csrf, secure_headers

bp = Blueprint("rubot_console", __name__, template_folder="templates", static_folder="static")
bp.after_request(secure_headers)
bp.before_request(principals.require_principal)
bp.register_error_handler(RubotError, views.rubot_error_page)

# The workflow page runs Mermaid, served from this blueprint's static folder (never a CDN): scripts from 'self'.
GRAPH_POLICY = CONTENT_SECURITY_POLICY.replace("default-src 'none';", "default-src 'none'; script-src 'self';")


@bp.before_request
def _require_csrf_on_post() -> None:
    if request.method == "POST":
        check_csrf()


@bp.get("/dashboard")
def dashboard() -> str:
    return render_template("rubot_dashboard.html", board=console.dashboard())


@bp.get("/workflows")
def workflow_list() -> str:
    rt = reads.runtime()
    registry.import_modules(rt.settings.workflow_modules)
    return render_template("rubot_workflows.html", names=registry.workflows.names())


@bp.get("/workflows/<name>")
def workflow_page(name: str) -> Response:
    rt = reads.runtime()
    try:
        cls = registry.workflow_of(rt, name)
    except DefinitionError as exc:
        raise NotFound(exc.message) from None
    now = utcnow()
    stats = rt.db.reading(lambda s: metrics.collect(s, since=now - timedelta(days=1), until=now, workflow=name))
    page = render_template(
        "rubot_workflow.html",
        name=name,
        doc=(cls.__doc__ or "").strip(),
        graph=mermaid(cls),
        stats=stats.workflows[0] if stats.workflows else None,
    )
    return Response(page, mimetype="text/html", headers={"Content-Security-Policy": GRAPH_POLICY})


@bp.get("/runs/<run_id>/data/<token>")
def stored_result(run_id: str, token: str) -> str:
    """A tool result too large for the model, stored under ``token`` (redacted like every page)."""
    rt = reads.runtime()
    blob = rt.db.reading(lambda s: s.get(BlobRow, token))
    if blob is None or blob.run_id != run_id:
        raise NotFound(f"run {run_id} has no stored result {token!r}")
    try:
        content = json.dumps(redact(json.loads(blob.content)), indent=2, sort_keys=True, ensure_ascii=False)
    except ValueError:
        content = redact(blob.content)
    return render_template("rubot_data.html", run_id=run_id, blob=blob, content=content)


def _operator() -> str:
    who = views.require_principal()
    if not auth.may_operate(who):
        raise Forbidden(
            f"{who.id} may not operate runs: only holders of the {auth.operator_role()!r} or {auth.admin_role()!r} "
            "role may retry or reconcile"
        )
    return who.id


@bp.post("/runs/<run_id>/retry")
def retry_run(run_id: str) -> Response:
    by = _operator()
    run = reads.get_run(run_id).retry(by=by)
    flash(f"Run {run.id} was retried by {by}; it is now {run.status}.")
    return redirect(url_for("rubot.run_detail", run_id=run.id), code=303)


@bp.post("/runs/<run_id>/reconcile")
def reconcile_run(run_id: str) -> Response:
    by = _operator()
    happened = request.form.get("happened")
    if happened not in ("yes", "no"):
        raise invalid_request("say whether the interrupted operation happened (happened=yes or no)")
    result = decisions.parse_json(request.form.get("result", ""), what="result")
    comment = (request.form.get("comment") or "").strip() or None
    run = reads.get_run(run_id).reconcile(by=by, happened=happened == "yes", result=result, comment=comment)
    flash(
        f"Run {run.id} was reconciled by {by} (the operation {'happened' if happened == 'yes' else 'did not happen'})."
    )
    return redirect(url_for("rubot.run_detail", run_id=run.id), code=303)
