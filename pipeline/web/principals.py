"""Who is using the web pages, when the app is given an authenticator (a host's login, a WSGI mount).

``create_app(authenticator=...)`` (or the Flask extension / Django app in :mod:`pipeline.contrib`) stores an
:class:`~pipeline.auth.Authenticator` in ``app.extensions["rubot_web"]``. Then every page of the ``rubot``
blueprint needs a principal — without one, the request goes to the host's login (the extension's
``unauthorized`` callback) or gets a 401 — and a decision is recorded as made by that principal, never by what
the form says. Without an authenticator the pages behave as before (the form names who decides).
"""

from __future__ import annotations

from typing import Any

from flask import current_app, g, request
from werkzeug.exceptions import Unauthorized

from pipeline.auth.principal import Principal

EXTENSION = "rubot_web"


def _settings() -> dict[str, Any]:
    return current_app.extensions.get(EXTENSION, {})


def current_principal() -> Principal | None:
    """The principal of this request (looked up once per request), or ``None`` with no authenticator."""
    if "rubot_principal" not in g:
        authenticator = _settings().get("authenticator")
        g.rubot_principal = authenticator(request) if authenticator is not None else None
    return g.rubot_principal


def require_principal() -> Any:
    """``before_request`` of the pages: with an authenticator configured, no principal means no page."""
    if _settings().get("authenticator") is None or current_principal() is not None:
        return None
    unauthorized = _settings().get("unauthorized")
    if unauthorized is not None:
        return unauthorized()
    raise Unauthorized("Log in to use Rubot's pages.")
