"""Seeded snapshots of the reference conferences' websites, served as a WSGI app.

The reference app must run (demo, tests) without touching the internet, yet go through a real HTTP client.
The snapshots in ``tools/data/sites/`` are served by :data:`site_app`, addressed by path: the page for
``https://rubyonrails.org/world`` lives at ``/rubyonrails.org/world``. The same routing works in process
(``httpx.WSGITransport``) and over a socket (:func:`serve_sites`, a local mirror for ``RUBOT_SITE_MIRROR``).

A snapshot file is named after its host and path with ``/`` written as ``__``:
``rubyonrails.org__world.html`` is ``rubyonrails.org/world``; ``example.org.html`` is the site's root.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from socketserver import ThreadingMixIn
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

SITES_DIR = Path(__file__).resolve().parent / "data" / "sites"
HTML = "text/html; charset=utf-8"

StartResponse = Callable[..., Any]


@dataclass(frozen=True)
class Page:
    """One response the site app can give."""

    body: bytes
    content_type: str = HTML
    status: int = 200


def snapshot_key(url: str) -> str:
    """The ``host/path`` key of ``url``: lower-case host; no port, query or trailing slash."""
    parts = urlsplit(url)
    return f"{(parts.hostname or '').lower()}{parts.path}".rstrip("/")


@functools.cache
def seeded_snapshots() -> dict[str, Path]:
    """Every seeded snapshot, keyed by ``host/path``."""
    return {file.stem.replace("__", "/"): file for file in sorted(SITES_DIR.glob("*.html"))}


def has_snapshot(url: str) -> bool:
    """Whether a seeded snapshot exists for ``url``."""
    return snapshot_key(url) in seeded_snapshots()


class SiteApp:
    """WSGI app serving the seeded snapshots at ``/{host}{path}``, and pages added with :meth:`add_page`.

    Registered pages are matched on their exact path first, so a demo can serve ``/local/devconf`` from
    the same server. Anything else is a 404; methods other than GET and HEAD are a 405.
    """

    def __init__(self) -> None:
        self._pages: dict[str, Page] = {}
        self._lock = threading.Lock()

    def add_page(self, path: str, body: str | bytes, *, content_type: str = HTML, status: int = 200) -> None:
        """Serve ``body`` at ``path`` (e.g. ``"/local/devconf"``) from now on."""
        if not path.startswith("/"):
            raise ValueError(f"page paths start with '/', got {path!r}")
        data = body.encode("utf-8") if isinstance(body, str) else body
        with self._lock:
            self._pages[_normalise(path)] = Page(data, content_type, status)

    def page(self, path: str) -> Page | None:
        """The page served at ``path``, or ``None``."""
        path = _normalise(path)
        with self._lock:
            page = self._pages.get(path)
        if page is not None:
            return page
        host, _, rest = path.lstrip("/").partition("/")
        file = seeded_snapshots().get(f"{host.lower()}/{rest}".rstrip("/"))
        return Page(file.read_bytes()) if file is not None else None

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            refusal = Page(b"method not allowed\n", "text/plain; charset=utf-8", 405)
            return _respond(start_response, refusal, [("Allow", "GET, HEAD")])
        page = self.page(environ.get("PATH_INFO") or "/")
        if page is None:
            page = Page(b"no such page\n", "text/plain; charset=utf-8", 404)
        response = _respond(start_response, page)
        return [] if method == "HEAD" else response


def _normalise(path: str) -> str:
    return path.rstrip("/") or "/"


def _respond(start_response: StartResponse, page: Page, extra: list[tuple[str, str]] | None = None) -> list[bytes]:
    status = f"{page.status} {HTTPStatus(page.status).phrase}"
    headers = [("Content-Type", page.content_type), ("Content-Length", str(len(page.body))), *(extra or [])]
    start_response(status, headers)
    return [page.body]


site_app = SiteApp()
"""The shared app with only the seeded snapshots; what ``FetchConferenceWebsite`` uses in process."""


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Tests and the demo do not want an access log on stderr."""


class SiteServer:
    """A real HTTP server for a :class:`SiteApp`, running in a daemon thread until :meth:`close`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = SiteApp()
        self._server = make_server(host, port, self.app, server_class=_ThreadingServer, handler_class=_QuietHandler)
        # A short poll interval keeps close() quick: shutdown() waits for the serving loop's next poll.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="rubot-sites", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:50123`` (no trailing slash)."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def add_page(self, path: str, body: str | bytes, *, content_type: str = HTML, status: int = 200) -> str:
        """Serve an extra page and return its full URL."""
        self.app.add_page(path, body, content_type=content_type, status=status)
        return f"{self.url}{path}"

    def close(self) -> None:
        """Stop serving and release the port. Safe to call twice."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()

    def __enter__(self) -> SiteServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def serve_sites(host: str = "127.0.0.1", port: int = 0) -> SiteServer:
    """Start serving the seeded sites on ``host:port`` (0 picks a free port). Use as a context manager."""
    return SiteServer(host, port)
