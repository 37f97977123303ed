"""Who is using the web pages, when the app is given an authenticator (a host's login, a WSGI mount).

``create_app(authenticator=...)`` (or the Flask extension / Django app in :mod:`pipeline.contrib`) stores an
:class:`~pipeline.auth.Authenticator` in ``app.extensions["rubot_web"]``. Then every page of the ``rubot``
blueprint needs a principal — without one, the request goes to the host's login (the extension's
``unauthorized`` callback) or gets a 401 — and a decision is recorded as made by that principal, never by what
the form says. Without an authenticator the pages behave as before (the form names who decides).
"""

from __future__ import annotations

from typing import Any

from flask import current_app

from pipeline.auth.principal import Principal
from pipeline.web import auth

EXTENSION = "rubot_web"


def _settings() -> dict[str, Any]:
    return current_app.extensions.get(EXTENSION, {})


def current_principal() -> Principal | None:
    """The principal of this request (looked up once per request), or ``None`` (see :mod:`pipeline.web.auth`)."""
    return auth.principal()


def require_principal() -> Any:
    """``before_request`` of the pages mounted in a host (the Flask extension, the Django app): a request the host
    does not know is sent to the host's login. Rubot's own web process shows its pages read-only to a visitor it
    cannot identify and serves decisions only to principals (see :mod:`pipeline.web.auth`)."""
    unauthorized = _settings().get("unauthorized")
    if unauthorized is None or current_principal() is not None:
        return None
    return unauthorized()
