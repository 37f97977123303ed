"""An in-process model that plays a script, one entry per turn, and records every request.

For unit tests of the agent loop: no HTTP, no SDK, fully deterministic::

    model = ScriptedModel([
        reply(tool_uses=[("lookup_order", {"order_id": "o_1"})], usage={"input_tokens": 120, "output_tokens": 30}),
        lambda request: reply(tool_uses=[("final_answer", {"ok": "o_1" in str(request.messages[-1])})]),
    ])

Entries are a :class:`~pipeline.models.base.ModelResponse` (returned as is), a
:func:`~pipeline.testing.replies.reply` / :func:`~pipeline.testing.replies.error` spec, a dict of ``reply()``
keywords (or ``{"status": 429, "retry_after": 1}`` for a failure), or a callable ``(ModelRequest) -> any of
those``. Error specs raise what a network provider would: :class:`~pipeline.errors.ModelUnavailable` for
429/529/5xx, :class:`~pipeline.errors.ModelError` otherwise. Running past the end raises ``ModelError``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pipeline.errors import ModelError
from pipeline.models.base import ModelRequest, ModelResponse, ToolCall, Usage
from pipeline.models.failures import error_for_status
from pipeline.testing.replies import ErrorReply, Reply, spec_from_dict

ScriptedEntry = ModelResponse | Reply | ErrorReply | Mapping[str, Any] | Callable[[ModelRequest], Any]


class ScriptedModel:
    """A :class:`~pipeline.models.base.ModelProvider` answering from a script; thread-safe.

    Responses report ``model`` when given, else the requested model, so cost accounting prices a scripted
    turn like the real model it stands for (pass ``model="scripted"`` for free turns).
    """

    name = "scripted"

    def __init__(self, script: Iterable[ScriptedEntry] = (), *, model: str | None = None) -> None:
        self._lock = threading.Lock()
        self._script: list[ScriptedEntry] = list(script)
        self._model = model
        self._tool_ids = 0
        self.requests: list[ModelRequest] = []

    def add(self, *entries: ScriptedEntry) -> None:
        """Append entries to the script."""
        with self._lock:
            self._script.extend(entries)

    @property
    def remaining(self) -> int:
        """Script entries not yet played."""
        with self._lock:
            return len(self._script)

    def create_message(self, request: ModelRequest) -> ModelResponse:
        with self._lock:
            self.requests.append(request)
            number = len(self.requests)
            if not self._script:
                raise ModelError(
                    f"ScriptedModel script exhausted: turn #{number} (model {request.model!r}) has no scripted "
                    f"answer; {number - 1} turn(s) were scripted"
                )
            entry = self._script.pop(0)
        spec = entry(request) if callable(entry) else entry
        if isinstance(spec, Mapping):
            spec = spec_from_dict(spec)
        if isinstance(spec, ModelResponse):
            return spec
        if isinstance(spec, ErrorReply):
            raise error_for_status(
                spec.status,
                f"scripted {spec.effective_type} ({spec.status}): {spec.effective_message}",
                retry_after=spec.retry_after,
                details={"status": spec.status, "type": spec.effective_type},
            )
        if isinstance(spec, Reply):
            return self._response(spec, request, number)
        raise ModelError(
            f"ScriptedModel entry #{number} produced {spec!r}; expected a ModelResponse, reply(), error() or dict spec"
        )

    def _response(self, spec: Reply, request: ModelRequest, number: int) -> ModelResponse:
        calls: list[ToolCall] = []
        for use in spec.tool_uses:
            with self._lock:
                self._tool_ids += 1
                tool_id = use.id or f"toolu_scripted_{self._tool_ids}"
            calls.append(ToolCall(id=tool_id, name=use.name, input=dict(use.input)))
        return ModelResponse(
            model=spec.model or self._model or request.model,
            text=spec.text,
            tool_calls=calls,
            stop_reason=spec.effective_stop_reason,
            usage=spec.usage or Usage(),
            provider=self.name,
            id=spec.id or f"msg_scripted_{number}",
        )
