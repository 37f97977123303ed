"""``Tool``: a typed, authorized unit of work that a workflow step or a model can call."""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar

from marshmallow import Schema

from pipeline.definitions import registry, schemas
from pipeline.errors import DefinitionError, InvalidToolInput, InvalidToolOutput, ToolTimeout
from pipeline.redact import scrub_exception, sensitive_values


def snake_case(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def assign_name(cls: type) -> None:
    """Default ``cls.name`` to the snake_case class name and check it is usable as a model tool name."""
    if "name" not in cls.__dict__:
        cls.name = snake_case(cls.__name__)  # type: ignore[attr-defined]
    name = cls.name  # type: ignore[attr-defined]
    if not isinstance(name, str) or not re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", name):
        raise DefinitionError(f"{cls.__name__}.name must be 1-64 letters, digits, '_' or '-', got {name!r}")


@dataclass(frozen=True)
class ToolContext:
    """What a tool knows about the call it serves. Ids only: never the transcript."""

    run_id: str
    op_key: str
    user: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def idempotency_key(self) -> str:
        """Stable across retries and redelivery of the same call: pass it to downstream APIs."""
        return hashlib.sha256(f"{self.run_id}:{self.op_key}".encode()).hexdigest()[:32]


class Tool:
    """Subclass, declare ``description``, ``input_schema`` and ``output_schema``, and implement ``call``.

    ``call`` receives the validated input as keyword arguments and returns something matching
    ``output_schema``. Set ``side_effects = True`` for tools that change the world (payments, e-mails).
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    input_schema: ClassVar[Any] = None
    output_schema: ClassVar[Any] = None
    side_effects: ClassVar[bool] = False
    #: Seconds a call may take (``None``: no limit). A call past it fails with ``ToolTimeout``; when the tool has
    #: side effects the run goes to ``needs_reconciliation`` instead, since the call may still act.
    timeout: ClassVar[float | None] = None
    #: True when the tool passes ``self.context.idempotency_key`` to the system it changes, so repeating a call
    #: whose outcome is unknown is safe. Without it, an interrupted side-effecting call needs a person.
    idempotent: ClassVar[bool] = False
    #: Who may approve a call when ``requires_approval`` asks for it.
    approval_role: ClassVar[str] = "approver"
    #: How long such an approval may wait (``None``: forever). When it passes, the beat sweep rejects the call
    #: and the model is told the approval expired; escalation is for ``approval_step`` only.
    approval_expires_in: ClassVar[timedelta | None] = None
    approval_on_expire: ClassVar[str] = "reject"
    #: When the approvers of a waiting call are reminded (once; shorter than ``approval_expires_in`` if both set).
    approval_sla: ClassVar[timedelta | None] = None
    #: A one-line description of a call for its approvers: a ``str.format`` template over the arguments
    #: (``"Refund {amount_cents} cents on order {order_id}"``) or a callable taking them as keywords.
    approval_summary: ClassVar[Any] = None
    #: Narrows who may approve a call beyond ``approval_role``: a callable taking an ApproverCheck.
    approvers: ClassVar[Any] = None

    _input: ClassVar[type[Schema] | None]
    _output: ClassVar[type[Schema] | None]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        owner = cls.__name__
        assign_name(cls)
        if not isinstance(cls.description, str):
            raise DefinitionError(f"{owner}.description must be a string")
        if cls.call is Tool.call:
            raise DefinitionError(f"{owner} must implement call(self, **input)")
        _check_approval_expiry(cls)
        _check_timeout(cls)
        cls._input = schemas.make_schema(cls.input_schema, owner=owner, attribute="input_schema")
        cls._output = schemas.make_schema(cls.output_schema, owner=owner, attribute="output_schema")
        registry.tools.add(cls.name, cls)

    def __init__(self, context: ToolContext | None = None) -> None:
        self.context = context

    def call(self, **input: Any) -> Any:
        raise NotImplementedError

    def permitted_for(self, user: Any) -> bool:
        """Whether ``user`` may call this tool. Override to restrict; the default allows everyone."""
        return True

    def requires_approval(self, **input: Any) -> str | None:
        """A reason when a person must approve this exact call first (e.g. a refund above a threshold)."""
        return None

    def for_model(self, result: Any) -> Any:
        """What a model that called this tool sees of its ``result`` (JSON). Override to trim what the model does
        not need — every token of a result is paid for again on each later turn — or to hide fields from it.

        The full result stays in the ledger (``run.effects``, the console, ``rubot show``); only the model's copy
        is projected. The default shows the whole result. Workflow ``tool_step`` results are not affected.
        """
        return result

    @classmethod
    def projects_results(cls) -> bool:
        """Whether the tool shows the model less than its full result (``for_model`` is overridden)."""
        return cls.for_model is not Tool.for_model

    @classmethod
    def approval_expires_at(cls, now: datetime) -> datetime | None:
        """When an approval of a call requested at ``now`` expires (``None``: it never does)."""
        return now + cls.approval_expires_in if cls.approval_expires_in is not None else None

    @classmethod
    def approval_remind_at(cls, now: datetime) -> datetime | None:
        """When the approvers of a call requested at ``now`` are reminded (``None``: never)."""
        return now + cls.approval_sla if cls.approval_sla is not None else None

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        return schemas.json_schema(cls._input)

    @classmethod
    def validate_output(cls, data: Any, *, what: str | None = None) -> Any:
        """``data`` checked against ``output_schema``, in JSON form (``InvalidToolOutput`` if it does not fit)."""
        return schemas.validate_output(
            cls._output, data, error=InvalidToolOutput, what=what or f"output of tool {cls.name!r}"
        )

    @classmethod
    def validate_input(cls, data: Any) -> Any:
        return schemas.load(cls._input, data, error=InvalidToolInput, what=f"input of tool {cls.name!r}")

    def invoke(self, data: Any) -> Any:
        """Validate ``data``, call the tool (within ``timeout``) and return its validated output in JSON form."""
        loaded = self.validate_input(data)
        try:
            result = _within(type(self).timeout, self.name, lambda: self._call(loaded))
        except Exception as exc:
            # The message may quote an argument declared sensitive: take those values out before anyone (the
            # run's error, the event trail, the log, Sentry) reads it.
            raise scrub_exception(exc, sensitive_values(type(self)._input, data)) from exc.__cause__
        return schemas.validate_output(
            type(self)._output, result, error=InvalidToolOutput, what=f"output of tool {self.name!r}"
        )

    def _call(self, loaded: Any) -> Any:
        return self.call(**loaded) if isinstance(loaded, dict) else self.call(input=loaded)


def _within(timeout: float | None, name: str, work: Callable[[], Any]) -> Any:
    """``work()``, or :class:`ToolTimeout` once ``timeout`` seconds have passed.

    Python cannot stop a thread, so the call runs in a daemon thread that is abandoned when time is up: the
    caller goes on (and a side-effecting tool's run is handed to a person), whatever the call does later.
    """
    if timeout is None:
        return work()
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:  # handed to the caller's thread below
            outcome["error"] = exc

    thread = threading.Thread(target=run, name=f"tool-{name}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise ToolTimeout(
            f"tool {name!r} did not finish within its timeout of {timeout:g}s", details={"timeout_seconds": timeout}
        )
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def _check_timeout(cls: type[Tool]) -> None:
    timeout = cls.timeout
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0):
        raise DefinitionError(f"{cls.__name__}.timeout must be a positive number of seconds or None, got {timeout!r}")


def _check_approval_expiry(cls: type[Tool]) -> None:
    owner = cls.__name__
    expires_in = cls.approval_expires_in
    if expires_in is not None and (not isinstance(expires_in, timedelta) or expires_in.total_seconds() <= 0):
        raise DefinitionError(
            f"{owner}.approval_expires_in must be a positive datetime.timedelta or None, got {expires_in!r}"
        )
    sla = cls.approval_sla
    if sla is not None and (not isinstance(sla, timedelta) or sla.total_seconds() <= 0):
        raise DefinitionError(f"{owner}.approval_sla must be a positive datetime.timedelta or None, got {sla!r}")
    if sla is not None and expires_in is not None and sla >= expires_in:
        raise DefinitionError(f"{owner}.approval_sla must be shorter than approval_expires_in (a reminder comes first)")
    summary = cls.approval_summary
    if summary is not None and not (isinstance(summary, str) or callable(summary)):
        raise DefinitionError(f"{owner}.approval_summary must be a format string or a callable")
    if cls.approvers is not None and not callable(cls.approvers):
        raise DefinitionError(f"{owner}.approvers must be a callable taking an ApproverCheck")
    if cls.approval_on_expire != "reject":
        # A tool call is bound to one model turn; handing it to another role would keep the agent waiting on
        # a call whose context has moved on, so an expired call is refused and the model decides what next.
        raise DefinitionError(
            f'{owner}.approval_on_expire must be "reject" (tool-call approvals cannot '
            f"escalate), got {cls.approval_on_expire!r}"
        )


def resolve(ref: Any, *, where: str) -> type[Tool]:
    """A Tool class from a class or a registered tool name; anything else is a definition error."""
    if isinstance(ref, str):
        cls = registry.tools.get(ref)
        if cls is None:
            known = ", ".join(registry.tools.names()) or "none"
            raise DefinitionError(f"{where}: unknown tool {ref!r} (known tools: {known})")
        return cls
    if isinstance(ref, type) and issubclass(ref, Tool) and ref is not Tool:
        return ref
    raise DefinitionError(f"{where}: expected a Tool subclass or a tool name, got {ref!r}")
