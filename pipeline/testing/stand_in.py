"""A local stand-in for Anthropic's Messages API that the real ``anthropic`` SDK talks to over HTTP.

It listens on 127.0.0.1 (a free port), answers in Anthropic's wire format by playing a script — one entry per
model request — and records every request it receives, so a test can check what the SDK really sent and how the
provider maps real HTTP failures::

    with MessagesStandIn([reply(tool_uses=[("lookup", {"id": 1})]), error(529), reply("done")], prices=prices) as s:
        model = AnthropicModel("test-key", base_url=s.url)
        ...
        assert run.cost_micros >= s.billed_micros

Endpoints: ``POST /v1/messages``; ``POST /v1/messages/count_tokens``; and the Message Batches API —
``POST /v1/messages/batches``, ``GET /v1/messages/batches/{id}``, ``GET .../{id}/results`` (JSON Lines),
``POST .../{id}/cancel`` (see :mod:`pipeline.testing.stand_in_batches`).

**Usage and the bill.** A reply scripted with explicit ``usage`` reports it as given. A reply without one gets the
usage a real server would report: the prompt goes through a simulation of prompt caching
(:mod:`pipeline.testing.prompt_cache`: breakpoints, TTLs, the lookback window, per-model minimum lengths) and the
output is counted with the same stand-in tokenizer. Every answered request is *charged* the moment it is
processed — before the response is written, as the real API bills work whether or not the client is still
listening — at the prices given (``prices=``), half price for batch requests. ``charges`` lists them and
``billed_micros`` totals them: the number a test compares a run's recorded cost with.

**Lost responses.** After :meth:`hold`, each answered ``/v1/messages`` request is charged and then waits before
its response is sent, until :meth:`release`; ``held`` counts the waiting ones. Killing the client meanwhile
makes a request that was billed but never answered.

Script entries are :func:`~pipeline.testing.replies.reply` / :func:`~pipeline.testing.replies.error` specs,
dicts accepted by :func:`~pipeline.testing.replies.spec_from_dict`, or callables ``(request_json) -> spec``.
A request after the script is exhausted gets a 500 ``api_error`` saying so.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from pipeline.llm.pricing import ModelPrice, cost_micros, price_for
from pipeline.models.base import Usage
from pipeline.testing import prompt_cache
from pipeline.testing.prompt_cache import CacheRequestError, PromptCache
from pipeline.testing.replies import ErrorReply, Reply, spec_from_dict
from pipeline.testing.stand_in_batches import BatchRequestError, BatchStore

ScriptEntry = Reply | ErrorReply | Mapping[str, Any] | Callable[[dict[str, Any]], Any]
Answer = tuple[int, dict[str, str], Any]
MESSAGES, COUNT, BATCHES = "/v1/messages", "/v1/messages/count_tokens", "/v1/messages/batches"
HOLD_LIMIT_SECONDS = 120  # a forgotten release() must not hang a test forever


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request as received: path, headers (lower-case names) and the parsed JSON body."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass(frozen=True)
class Charge:
    """What the stand-in billed for one processed model request (``cost_micros`` is None without prices)."""

    number: int
    model: str
    usage: Usage
    batch: bool
    cost_micros: int | None


class MessagesStandIn:
    """A threaded HTTP server on 127.0.0.1 playing a script of Messages API answers. Use as a context manager."""

    def __init__(
        self,
        script: Iterable[ScriptEntry] = (),
        *,
        prices: Mapping[str, ModelPrice] | None = None,
        cache_minimums: Mapping[str, int] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lock = threading.Lock()
        self._script: list[ScriptEntry] = list(script)
        self._served = 0
        self._tool_ids = 0
        self._prices = prices
        self.requests: list[RecordedRequest] = []
        self.charges: list[Charge] = []
        self.cache = PromptCache(cache_minimums, clock=clock)
        self.batches = BatchStore()
        #: When set, ``count_tokens`` answers with this HTTP error status (to exercise the local fallback).
        self.count_tokens_status: int | None = None
        self._holding: int | None = 0  # requests still to hold (None: all of them)
        self._release = threading.Event()
        self._held = 0
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
        return f"http://{host!s}:{port}"

    def add(self, *entries: ScriptEntry) -> None:
        """Append entries to the script (e.g. between the turns of a test)."""
        with self._lock:
            self._script.extend(entries)

    @property
    def remaining(self) -> int:
        """Script entries not yet played."""
        with self._lock:
            return len(self._script)

    @property
    def message_requests(self) -> list[RecordedRequest]:
        """The ``POST /v1/messages`` requests (model calls), without token counts and batch calls."""
        return [r for r in self.requests if r.method == "POST" and r.path.split("?")[0] == MESSAGES]

    @property
    def billed_micros(self) -> int:
        """Everything charged so far, in micro-dollars."""
        if self._prices is None:
            raise ValueError("MessagesStandIn(prices=...) is needed to keep a bill in micro-dollars")
        with self._lock:
            return sum(charge.cost_micros or 0 for charge in self.charges)

    # --- test controls -----------------------------------------------------------------------------------

    def hold(self, requests: int | None = None) -> None:
        """Charge the next ``requests`` model requests (all, when None) but hold their responses until
        :meth:`release` — as if the network or the client died while the provider was answering."""
        with self._lock:
            self._release.clear()
            self._holding = requests

    def release(self) -> None:
        """Send the held responses (to whoever is still listening) and stop holding."""
        with self._lock:
            self._holding = 0
            self._release.set()

    @property
    def held(self) -> int:
        """Requests charged whose response is being held."""
        with self._lock:
            return self._held

    def advance(self, seconds: float) -> None:
        """Move the prompt cache's clock forward (its 5-minute and 1-hour entries age accordingly)."""
        self.cache.advance(seconds)

    def end_batches(self) -> int:
        """Process every in-progress batch now (each request plays the next script entry); returns how many."""
        pending = self.batches.in_progress()
        for batch in pending:
            results = {}
            for cid, params in batch.requests:
                status, _, payload = self._play(params, batch=True)
                if status == 200:
                    results[cid] = {"type": "succeeded", "message": payload}
                else:
                    results[cid] = {"type": "errored", "error": {**payload, "request_id": None}}
            self.batches.finish(batch, results)
        return len(pending)

    def expire_batches(self) -> int:
        """End every in-progress batch with all its requests ``expired`` (nothing is charged)."""
        pending = self.batches.in_progress()
        for batch in pending:
            self.batches.finish(batch, {cid: {"type": "expired"} for cid, _ in batch.requests})
        return len(pending)

    def close(self) -> None:
        """Stop serving and release the port."""
        self.release()
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

    def _answer(self, recorded: RecordedRequest) -> Answer:
        with self._lock:
            self.requests.append(recorded)
        path, method = recorded.path.split("?")[0].rstrip("/"), recorded.method
        if not (recorded.headers.get("x-api-key") or recorded.headers.get("authorization")):
            return _error(ErrorReply(401, "no API key sent (x-api-key or authorization header)"))
        if method == "POST" and path in (MESSAGES, COUNT, BATCHES) and not isinstance(recorded.body, dict):
            return _error(ErrorReply(400, "request body is not a JSON object"))
        if method == "POST" and path == MESSAGES:
            answer = self._play(recorded.body, batch=False)
            if answer[0] == 200 and self._take_hold():
                self._hold()
            return answer
        if method == "POST" and path == COUNT:
            if self.count_tokens_status is not None:
                return _error(ErrorReply(self.count_tokens_status))
            return 200, {}, {"input_tokens": self.cache.prompt_tokens(recorded.body)}
        if path.startswith(BATCHES):
            return self._batch_call(method, path[len(BATCHES) :].strip("/").split("/"), recorded.body)
        return _error(ErrorReply(404, f"stand-in does not serve {method} {path}", error_type="not_found_error"))

    def _take_hold(self) -> bool:
        with self._lock:
            if self._holding is None:
                return True
            if self._holding > 0:
                self._holding -= 1
                return True
            return False

    def _hold(self) -> None:
        with self._lock:
            self._held += 1
        try:
            self._release.wait(HOLD_LIMIT_SECONDS)
        finally:
            with self._lock:
                self._held -= 1

    def _batch_call(self, method: str, parts: list[str], body: Any) -> Answer:
        if method == "POST" and parts == [""]:
            try:
                return 200, {}, self.batches.create(body).as_json(self.url)
            except BatchRequestError as exc:
                return _error(ErrorReply(400, str(exc)))
        batch = self.batches.get(parts[0])
        if batch is None:
            return _error(ErrorReply(404, f"no batch {parts[0]!r}", error_type="not_found_error"))
        if method == "GET" and len(parts) == 1:
            return 200, {}, batch.as_json(self.url)
        if method == "GET" and parts[1:] == ["results"]:
            if batch.status != "ended":
                return _error(ErrorReply(400, f"batch {batch.id} has not ended ({batch.status})"))
            return 200, {"content-type": "application/binary"}, batch.results_jsonl()
        if method == "POST" and parts[1:] == ["cancel"]:
            self.batches.cancel(batch)
            return 200, {}, batch.as_json(self.url)
        return _error(ErrorReply(404, f"stand-in does not serve {method} batches/{'/'.join(parts)}"))

    def _play(self, body: dict[str, Any], *, batch: bool) -> Answer:
        """Answer one model request from the script; charge it when it succeeds."""
        with self._lock:
            self._served += 1
            number = self._served
            entry = self._script.pop(0) if self._script else None
        if entry is None:
            return _error(
                ErrorReply(
                    500,
                    f"stand-in script exhausted: request #{number} has no scripted answer (add more reply()/error() "
                    "entries)",
                )
            )
        try:
            spec = entry(body) if callable(entry) else entry
            if isinstance(spec, Mapping):
                spec = spec_from_dict(spec)
        except Exception as exc:  # a broken script must show up in the test, not as a dropped connection
            return _error(ErrorReply(500, f"script entry #{number} raised {type(exc).__name__}: {exc}"))
        if isinstance(spec, ErrorReply):
            return _error(spec, request_number=number)
        if not isinstance(spec, Reply):
            return _error(ErrorReply(500, f"script entry #{number} produced {spec!r}, not a reply or error"))
        content = self._content(spec)
        try:
            usage = spec.usage
            if usage is None:
                usage = self.cache.usage(body, sum(prompt_cache.count(block) for block in content))
        except CacheRequestError as exc:
            return _error(ErrorReply(400, str(exc)), request_number=number)
        model = spec.model or body.get("model", "stand-in")
        self._charge(number, model, usage, batch)
        return 200, {"request-id": f"req_stand_in_{number}"}, _message(spec, content, model, usage, number)

    def _content(self, spec: Reply) -> list[dict[str, Any]]:
        content: list[dict[str, Any]] = []
        if spec.text:
            content.append({"type": "text", "text": spec.text})
        for use in spec.tool_uses:
            with self._lock:
                self._tool_ids += 1
                tool_id = use.id or f"toolu_stand_in_{self._tool_ids}"
            content.append({"type": "tool_use", "id": tool_id, "name": use.name, "input": use.input})
        return content

    def _charge(self, number: int, model: str, usage: Usage, batch: bool) -> None:
        cost = None
        if self._prices is not None:
            cost = cost_micros(usage, price_for(model, self._prices), batch=batch)
        with self._lock:
            self.charges.append(Charge(number, model, usage, batch, cost))


