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


class IdentityProxy:
    """A tiny reverse proxy standing in for oauth2-proxy: it drops any identity headers a client sends, adds those
    of the one user it signs in, and forwards to the app from the trusted proxy address (``PROXY_ADDRESS``)."""

    def __init__(self, upstream: str, user: str, roles: tuple[str, ...] = ()) -> None:
        import http.client
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import urlsplit

        target = urlsplit(upstream)
        added = identity(user, roles=roles)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if not k.lower().startswith("x-forwarded-")}
                headers.update(added)
                connection = http.client.HTTPConnection(
                    target.hostname, target.port, timeout=60, source_address=(PROXY_ADDRESS, 0)
                )
                try:
                    connection.request(self.command, self.path, body=body or None, headers=headers)
                    response = connection.getresponse()
                    payload = response.read()
                    self.send_response(response.status, response.reason)
                    for name, value in response.getheaders():
                        if name.lower() not in {"transfer-encoding", "connection", "content-length"}:
                            self.send_header(name, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                finally:
                    connection.close()

            do_GET = do_POST = _forward  # noqa: N815 - http.server's names

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> IdentityProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.thread.join(10)
