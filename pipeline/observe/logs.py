"""Structured logs: lifecycle hooks that log what runs do, with the run's fields on every record.

:class:`LogHooks` logs one line per step, model turn, tool call and run outcome on the ``rubot.runs`` logger, with
``run_id``, ``workflow``, ``step``, ``op_key``, ``tool``, ``tokens`` and ``cost`` as record attributes (not inside
the message). :class:`RunContext` adds the fields of the work the thread is doing (set when a step or a model turn
starts) to every other record, so a line logged deep inside a tool or by Celery carries its run too.

:func:`configure` sets up a process: ``RUBOT_LOG_FORMAT=json`` writes JSON lines (python-json-logger), ``text``
(the default, what a terminal wants) one readable line per record. Both go through the redactor.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from pipeline.engine.hooks import Hooks, ModelTurnInfo, RunInfo, StepInfo, ToolCallInfo
from pipeline.redact import redact

log = logging.getLogger("rubot.runs")

#: The record attributes this module adds; a JSON line has each one it knows.
FIELDS = ("run_id", "workflow", "step", "op_key", "agent", "tool", "tokens", "cost", "model", "status", "reason")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JSON_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("rubot_log_context", default={})  # noqa: B039 - never mutated


def bind(**fields: Any) -> None:
    """Make ``fields`` the run context of this thread's records until the next :func:`bind`."""
    _context.set({k: v for k, v in fields.items() if v is not None})


class RunContext(logging.Filter):
    """Adds the thread's run context to each record that does not carry those attributes already."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class RedactingText(logging.Formatter):
    """One line per record (traceback below it), through the redactor."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class RedactingJson(JsonFormatter):
    """JSON lines with Rubot's fields, every key and value through the redactor."""

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        return redact(log_data)


def formatter(kind: str) -> logging.Formatter:
    if kind == "json":
        return RedactingJson(JSON_FORMAT, rename_fields={"levelname": "level", "name": "logger"})
    return RedactingText(TEXT_FORMAT)


def configure(level: str = "INFO", kind: str = "text", *, stream: Any = None) -> None:
    """Log to stderr in ``kind`` (``text`` or ``json``) at ``level``, with the run context on every record.

    Like ``logging.basicConfig``, this leaves a root logger that already has handlers (a host's, pytest's) alone,
    but for the ``rubot`` logger's level.
    """
    root = logging.getLogger()
    logging.getLogger("rubot").setLevel(level.upper())
    if any(not getattr(h, "rubot", False) for h in root.handlers):
        return
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(kind))
    handler.addFilter(RunContext())
    handler.rubot = True  # type: ignore[attr-defined]
    for old in [h for h in root.handlers if getattr(h, "rubot", False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


def _cost(micros: int) -> float:
    return micros / 1_000_000


class LogHooks(Hooks):
    """One log line per lifecycle event, its fields as record attributes."""

    def step_started(self, info: StepInfo) -> None:
        bind(run_id=info.run_id, workflow=info.workflow, step=info.step, op_key=info.step)
        log.info("step %s started (run %s)", info.step, info.run_id, extra=_step(info))

    def step_completed(self, info: StepInfo) -> None:
        log.info("step %s completed (run %s)", info.step, info.run_id, extra=_step(info))
        bind()  # the thread's next records belong to no run until the next step or turn starts

    def step_failed(self, info: StepInfo) -> None:
        reason = (info.error or {}).get("reason")
        log.warning(
            "step %s failed: %s (run %s)", info.step, reason, info.run_id, extra={**_step(info), "reason": reason}
        )
        bind()

    def model_turn_started(self, info: ModelTurnInfo) -> None:
        op_key = f"{info.step}/turn-{info.turn}"
        bind(run_id=info.run_id, workflow=info.workflow, step=info.step, op_key=op_key, agent=info.agent)

    def model_turn_recorded(self, info: ModelTurnInfo) -> None:
        tokens = sum(info.usage.values())
        log.info(
            "model turn %s of %s: %s tokens, $%.6f (run %s)",
            info.turn,
            info.step,
            tokens,
            _cost(info.cost_micros),
            info.run_id,
            extra={
                "run_id": info.run_id,
                "workflow": info.workflow,
                "step": info.step,
                "op_key": f"{info.step}/turn-{info.turn}",
                "agent": info.agent,
                "model": info.model,
                "tokens": tokens,
                "cost": _cost(info.cost_micros),
            },
        )

    def tool_call_answered(self, info: ToolCallInfo) -> None:
        log.info(
            "tool %s: %s (run %s)",
            info.tool,
            info.outcome,
            info.run_id,
            extra={"run_id": info.run_id, "workflow": info.workflow, "step": info.step, "op_key": info.op_key,
                   "tool": info.tool, "status": info.outcome},
        )  # fmt: skip

    def run_completed(self, info: RunInfo) -> None:
        self._run(info, logging.INFO)

    def run_failed(self, info: RunInfo) -> None:
        self._run(info, logging.WARNING)

    def run_cancelled(self, info: RunInfo) -> None:
        self._run(info, logging.INFO)

    def run_set_aside(self, info: RunInfo) -> None:
        self._run(info, logging.WARNING)

    def _run(self, info: RunInfo, level: int) -> None:
        reason = (info.error or {}).get("reason")
        log.log(
            level,
            "run %s %s%s",
            info.run_id,
            info.status,
            f": {reason}" if reason else "",
            extra={"run_id": info.run_id, "workflow": info.workflow, "step": info.step, "status": info.status,
                   "reason": reason, "cost": _cost(info.cost_micros)},
        )  # fmt: skip


def _step(info: StepInfo) -> dict[str, Any]:
    return {"run_id": info.run_id, "workflow": info.workflow, "step": info.step, "op_key": info.step}
