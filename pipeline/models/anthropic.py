"""The Anthropic Messages API provider, on the real ``anthropic`` SDK.

One :meth:`AnthropicModel.create_message` call is one HTTP request and one billed turn. Prompt caching is set
here, where the request is shaped: a ``cache_control`` breakpoint on the instructions (system) block and on
the last tool definition, so the stable prefix (tools, then system) is cached across turns of a run. Messages
carry user input and tool results; they are passed through untouched and never get a breakpoint from us.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anthropic

from pipeline.errors import ModelError, ModelUnavailable
from pipeline.models.base import ModelRequest, ModelResponse, ToolCall, Usage
from pipeline.models.failures import error_for_status, is_retryable_status, parse_retry_after
from pipeline.models.guard import check_model_call
from pipeline.redact import REDACTED, redact

EPHEMERAL = {"type": "ephemeral"}


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
        check_model_call(self.name, self.base_url)  # before any byte leaves the process
        try:
            message = self._client.messages.create(**self.request_params(request))
        except anthropic.APIStatusError as exc:
            raise self._status_error(exc) from None
        except anthropic.APIConnectionError as exc:  # includes APITimeoutError
            kind = "timed out" if isinstance(exc, anthropic.APITimeoutError) else "could not connect"
            raise ModelUnavailable(
                self._scrub(f"Anthropic API {kind} ({self.base_url}): {exc}"), details={"error": type(exc).__name__}
            ) from None
        except anthropic.APIError as exc:
            raise ModelError(
                self._scrub(f"Anthropic API error: {exc}"), details={"error": type(exc).__name__}
            ) from None
        # `from None` above: the SDK exception holds the request, whose headers carry the API key; error
        # reporters that walk exception chains must not find it.
        return self._response(message)

    @staticmethod
    def request_params(request: ModelRequest) -> dict[str, Any]:
        """The keyword arguments for ``messages.create`` (public so tests and tracing can inspect them)."""
        params: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens,
            "messages": request.messages,
        }
        if request.system:  # the API rejects empty text blocks
            params["system"] = [{"type": "text", "text": request.system, "cache_control": dict(EPHEMERAL)}]
        if request.tools:
            # Fresh dicts with only the three tool fields: a stray cache_control on an earlier tool would add
            # breakpoints (the API allows four) and move the cached prefix.
            tools = [_tool_definition(tool) for tool in request.tools]
            tools[-1]["cache_control"] = dict(EPHEMERAL)
            params["tools"] = tools
        if request.tool_choice is not None:
            params["tool_choice"] = request.tool_choice
        return params

    def _response(self, message: Any) -> ModelResponse:
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
            ),
            provider=self.name,
            id=message.id,
        )

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


def _tool_definition(tool: Mapping[str, Any]) -> dict[str, Any]:
    definition: dict[str, Any] = {"name": tool["name"], "input_schema": tool["input_schema"]}
    if tool.get("description"):
        definition["description"] = tool["description"]
    return definition
