"""Rubot's pages inside Django: a WSGI mount of the Flask pages behind Django's login.

The view checks ``request.user`` (anonymous users are sent to ``LOGIN_URL``), turns it into a
:class:`~pipeline.auth.Principal` — ``get_username()`` as id, the user's groups as roles, ``via="host"`` — and
hands the request to Rubot's Flask pages (``pipeline.web.create_app``) with ``SCRIPT_NAME`` set to where the URLs
are included, so every link and form stays under that prefix. The Flask app's authenticator reads the principal
the view put into the WSGI environment; nothing the browser sends can set it.

Why a mount rather than native Django views: one implementation of the pages, their CSRF tokens and their
error handling serves the standalone ``rubot web``, Flask hosts and Django hosts alike. The pages keep their own
CSRF protection (a token in their own signed session cookie, ``rubot_session``), so the view is exempt from
Django's CSRF middleware; their session key is derived from Django's ``SECRET_KEY`` (or ``RUBOT_WEB_SECRET_KEY``).
"""

from __future__ import annotations

import hashlib
import threading
from http.cookies import SimpleCookie
from typing import Any

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from werkzeug.test import run_wsgi_app

from pipeline.auth.principal import Principal

PRINCIPAL_KEY = "rubot.principal"
_app: Any = None
_lock = threading.Lock()


def principal_of(user: Any) -> Principal | None:
    """A logged-in Django user as a principal: username, full name, e-mail, and group names as roles."""
    if user is None or not user.is_authenticated:
        return None
    return Principal.of(
        user.get_username(),
        roles=list(user.groups.values_list("name", flat=True)),
        display_name=user.get_full_name() or user.get_username(),
        email=getattr(user, "email", None) or None,
        via="host",
    )


def _from_environ(request: Any) -> Principal | None:
    return request.environ.get(PRINCIPAL_KEY)


def pages_app() -> Any:
    """The Flask app serving the pages (built once per process)."""
    global _app
    with _lock:
        if _app is None:
            from pipeline.web import create_app

            secret = (
                getattr(settings, "RUBOT_WEB_SECRET_KEY", "")
                or hashlib.sha256(f"rubot-pages:{settings.SECRET_KEY}".encode()).hexdigest()
            )
            _app = create_app(
                secret_key=secret,
                authenticator=_from_environ,
                admin_role=getattr(settings, "RUBOT_WEB_ADMIN_ROLE", None),
            )
            _app.config["SESSION_COOKIE_SECURE"] = bool(getattr(settings, "SESSION_COOKIE_SECURE", False))
    return _app


@csrf_exempt  # the pages check their own CSRF token (see the module docstring)
def pages(request: HttpRequest, path: str = "") -> HttpResponse:
    principal = principal_of(getattr(request, "user", None))
    if principal is None:
        return redirect_to_login(request.get_full_path())
    mount = request.path[: len(request.path) - len(path)] if path else request.path
    environ = dict(request.META)
    environ["SCRIPT_NAME"] = mount.rstrip("/")
    environ["PATH_INFO"] = "/" + path
    environ["wsgi.input"] = request  # file-like; Django has not read the body (CSRF middleware skipped)
    environ[PRINCIPAL_KEY] = principal
    body, status, headers = run_wsgi_app(pages_app(), environ, buffered=True)
    response = HttpResponse(b"".join(body), status=int(status.split()[0]))
    for name, value in headers:
        if name.lower() == "set-cookie":
            response.cookies.load(SimpleCookie(value))  # several cookies cannot share one header slot
        elif name.lower() != "content-length":
            response[name] = value
    return response
