"""The Anthropic Messages API provider, on the real ``anthropic`` SDK.

One :meth:`AnthropicModel.create_message` call is one HTTP request and one billed turn. Prompt-cache breakpoints
are placed here, where the request is shaped, by the request's :class:`~pipeline.models.caching.CachePolicy` (see
that module for where each breakpoint goes and why none of them lets user input or tool results into the prefix
shared across runs). The provider also counts a request's tokens with the API's free counting endpoint (to
estimate a turn whose response was lost) and sends requests through the Message Batches API.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import anthropic
import httpx2

from pipeline.errors import ModelError, ModelUnavailable
from pipeline.models import caching
from pipeline.models.base import ModelRequest, ModelResponse, ToolCall, Usage
from pipeline.models.batches import SUCCEEDED, BatchInfo, BatchItem
from pipeline.models.failures import error_for_status, is_retryable_status, parse_retry_after
from pipeline.models.guard import check_model_call
from pipeline.redact import REDACTED, redact

T = TypeVar("T")
# Failures that happen before a request is on the wire: it cannot have been billed.
NOT_SENT = (httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.PoolTimeout)


class AnthropicModel:
    """A :class:`~pipeline.models.base.ModelProvider` answering turns through Anthropic's Messages API."""

    name = "anthropic"

    def __init__(self, api_key: str, *, base_url: str | None = None, timeout: float = 60.0) -> None:
        if not api_key:
            raise ModelError("AnthropicModel needs an API key (set ANTHROPIC_API_KEY)")
        self._api_key = api_key
        # max_retries=0: the SDK would otherwise retry 408/409/429/5xx on its own, invisibly. Our Celery turn
        # task owns retries (with backoff, counted in SQL), so a turn is sent, recorded and billed exactly once
        # per attempt we know about.
        self._client = anthropic.Anthropic(api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout)

    @property
    def base_url(self) -> str:
        """Where requests go (the explicit ``base_url``, else ``ANTHROPIC_BASE_URL``, else the public API)."""
        return str(self._client.base_url)

    def __repr__(self) -> str:  # never show the key
        return f"AnthropicModel(base_url={self.base_url!r})"

    def create_message(self, request: ModelRequest) -> ModelResponse:
        """Send one turn and map the reply; raises ModelUnavailable (retry later) or ModelError (don't)."""
        message = self._call(lambda: self._client.messages.create(**self.request_params(request)))
        return self.response(message)

    def count_tokens(self, request: ModelRequest) -> int:
        """The prompt tokens of ``request`` by the API's counting endpoint (free; no message is created)."""
        params = self.request_params(request)
        params.pop("max_tokens")
        return int(self._call(lambda: self._client.messages.count_tokens(**params)).input_tokens)

    # --- Message Batches ------------------------------------------------------------------------------------

    def submit_batch(self, requests: list[tuple[str, ModelRequest]]) -> BatchInfo:
        """Create a batch of ``(custom_id, request)`` pairs."""
        entries: list[Any] = [{"custom_id": cid, "params": self.request_params(request)} for cid, request in requests]
        return _batch_info(self._call(lambda: self._client.messages.batches.create(requests=entries)))

    def batch_info(self, batch_id: str) -> BatchInfo:
        return _batch_info(self._call(lambda: self._client.messages.batches.retrieve(batch_id)))

    def cancel_batch(self, batch_id: str) -> BatchInfo:
        return _batch_info(self._call(lambda: self._client.messages.batches.cancel(batch_id)))

    def batch_results(self, batch_id: str) -> list[BatchItem]:
        """Every result line of an ended batch."""

        def read() -> list[BatchItem]:
            items = []
            for line in self._client.messages.batches.results(batch_id):
                result = line.result
                if result.type == "succeeded":
                    items.append(BatchItem(line.custom_id, SUCCEEDED, response=self.response(result.message)))
                else:
                    error = getattr(result, "error", None)
                    detail = error.error.model_dump() if error is not None else None
                    items.append(BatchItem(line.custom_id, result.type, error=detail))
            return items

        return self._call(read)

    # --- shaping and mapping ---------------------------------------------------------------------------------

    @staticmethod
    def request_params(request: ModelRequest) -> dict[str, Any]:
        """The keyword arguments for ``messages.create`` (public so tests and tracing can inspect them)."""
        shaped = caching.shape(request.system, request.tools, request.messages, request.cache)
        params: dict[str, Any] = {"model": request.model, "max_tokens": request.max_tokens, "messages": shaped.messages}
        if shaped.system:  # the API rejects empty text blocks
            params["system"] = shaped.system
        if shaped.tools:
            params["tools"] = shaped.tools
        if request.tool_choice is not None:
            params["tool_choice"] = request.tool_choice
        return params

    def response(self, message: Any) -> ModelResponse:
        """A :class:`ModelResponse` from an SDK ``Message``."""
        texts: list[str] = []
        calls: list[ToolCall] = []
        for block in message.content:
            if block.type == "text":
                texts.append(block.text)
            elif block.type == "tool_use":
                arguments = block.input
                calls.append(
                    ToolCall(
                        id=block.id, name=block.name, input=dict(arguments) if isinstance(arguments, Mapping) else {}
                    )
                )
        usage = message.usage
        breakdown = getattr(usage, "cache_creation", None)
        return ModelResponse(
            model=message.model,
            text="".join(texts),
            tool_calls=calls,
            stop_reason=message.stop_reason or "",
            usage=Usage(
                input_tokens=usage.input_tokens or 0,
                output_tokens=usage.output_tokens or 0,
                cache_write_tokens=getattr(usage, "cache_creation_input_tokens", None) or 0,
                cache_read_tokens=getattr(usage, "cache_read_input_tokens", None) or 0,
                cache_write_1h_tokens=(getattr(breakdown, "ephemeral_1h_input_tokens", None) or 0) if breakdown else 0,
            ),
            provider=self.name,
            id=message.id,
        )

    # --- errors ------------------------------------------------------------------------------------------------

    def _call(self, send: Callable[[], T]) -> T:
        check_model_call(self.name, self.base_url)  # before any byte leaves the process
        try:
            return send()
        except anthropic.APIStatusError as exc:
            raise self._status_error(exc) from None
        except anthropic.APIConnectionError as exc:  # includes APITimeoutError
            kind = "timed out" if isinstance(exc, anthropic.APITimeoutError) else "could not connect"
            # A request that was on the wire when the connection broke (a read timeout, a dropped connection) may
            # have been processed and billed; one that never connected was not.
            sent = not isinstance(exc.__cause__, NOT_SENT)
            raise ModelUnavailable(
                self._scrub(f"Anthropic API {kind} ({self.base_url}): {exc}"),
                details={"error": type(exc).__name__, "maybe_billed": sent},
                maybe_billed=sent,
            ) from None
        except anthropic.APIError as exc:
            raise ModelError(
                self._scrub(f"Anthropic API error: {exc}"), details={"error": type(exc).__name__}
            ) from None
        # `from None` above: the SDK exception holds the request, whose headers carry the API key; error
        # reporters that walk exception chains must not find it.

    def _status_error(self, exc: anthropic.APIStatusError) -> ModelError:
        status = exc.status_code
        error = exc.body.get("error") if isinstance(exc.body, Mapping) else None
        error_type = error.get("type") if isinstance(error, Mapping) else None
        api_message = error.get("message") if isinstance(error, Mapping) else None
        request_id = exc.response.headers.get("request-id")
        retry_after = parse_retry_after(exc.response.headers)
        verb = "is unavailable" if is_retryable_status(status) else "rejected the request"
        text = f"Anthropic API {verb} ({status} {error_type or type(exc).__name__}): {api_message or exc.message}"
        if request_id:
            text += f" [request-id {request_id}]"
        if retry_after is not None:
            text += f" (retry after {retry_after:g}s)"
        details = {"status": status, "type": error_type, "request_id": request_id}
        return error_for_status(status, self._scrub(text), retry_after=retry_after, details=details)

    def _scrub(self, text: str) -> str:
        # A proxy or a misbehaving server may echo the request back; the key must not reach run.error or logs.
        return redact(text.replace(self._api_key, REDACTED))


def _batch_info(batch: Any) -> BatchInfo:
    return BatchInfo(id=batch.id, status=batch.processing_status, expires_at=batch.expires_at)
