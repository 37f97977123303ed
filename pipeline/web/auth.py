"""Who is making a web request: the app's authenticators, per request, and what a page may do without one.

Two kinds of requests, two kinds of credentials:

* **Pages** (``/approvals``, ``/runs`` ...) use the *page authenticator*: any callable ``(request) -> Principal |
  None`` given to ``create_app(authenticator=...)`` (a host app's logged-in user), or one chosen by
  ``RUBOT_WEB_AUTH``: ``proxy`` (oauth2-proxy headers from ``RUBOT_WEB_TRUSTED_PROXIES`` only) or ``dev`` (one
  configured principal, loopback only). Those credentials are ambient (cookies, proxy sessions), so every page POST
  also needs the session's CSRF token.
* **The JSON API** (``/api/...``) accepts personal API tokens only (``Authorization: Bearer``): a credential a
  browser never attaches by itself, so no cross-site request can carry it.

Without a page authenticator the pages are read-only: they render, but every decision (and cancel) is refused
with a 403 that says how to configure one. The app logs that once when it is created, and ``rubot web`` says so
at start.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

from flask import current_app, g, request

from pipeline.auth.dev import DevAuthenticator
from pipeline.auth.principal import Principal
from pipeline.auth.proxy import TrustedProxyAuthenticator, split_groups
from pipeline.errors import ConfigurationError

log = logging.getLogger("rubot.web")

Authenticator = Callable[[Any], "Principal | None"]
MODES = ("none", "proxy", "dev")
#: Holders of this role may cancel any run from the pages (besides the run's own launcher).
DEFAULT_ADMIN_ROLE = "rubot_admin"
#: Holders of this role (or the admin role) operate runs from the console: cancel any run, retry a dead-lettered
#: one, reconcile one that needs reconciliation.
DEFAULT_OPERATOR_ROLE = "rubot_operator"

NO_AUTHENTICATOR = (
    "This Rubot web process has no authenticator configured, so it serves no decisions (pages are read-only). "
    "Set RUBOT_WEB_AUTH=proxy and RUBOT_WEB_TRUSTED_PROXIES behind oauth2-proxy (or a proxy sending the same "
    "X-Forwarded-User/-Email/-Groups headers), mount the pages in your app with create_app(authenticator=...), "
    "or use RUBOT_WEB_AUTH=dev on a loopback address while developing."
)
NOT_SIGNED_IN = (
    "This request carries no identity the server trusts: sign in through your organisation's proxy (or the host "
    "application) and try again."
)


def from_environ(environ: Mapping[str, str] | None = None) -> tuple[Authenticator | None, str]:
    """The page authenticator ``RUBOT_WEB_AUTH`` asks for, and its mode (``none``, ``proxy`` or ``dev``)."""
    env = os.environ if environ is None else environ
    mode = (env.get("RUBOT_WEB_AUTH") or "none").strip().lower()
    if mode not in MODES:
        raise ConfigurationError(f"RUBOT_WEB_AUTH={mode!r} is not one of {', '.join(MODES)}")
    if mode == "proxy":
        return TrustedProxyAuthenticator(env.get("RUBOT_WEB_TRUSTED_PROXIES", "")), mode
    if mode == "dev":
        user = (env.get("RUBOT_WEB_DEV_USER") or "dev@localhost").strip()
        return DevAuthenticator(user, split_groups(env.get("RUBOT_WEB_DEV_ROLES"))), mode
    return None, mode


def page_authenticator() -> Authenticator | None:
    return current_app.extensions["rubot_web"].get("authenticator")


def principal() -> Principal | None:
    """The principal of the current page request (computed once per request), or ``None``."""
    if "rubot_principal" not in g:
        authenticator = page_authenticator()
        found = authenticator(request) if authenticator is not None else None
        if found is not None and not isinstance(found, Principal):
            raise ConfigurationError(f"the authenticator returned {found!r}, not a pipeline.auth.Principal or None")
        g.rubot_principal = found
    return g.rubot_principal


def admin_role() -> str:
    return current_app.extensions["rubot_web"].get("admin_role") or DEFAULT_ADMIN_ROLE


def operator_role() -> str:
    """The role that may cancel, retry and reconcile any run from the console (``RUBOT_WEB_OPERATOR_ROLE``)."""
    configured = current_app.extensions["rubot_web"].get("operator_role")
    return configured or os.environ.get("RUBOT_WEB_OPERATOR_ROLE") or DEFAULT_OPERATOR_ROLE


def may_operate(who: Principal) -> bool:
    """Whether ``who`` may cancel, retry or reconcile any run from the console."""
    return who.has_role(operator_role()) or who.has_role(admin_role())
