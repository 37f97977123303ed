"""``create_app``: the Flask application of the Procfile's ``web`` process."""

from __future__ import annotations

import json
import logging
import os
import secrets

from flask import Flask, render_template, request
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from pipeline.errors import ConfigurationError
from pipeline.runtime import Runtime
from pipeline.web import api, auth, batch_views, console_views, prometheus, reads, views
from pipeline.web.auth import Authenticator
from pipeline.web.security import secure_headers

log = logging.getLogger("rubot.web")

MAX_BODY_BYTES = 1024 * 1024  # decisions are small; a bigger body is refused with 413 before it is read


def create_app(
    runtime: Runtime | None = None,
    *,
    secret_key: str | None = None,
    authenticator: Authenticator | None = None,
    admin_role: str | None = None,
    operator_role: str | None = None,
) -> Flask:
    """Build the web app.

    Without ``runtime`` every request uses :func:`pipeline.runtime.current`, resolved lazily, so importing the
    app never touches the database or broker. ``secret_key`` (signing the session that holds the CSRF token, and
    approval links) defaults to ``RUBOT_WEB_SECRET_KEY``. ``RUBOT_WEB_SECURE_COOKIES=1`` marks the session cookie
    HTTPS-only.

    ``authenticator`` establishes who makes a page request: any callable ``(flask.request) -> Principal | None``
    (for instance one that maps a host application's logged-in user to a :class:`pipeline.auth.Principal`).
    Without one, ``RUBOT_WEB_AUTH`` chooses (``proxy``: trusted oauth2-proxy headers; ``dev``: a loopback-only
    development principal); with neither, the pages are read-only and no decision is served. The JSON API always
    authenticates with personal API tokens. ``admin_role`` (default ``RUBOT_WEB_ADMIN_ROLE`` or ``rubot_admin``)
    may cancel any run from the pages; ``operator_role`` (default ``RUBOT_WEB_OPERATOR_ROLE`` or ``rubot_operator``)
    may cancel, retry and reconcile any run from the console.
    """
    app = Flask(__name__, template_folder="templates", static_folder=None)  # styles are inline
    app.config.update(
        SECRET_KEY=_secret_key(secret_key),
        SESSION_COOKIE_NAME="rubot_session",  # never collide with a host app's session on the same domain
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=os.environ.get("RUBOT_WEB_SECURE_COOKIES", "").lower() in {"1", "true", "yes"},
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
    )
    mode = "custom"
    if authenticator is None:
        authenticator, mode = auth.from_environ()
    elif not callable(authenticator):
        raise ConfigurationError(
            f"authenticator must be a callable (request) -> Principal | None, got {authenticator!r}"
        )
    if authenticator is None:
        log.warning(auth.NO_AUTHENTICATOR)
    app.extensions[reads.EXTENSION] = {
        "runtime": runtime,
        "authenticator": authenticator,
        "auth_mode": mode,
        "admin_role": admin_role or os.environ.get("RUBOT_WEB_ADMIN_ROLE") or auth.DEFAULT_ADMIN_ROLE,
        "operator_role": operator_role or os.environ.get("RUBOT_WEB_OPERATOR_ROLE") or auth.DEFAULT_OPERATOR_ROLE,
        "secret_key_configured": bool(secret_key or os.environ.get("RUBOT_WEB_SECRET_KEY")),
    }
    app.register_blueprint(views.bp)
    app.register_blueprint(batch_views.bp)
    app.register_blueprint(console_views.bp)
    app.register_blueprint(api.bp, url_prefix="/api")
    app.add_url_rule("/healthz", "healthz", healthz)
    prometheus.register(app)
    app.register_error_handler(HTTPException, _http_error)
    app.after_request(secure_headers)
    return app


def _secret_key(given: str | None) -> str:
    key = given or os.environ.get("RUBOT_WEB_SECRET_KEY", "")
    if key:
        return key
    log.warning(
        "RUBOT_WEB_SECRET_KEY is not set: using a random key for this process only. Sessions and CSRF "
        "tokens will not survive a restart or work across several web workers; set it in production."
    )
    return secrets.token_urlsafe(32)


def healthz() -> tuple[str, int, dict[str, str]]:
    """200 ``ok`` when the database answers and is migrated; 503 otherwise (the details go to the log)."""
    try:
        reads.ping()
    except Exception:  # any failure means "not healthy"; the log has the cause, the probe only needs a status
        log.exception("health check failed")
        return "database unavailable or not migrated", 503, {"Content-Type": "text/plain; charset=utf-8"}
    return "ok", 200, {"Content-Type": "text/plain; charset=utf-8"}


def _http_error(exc: HTTPException) -> Response:
    """JSON errors under ``/api``, a small HTML page elsewhere; keeps headers such as ``Allow`` on a 405."""
    response = exc.get_response()
    status = exc.code or 500
    reason = (exc.name or "error").lower().replace(" ", "_")
    if request.path.startswith("/api/"):
        response.data = json.dumps({"error": reason, "message": exc.description})
        response.content_type = "application/json"
    else:
        response.data = render_template(
            "rubot_error.html",
            status=status,
            reason=reason,
            message=exc.description,
            run_id=(request.view_args or {}).get("run_id"),
        )
        response.content_type = "text/html; charset=utf-8"
    return response
