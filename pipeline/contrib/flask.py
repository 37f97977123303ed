"""``Rubot(app)``: Rubot's approval and console pages inside a host Flask application, behind the host's login.

    from pipeline.contrib.flask import Rubot

    rubot = Rubot(url_prefix="/ops/rubot")

    def create_app():
        app = Flask(__name__)
        ...
        rubot.init_app(app)           # or Rubot(app)
        return app

The pages (``rubot`` blueprint) and the JSON API (``rubot_api``, ``<prefix>/api``) are registered on the host's
app under ``url_prefix``, so they share its session, its secret key and its login. Every page needs a logged-in
user: by default the Flask-Login ``current_user`` becomes a :class:`~pipeline.auth.Principal` (id
``get_id()``, roles from ``user.roles`` — or your ``roles=`` function), and a request without one goes to
Flask-Login's ``unauthorized()`` (your login view) or gets a 401. Decisions are recorded as made by that
principal. Pass ``authenticator=`` to establish principals another way. Runs are read through the current
runtime (``pipeline.install(celery_app, config=app.config)``) unless ``runtime=`` is given.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, Request, abort, current_app

from pipeline.auth.principal import Authenticator, Principal
from pipeline.runtime import Runtime
from pipeline.web import api, auth, batch_views, console_views, reads, views

EXTENSION = "rubot"


def flask_login_authenticator(roles: Callable[[Any], Iterable[str]] | None = None) -> Authenticator:
    """Flask-Login's ``current_user`` as a principal (``via="host"``), or ``None`` when nobody is logged in."""

    def authenticate(request: Request) -> Principal | None:
        from flask_login import current_user

        user = current_user
        if user is None or not getattr(user, "is_authenticated", False):
            return None
        held = roles(user) if roles is not None else getattr(user, "roles", ())
        return Principal.of(
            str(user.get_id()),
            roles=[str(getattr(r, "name", r)) for r in held or ()],
            display_name=str(getattr(user, "name", "") or getattr(user, "username", "") or ""),
            email=getattr(user, "email", None),
            via="host",
        )

    return authenticate


def _unauthorized() -> Any:
    manager = getattr(current_app, "login_manager", None)
    if manager is not None:
        return manager.unauthorized()  # Flask-Login: redirect to the login view (or its own 401)
    abort(401)


class Rubot:
    """The Flask extension. ``url_prefix`` (default ``/rubot``) is where the pages are mounted."""

    def __init__(
        self,
        app: Flask | None = None,
        *,
        url_prefix: str = "/rubot",
        runtime: Runtime | None = None,
        authenticator: Authenticator | None = None,
        roles: Callable[[Any], Iterable[str]] | None = None,
        admin_role: str | None = None,
    ) -> None:
        self.url_prefix = "/" + url_prefix.strip("/") if url_prefix.strip("/") else ""
        self.runtime = runtime
        self.authenticator = authenticator or flask_login_authenticator(roles)
        self.admin_role = admin_role
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Register the pages and the API on ``app`` under the prefix, behind the host's login."""
        secret = app.config.get("SECRET_KEY") or os.environ.get("RUBOT_WEB_SECRET_KEY")
        app.extensions[reads.EXTENSION] = {
            "runtime": self.runtime,
            "authenticator": self.authenticator,
            "auth_mode": "custom",
            "admin_role": self.admin_role
            or app.config.get("RUBOT_WEB_ADMIN_ROLE")
            or os.environ.get("RUBOT_WEB_ADMIN_ROLE")
            or auth.DEFAULT_ADMIN_ROLE,
            "operator_role": app.config.get("RUBOT_WEB_OPERATOR_ROLE") or os.environ.get("RUBOT_WEB_OPERATOR_ROLE"),
            "secret_key_configured": bool(secret),
            "unauthorized": _unauthorized,
        }
        app.extensions[EXTENSION] = self
        app.config.setdefault("MAX_CONTENT_LENGTH", 1024 * 1024)
        app.register_blueprint(views.bp, url_prefix=self.url_prefix or None)
        app.register_blueprint(batch_views.bp, url_prefix=self.url_prefix or None)
        app.register_blueprint(console_views.bp, url_prefix=self.url_prefix or None)
        app.register_blueprint(api.bp, url_prefix=f"{self.url_prefix}/api")
