"""Keep secrets out of everything that leaves SQL — events, pages, the CLI, logs and Sentry — with one redactor.

A value is a secret when:

* its key is the name of a marshmallow field **declared sensitive** in any Tool, Agent or Workflow schema this
  process has loaded (``fields.String(metadata={"sensitive": True})``, or :func:`sensitive`). The names are
  registered when the schema is made (:func:`register_schema`), so a process must import the workflow modules to
  know them: workers do, and so do ``rubot`` commands and the web app;
* its key looks secret (``api_key``, ``password``, ``access_token`` ...), or the string looks like an API key.

A string holding a JSON object (a tool result as the model received it) is redacted inside. Free text cannot be
redacted by key: an exception raised by a tool has the values of its sensitive arguments removed from its message
(:func:`scrub_exception`) before the engine, the logs or Sentry see it.

What approvers see is up to the field: ``{"sensitive": True}`` hides the value from them too; ``{"sensitive":
"last4"}`` shows them its last four characters (``••••1234``) on the approval page and in the approvals API,
and hides it everywhere else.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from marshmallow import Schema, fields

SECRET_KEY = re.compile(
    r"(^|[_-])(api[_-]?key|apikey|secret|password|passwd|authorization|auth[_-]?token|access[_-]?token|"
    r"refresh[_-]?token|private[_-]?key|cookie|session[_-]?id|credentials?)$",
    re.IGNORECASE,
)
SECRET_VALUE = re.compile(r"\b(sk-ant-[A-Za-z0-9_-]{8,}|sk-[A-Za-z0-9]{20,}|Bearer\s+[A-Za-z0-9._-]{8,})")
REDACTED = "[redacted]"
#: The metadata key of a sensitive field, and what approvers may see of it.
SENSITIVE = "sensitive"
HIDDEN = "hidden"
LAST4 = "last4"
#: Values shorter than this are not searched for in free text (they would match everywhere).
MIN_SCRUB_LENGTH = 4

_declared: dict[str, str] = {}  # field name (as stored) -> what approvers see (HIDDEN or LAST4)
_lock = threading.Lock()


def sensitive(field: fields.Field, *, approvers: str = HIDDEN) -> fields.Field:
    """Mark ``field`` sensitive; ``approvers="last4"`` lets approvers see its last four characters."""
    if approvers not in (HIDDEN, LAST4):
        raise ValueError(f"approvers must be {HIDDEN!r} or {LAST4!r}, got {approvers!r}")
    field.metadata = {**field.metadata, SENSITIVE: True if approvers == HIDDEN else LAST4}
    return field


def level(field: fields.Field) -> str | None:
    """What approvers see of ``field`` (``HIDDEN`` or ``LAST4``), or ``None`` when it is not sensitive."""
    marked = field.metadata.get(SENSITIVE)
    if not marked:
        return None
    return LAST4 if marked == LAST4 else HIDDEN


def register_schema(schema: type[Schema] | None) -> None:
    """Remember the names of ``schema``'s sensitive fields (nested schemas and list items included)."""
    if schema is None:
        return
    for name, what in _sensitive_fields(schema, set()):
        with _lock:
            # The strictest declaration of a name wins: one field hidden from approvers hides every field so named.
            if _declared.get(name) != HIDDEN:
                _declared[name] = what


def declared() -> dict[str, str]:
    """The sensitive field names this process knows, with what approvers see of each."""
    return dict(_declared)


def _sensitive_fields(schema: Any, seen: set[int]) -> Iterator[tuple[str, str]]:
    if isinstance(schema, type) and issubclass(schema, Schema):
        declared_fields = schema._declared_fields
    elif isinstance(schema, Schema):
        declared_fields = schema.declared_fields
    else:
        return
    if id(schema) in seen:
        return
    seen.add(id(schema))
    for name, field in declared_fields.items():
        what = level(field)
        if what is not None:
            yield field.data_key or name, what
        for inner in _inner_schemas(field):
            yield from _sensitive_fields(inner, seen)


def _inner_schemas(field: fields.Field) -> list[Any]:
    if isinstance(field, fields.Nested):
        nested = field.nested
        if isinstance(nested, dict):
            return [Schema.from_dict(nested)]
        if isinstance(nested, Schema) or isinstance(nested, type) and issubclass(nested, Schema):
            return [nested]
        return []  # a schema named by a string or a callable: resolved later, not walked here
    if isinstance(field, fields.List):
        return _inner_schemas(field.inner)
    if isinstance(field, fields.Dict) and field.value_field is not None:
        return _inner_schemas(field.value_field)
    return []


def sensitive_values(schema: type[Schema] | None, data: Any) -> list[str]:
    """The values (as text) of ``data`` under the sensitive fields of ``schema``."""
    if schema is None:
        return []
    names = {name for name, _ in _sensitive_fields(schema, set())}
    return [v for v in _values_under(data, names) if len(v) >= MIN_SCRUB_LENGTH] if names else []


def _values_under(data: Any, names: set[str]) -> Iterator[str]:
    if isinstance(data, Mapping):
        for key, value in data.items():
            if key in names and value is not None:
                yield from _leaves(value)
            else:
                yield from _values_under(value, names)
    elif isinstance(data, list | tuple):
        for item in data:
            yield from _values_under(item, names)


def _leaves(value: Any) -> Iterator[str]:
    if isinstance(value, Mapping):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _leaves(item)
    elif not isinstance(value, bool):
        yield str(value)


def scrub(text: str, values: list[str]) -> str:
    """``text`` with every occurrence of ``values`` replaced (longest first, so no part of one survives)."""
    for value in sorted(set(values), key=len, reverse=True):
        text = text.replace(value, REDACTED)
    return text


def scrub_exception(exc: BaseException, values: list[str]) -> BaseException:
    """Remove ``values`` from ``exc``'s message in place (its type and traceback are kept) and return it."""
    if not values:
        return exc
    exc.args = tuple(scrub(a, values) if isinstance(a, str) else a for a in exc.args)
    message = getattr(exc, "message", None)
    if isinstance(message, str):
        with contextlib.suppress(AttributeError):  # a read-only property stays as it is
            exc.message = scrub(message, values)  # type: ignore[attr-defined]
    return exc


def redact(value: Any, *, for_approvers: bool = False) -> Any:
    """A copy of ``value`` with secrets replaced: see the module docstring. ``for_approvers`` applies what each
    sensitive field lets approvers see (only for what an approver is shown)."""
    if isinstance(value, dict):
        return {k: _redact_item(k, v, for_approvers) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v, for_approvers=for_approvers) for v in value]
    if isinstance(value, str):
        return _redact_text(value, for_approvers)
    return value


def _redact_item(key: Any, value: Any, for_approvers: bool) -> Any:
    if not isinstance(key, str):
        return redact(value, for_approvers=for_approvers)
    what = _declared.get(key)
    if what is not None:
        if for_approvers and what == LAST4 and value is not None and not isinstance(value, dict | list):
            return "••••" + str(value)[-4:]
        return REDACTED
    if SECRET_KEY.search(key):
        return REDACTED
    return redact(value, for_approvers=for_approvers)


def _redact_text(text: str, for_approvers: bool) -> str:
    text = SECRET_VALUE.sub(REDACTED, text)
    if text.lstrip()[:1] in ("{", "[") and '":' in text:
        # JSON inside a string (a tool result as the model got it): redact its keys too.
        try:
            parsed = json.loads(text)
        except ValueError:
            return text
        redacted = redact(parsed, for_approvers=for_approvers)
        if redacted != parsed:
            return json.dumps(redacted, ensure_ascii=False)
    return text
