"""``FetchConferenceWebsite``: download a conference page over HTTP and return its title and visible text.

Where a URL is fetched from is decided at call time from the environment, so the demo and the tests never
reach the internet while production fetches the real page:

1. ``127.0.0.1`` / ``localhost`` URLs are fetched directly (the demo serves its own local page).
2. ``RUBOT_SITES=live`` fetches every other URL from the internet, as written.
3. ``RUBOT_SITE_MIRROR=http://127.0.0.1:PORT`` fetches every other URL from ``{mirror}/{host}{path}``
   (a :func:`tools.sites.serve_sites` server, or any mirror laid out the same way).
4. A URL with a seeded snapshot (``tools/data/sites/``) is served in process through ``httpx.WSGITransport``.
5. Anything else is fetched from the internet, unless ``RUBOT_SITES=seeded`` forbids it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from marshmallow import fields, validate

from pipeline.definitions.tool import Tool
from pipeline.errors import ConfigurationError, ToolError
from rubot_app.tools import html_text, sites

TIMEOUT_SECONDS = 10.0
MAX_BODY_BYTES = 2 * 1024 * 1024
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
SITES_MODES = frozenset({"", "auto", "live", "seeded"})
# Requests to the in-process seeded app need some URL; this host is reserved and never resolves (RFC 6761).
SEEDED_BASE = "http://seeded-sites.invalid"
USER_AGENT = "RubotConferenceReview/0.1"
ACCEPT = "text/html,application/xhtml+xml;q=0.9,*/*;q=0.1"


@dataclass(frozen=True)
class Route:
    """Where a URL is fetched from; ``source`` is local, live, mirror, seeded or internet."""

    source: str
    url: str
    transport: httpx.BaseTransport | None = None


def route(url: str, environ: Mapping[str, str] | None = None) -> Route:
    """Decide how ``url`` is fetched, following the rules in this module's docstring."""
    env = os.environ if environ is None else environ
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    mode = env.get("RUBOT_SITES", "").strip().lower()
    if mode not in SITES_MODES:
        raise ConfigurationError(f"RUBOT_SITES must be 'live', 'seeded' or unset, got {mode!r}")
    if host in LOCAL_HOSTS:
        return Route("local", url)
    if mode == "live":
        return Route("live", url)
    mirror = env.get("RUBOT_SITE_MIRROR", "").strip().rstrip("/")
    if mirror:
        if urlsplit(mirror).scheme not in ("http", "https"):
            raise ConfigurationError(f"RUBOT_SITE_MIRROR must be an http(s) URL, got {mirror!r}")
        return Route("mirror", _on(mirror, host, parts.path, parts.query))
    if sites.has_snapshot(url):
        return Route("seeded", _on(SEEDED_BASE, host, parts.path, parts.query), httpx.WSGITransport(app=sites.site_app))
    if mode == "seeded":
        raise ToolError(
            f"no seeded snapshot of {url}, and RUBOT_SITES=seeded forbids the internet", details={"conference_url": url}
        )
    return Route("internet", url)


def _on(base: str, host: str, path: str, query: str) -> str:
    return f"{base}/{host}{path}" + (f"?{query}" if query else "")


def fetch_html(url: str, *, environ: Mapping[str, str] | None = None) -> str:
    """GET ``url`` (routed by :func:`route`) and return its HTML as text, or raise ``ToolError``."""
    target = route(url, environ)
    details: dict[str, Any] = {"conference_url": url, "source": target.source}
    try:
        with (
            httpx.Client(
                transport=target.transport,
                timeout=TIMEOUT_SECONDS,
                follow_redirects=True,
                headers={"User-Agent": USER_AGENT, "Accept": ACCEPT},
            ) as client,
            client.stream("GET", target.url) as response,
        ):
            _check_response(response, url, details)
            body = _read_capped(response, url, details)
            encoding = response.charset_encoding or "utf-8"
    except httpx.TimeoutException:
        raise ToolError(f"{url} did not answer within {TIMEOUT_SECONDS:g} seconds", details=details) from None
    except httpx.TooManyRedirects:
        raise ToolError(f"{url} redirected too many times", details=details) from None
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise ToolError(
            f"could not fetch {url}: {str(exc) or type(exc).__name__}", details={**details, "error": type(exc).__name__}
        ) from None
    try:
        return body.decode(encoding, errors="replace")
    except LookupError:  # an unknown charset in Content-Type
        return body.decode("utf-8", errors="replace")


def _check_response(response: httpx.Response, url: str, details: dict[str, Any]) -> None:
    details["status_code"] = response.status_code
    if not response.is_success:
        raise ToolError(
            f"{url} answered HTTP {response.status_code} {response.reason_phrase}".rstrip(), details=details
        )
    content_type = response.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() not in HTML_TYPES:
        raise ToolError(
            f"{url} is not an HTML page (Content-Type: {content_type or 'missing'})",
            details={**details, "content_type": content_type},
        )
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise ToolError(f"{url} is too large ({int(declared)} bytes; the limit is {MAX_BODY_BYTES})", details=details)


def _read_capped(response: httpx.Response, url: str, details: dict[str, Any]) -> bytes:
    # Content-Length can be absent or wrong, so the cap is enforced on the bytes actually received.
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ToolError(f"{url} is too large (more than {MAX_BODY_BYTES} bytes)", details=details)
        chunks.append(chunk)
    return b"".join(chunks)


class FetchConferenceWebsite(Tool):
    """Fetch a conference page and return its title and visible text (scripts and styles removed)."""

    description = (
        "Fetch a conference website and return its page title and visible text, so the agenda can be reviewed."
    )
    input_schema = {
        "conference_url": fields.String(
            required=True, validate=validate.URL(schemes={"http", "https"}, require_tld=False)
        ),
    }
    output_schema = {
        "conference_url": fields.String(required=True),
        "page_title": fields.String(required=True),
        "page_text": fields.String(required=True),
    }

    def call(self, *, conference_url: str) -> dict[str, str]:
        title, text = html_text.extract(fetch_html(conference_url))
        return {"conference_url": conference_url, "page_title": title, "page_text": text}
