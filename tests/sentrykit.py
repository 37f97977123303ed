"""A local Sentry: an HTTP server that receives the envelopes the real sentry-sdk sends and parses them.

Point ``SENTRY_DSN`` at :attr:`EnvelopeSink.dsn` (``http://public@127.0.0.1:PORT/42``); the SDK posts to
``/api/42/envelope/`` (gzip or brotli compressed). Every raw body is kept, decompressed, so a test can search
them for what must never be sent.
"""

from __future__ import annotations

import gzip
import json
import threading
import zlib
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Item:
    type: str
    headers: dict[str, Any]
    payload: Any


class EnvelopeSink:
    """Context manager: a threaded server on 127.0.0.1 recording envelopes."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                encoding = (self.headers.get("Content-Encoding") or "").lower()
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                elif encoding == "br":
                    import brotli

                    body = brotli.decompress(body)
                with sink._lock:
                    sink.bodies.append(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def dsn(self) -> str:
        return f"http://public@127.0.0.1:{self._server.server_address[1]}/42"

    def __enter__(self) -> EnvelopeSink:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    def raw(self) -> str:
        with self._lock:
            return "\n".join(body.decode("utf-8", errors="replace") for body in self.bodies)

    def items(self) -> list[Item]:
        with self._lock:
            bodies = list(self.bodies)
        return [item for body in bodies for item in parse(body)]

    def events(self, kind: str = "event") -> list[dict[str, Any]]:
        return [item.payload for item in self.items() if item.type == kind]


def parse(body: bytes) -> list[Item]:
    """The items of one envelope: a header line, then per item a header line and a payload (``length`` bytes
    when the header gives it, else up to the next newline)."""
    _, _, rest = body.partition(b"\n")
    items = []
    while rest.strip():
        header_line, _, rest = rest.partition(b"\n")
        headers = json.loads(header_line)
        length = headers.get("length")
        if length is None:
            payload, _, rest = rest.partition(b"\n")
        else:
            payload, rest = rest[:length], rest[length:].lstrip(b"\n")
        try:
            parsed: Any = json.loads(payload)
        except ValueError:
            parsed = payload
        items.append(Item(headers.get("type", ""), headers, parsed))
    return items