def _message(spec: Reply, content: list[dict[str, Any]], model: str, usage: Usage, number: int) -> dict[str, Any]:
    return {
        "id": spec.id or f"msg_stand_in_{number}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": spec.effective_stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "cache_creation_input_tokens": usage.cache_write_tokens,
            "cache_read_input_tokens": usage.cache_read_tokens,
            "cache_creation": {
                "ephemeral_5m_input_tokens": usage.cache_write_tokens - usage.cache_write_1h_tokens,
                "ephemeral_1h_input_tokens": usage.cache_write_1h_tokens,
            },
        },
    }


def _error(spec: ErrorReply, *, request_number: int | None = None) -> Answer:
    headers = {"request-id": f"req_stand_in_{request_number}"} if request_number else {}
    if spec.retry_after is not None:
        headers["retry-after"] = f"{spec.retry_after:g}"
    body = {"type": "error", "error": {"type": spec.effective_type, "message": spec.effective_message}}
    return spec.status, headers, body


def _handler_for(stand_in: MessagesStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "MessagesStandIn/2"

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
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("content-type", extra.pop("content-type", "application/json"))
                self.send_header("content-length", str(len(data)))
                for name, value in extra.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except OSError:  # the client is gone (killed, timed out): the request was still processed and billed
                pass

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

    return Handler
