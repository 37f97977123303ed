"""A local stand-in for Anthropic's Messages API that the real ``anthropic`` SDK talks to over HTTP.

It listens on 127.0.0.1 (a free port), answers ``POST /v1/messages`` in Anthropic's wire format by playing a
script — one entry per request — and records every request it receives, so a test can check what the SDK
really sent (tool schemas, ``cache_control`` placement) and how the provider maps real HTTP failures::

    with MessagesStandIn([reply(tool_uses=[("lookup", {"id": 1})]), error(529), reply("done")]) as server:
        model = AnthropicModel("test-key", base_url=server.url)
        ...
        assert server.requests[0].body["tools"][-1]["cache_control"] == {"type": "ephemeral"}

Script entries are :func:`~pipeline.testing.replies.reply` / :func:`~pipeline.testing.replies.error` specs,
dicts accepted by :func:`~pipeline.testing.replies.spec_from_dict`, or callables ``(request_json) -> spec``.
A request after the script is exhausted gets a 500 ``api_error`` saying so (which the provider maps to a
retryable failure, so a test that under-scripts fails loudly with that message instead of hanging).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from pipeline.testing.replies import ErrorReply, Reply, spec_from_dict

ScriptEntry = Reply | ErrorReply | Mapping[str, Any] | Callable[[dict[str, Any]], Any]


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request as received: path, headers (lower-case names) and the parsed JSON body."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


class MessagesStandIn:
    """A threaded HTTP server on 127.0.0.1 playing a script of Messages API answers. Use as a context manager."""

    def __init__(self, script: Iterable[ScriptEntry] = ()) -> None:
        self._lock = threading.Lock()
        self._script: list[ScriptEntry] = list(script)
        self._served = 0
        self._tool_ids = 0
        self.requests: list[RecordedRequest] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        # A short poll interval only makes close() quick; requests are served as they arrive either way.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, name="messages-stand-in", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        """The ``base_url`` to give the SDK."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def add(self, *entries: ScriptEntry) -> None:
        """Append entries to the script (e.g. between the turns of a test)."""
        with self._lock:
            self._script.extend(entries)

    @property
    def remaining(self) -> int:
        """Script entries not yet played."""
        with self._lock:
            return len(self._script)

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> MessagesStandIn:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- request handling (called from the server's threads) ---------------------------------------------------

    def _answer(self, recorded: RecordedRequest) -> tuple[int, dict[str, str], dict[str, Any]]:
        with self._lock:
            self.requests.append(recorded)
            if recorded.method != "POST" or recorded.path.split("?")[0] != "/v1/messages":
                return _error_body(
                    ErrorReply(
                        404,
                        f"stand-in serves POST /v1/messages only, not {recorded.method} {recorded.path}",
                        error_type="not_found_error",
                    )
                )
            if not (recorded.headers.get("x-api-key") or recorded.headers.get("authorization")):
                return _error_body(ErrorReply(401, "no API key sent (x-api-key or authorization header)"))
            if not isinstance(recorded.body, dict):
                return _error_body(ErrorReply(400, "request body is not a JSON object"))
            self._served += 1
            if not self._script:
                return _error_body(
                    ErrorReply(
                        500,
                        f"stand-in script exhausted: request #{self._served} has no "
                        "scripted answer (add more reply()/error() entries)",
                    )
                )
            entry = self._script.pop(0)
            number = self._served
        try:
            spec = entry(recorded.body) if callable(entry) else entry
            if isinstance(spec, Mapping):
                spec = spec_from_dict(spec)
        except Exception as exc:  # a broken script must show up in the test, not as a dropped connection
            return _error_body(ErrorReply(500, f"script entry #{number} raised {type(exc).__name__}: {exc}"))
        if isinstance(spec, ErrorReply):
            return _error_body(spec, request_number=number)
        if not isinstance(spec, Reply):
            return _error_body(ErrorReply(500, f"script entry #{number} produced {spec!r}, not a reply or error"))
        return 200, {"request-id": f"req_stand_in_{number}"}, self._message(spec, recorded.body, number)

    def _message(self, spec: Reply, body: dict[str, Any], number: int) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        if spec.text:
            content.append({"type": "text", "text": spec.text})
        for use in spec.tool_uses:
            with self._lock:
                self._tool_ids += 1
                tool_id = use.id or f"toolu_stand_in_{self._tool_ids}"
            content.append({"type": "tool_use", "id": tool_id, "name": use.name, "input": use.input})
        usage = spec.usage
        return {
            "id": spec.id or f"msg_stand_in_{number}",
            "type": "message",
            "role": "assistant",
            "model": spec.model or body.get("model", "stand-in"),
            "content": content,
            "stop_reason": spec.effective_stop_reason,
            "stop_sequence": None,
            "usage": {
                "input_tokens": usage.input_tokens,
                "output_tokens": usage.output_tokens,
                "cache_creation_input_tokens": usage.cache_write_tokens,
                "cache_read_input_tokens": usage.cache_read_tokens,
            },
        }


def _error_body(spec: ErrorReply, *, request_number: int | None = None) -> tuple[int, dict[str, str], dict[str, Any]]:
    headers = {"request-id": f"req_stand_in_{request_number}"} if request_number else {}
    if spec.retry_after is not None:
        headers["retry-after"] = f"{spec.retry_after:g}"
    body = {"type": "error", "error": {"type": spec.effective_type, "message": spec.effective_message}}
    return spec.status, headers, body


def _handler_for(stand_in: MessagesStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "MessagesStandIn/1"

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            self._handle()

        def do_GET(self) -> None:  # noqa: N802
            self._handle()

        def _handle(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length") or 0))
            try:
                body: Any = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode("utf-8", "replace")
            headers = {name.lower(): value for name, value in self.headers.items()}
            status, extra, payload = stand_in._answer(RecordedRequest(self.command, self.path, headers, body))
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

    return Handler
