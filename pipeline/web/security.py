"""CSRF tokens for the HTML forms and the response headers of every page.

The CSRF token is random per browser session and lives in Flask's signed session cookie; a form POST must send
it back. The JSON API does not use cookies at all, so it needs no CSRF token: a personal API token authorises it.
"""

from __future__ import annotations

import hmac
import secrets

from flask import Response, current_app, request, session
from werkzeug.exceptions import BadRequest

CSRF_FIELD = "csrf_token"
_SESSION_KEY = "rubot_csrf"

# The pages are plain server-rendered HTML: no scripts, no frames, forms only to ourselves. Framing is refused
# so an approve button can never be clickjacked from another site.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)


class CsrfError(BadRequest):
    """A state-changing form was posted without the session's CSRF token."""

    description = "The form's CSRF token is missing or does not match this session; reload the page and retry."


def csrf_token() -> str:
    """This session's CSRF token, created on first use (exposed to templates as ``csrf_token()``)."""
    token = session.get(_SESSION_KEY)
    if not isinstance(token, str) or not token:
        token = session[_SESSION_KEY] = secrets.token_urlsafe(32)
    return token


def check_csrf() -> None:
    """Refuse the request unless the posted token matches the session's (constant-time comparison)."""
    expected = session.get(_SESSION_KEY)
    sent = request.form.get(CSRF_FIELD, "")
    if not isinstance(expected, str) or not expected or not _same(sent, expected):
        raise CsrfError()


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def secure_headers(response: Response) -> Response:
    """Add the headers every Rubot page and API answer carries; run data is never cached."""
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("Cache-Control", "no-store")
    if current_app.config.get("SESSION_COOKIE_SECURE"):
        response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    return response
