"""Helpers for the web tests: principals through the trusted-proxy authenticator, API tokens, a served app.

The trusted proxy in these tests is 127.0.0.2 (a loopback address of its own): requests "from the proxy" come
from there, and anything from 127.0.0.1 is a client talking to the app directly, whose identity headers must be
ignored.
"""

from __future__ import annotations

import html
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from werkzeug.serving import make_server

from pipeline.auth import tokens
from pipeline.auth.proxy import TrustedProxyAuthenticator

PROXY_ADDRESS = "127.0.0.2"
DIRECT_ADDRESS = "127.0.0.1"
SECRET_KEY = "test-secret-key-of-the-web-tests"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def proxy_authenticator() -> TrustedProxyAuthenticator:
    return TrustedProxyAuthenticator(f"{PROXY_ADDRESS}/32")


def identity(user: str, *, roles: tuple[str, ...] = (), email: str | None = None) -> dict[str, str]:
    """The headers oauth2-proxy sends for ``user``."""
    headers = {"X-Forwarded-User": user, "X-Forwarded-Email": email or user}
    if roles:
        headers["X-Forwarded-Groups"] = ",".join(roles)
    return headers


def signed_in(client: FlaskClient, user: str, *, roles: tuple[str, ...] = (), via: str = PROXY_ADDRESS) -> FlaskClient:
    """``client`` sending every request through the proxy (from ``via``) as ``user`` with ``roles``."""
    client.environ_base["REMOTE_ADDR"] = via
    for name, value in identity(user, roles=roles).items():
        client.environ_base["HTTP_" + name.upper().replace("-", "_")] = value
    return client


def csrf_token(client: FlaskClient, path: str) -> str:
    page = client.get(path)
    assert page.status_code == 200, page.get_data(as_text=True)[:500]
    match = CSRF.search(page.get_data(as_text=True))
    assert match, "the page carries a CSRF token"
    return html.unescape(match.group(1))


def api_token(stack: Any, user: str, *roles: str) -> tuple[str, str]:
    """A personal API token for ``user`` with ``roles``: ``(token_id, token)``."""
    return tokens.create(stack.runtime.db, user=user, roles=roles, name="test")


@contextmanager
def served(app: Flask, host: str = "127.0.0.1") -> Iterator[str]:
    """The app on a real HTTP server in a thread (as browsers and HTTP clients reach it)."""
    server = make_server(host, 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="rubot-web-test", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)
