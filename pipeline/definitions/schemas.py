"""Marshmallow schemas as Rubot uses them: declared as a dict of fields or a ``Schema`` class.

Loading validates and deserializes what goes *into* user code; :func:`to_json` turns what comes *out* into
plain JSON values for the database. JSON Schema (for model tool definitions and docs) comes from apispec's
marshmallow converter, never from a hand-written mapping.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any, Literal

import marshmallow
from marshmallow import Schema

from pipeline import redact
from pipeline.errors import DefinitionError, NotSerializable, ValidationError

SchemaSpec = Mapping[str, marshmallow.fields.Field] | type[Schema]


def make_schema(spec: Any, *, owner: str, attribute: str) -> type[Schema] | None:
    """Normalise a declared schema (``None``, a dict of fields or a Schema class) to a Schema class."""
    if spec is None:
        return None
    if isinstance(spec, type) and issubclass(spec, Schema):
        redact.register_schema(spec)
        return spec
    if isinstance(spec, Mapping):
        bad = [name for name, field in spec.items() if not isinstance(field, marshmallow.fields.Field)]
        if bad:
            raise DefinitionError(
                f"{owner}.{attribute}: values must be marshmallow fields; {', '.join(map(repr, bad))} are not"
            )
        schema = Schema.from_dict(dict(spec), name=f"{owner}{attribute.title().replace('_', '')}")
        redact.register_schema(schema)  # its sensitive fields are redacted wherever their values could show
        return schema
    raise DefinitionError(
        f"{owner}.{attribute} must be a dict of marshmallow fields or a marshmallow Schema class, "
        f"got {type(spec).__name__}"
    )


def load(
    schema: type[Schema] | None,
    data: Any,
    *,
    error: type[ValidationError],
    what: str,
    unknown: Literal["exclude", "include", "raise"] = "raise",
) -> Any:
    """Validate ``data`` against ``schema`` and return the deserialized value, or raise ``error``.

    ``unknown=marshmallow.EXCLUDE`` drops undeclared fields instead of rejecting them.
    """
    if schema is None:
        return data
    if not isinstance(data, Mapping):
        raise error(f"{what} must be an object, got {type(data).__name__}", details={"_schema": ["Not a dict."]})
    try:
        return schema(unknown=unknown).load(dict(data))
    except marshmallow.ValidationError as exc:
        raise error(
            f"{what} is invalid: {_summary(exc.normalized_messages())}", details=exc.normalized_messages()
        ) from None


def validate_output(schema: type[Schema] | None, data: Any, *, error: type[ValidationError], what: str) -> Any:
    """Validate a value produced by user code and return its JSON form (what is stored)."""
    if schema is None:
        return to_json(data, what=what)
    loaded = load(schema, data, error=error, what=what)
    return to_json(schema().dump(loaded), what=what)


def to_json(value: Any, *, what: str) -> Any:
    """Check that ``value`` survives a JSON round trip; the database stores nothing else."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise NotSerializable(f"{what} is not JSON-serializable: {exc}") from None


@functools.cache
def _converter() -> Any:
    from apispec import APISpec
    from apispec.ext.marshmallow import MarshmallowPlugin

    plugin = MarshmallowPlugin()
    APISpec(title="rubot", version="1", openapi_version="3.1.0", plugins=[plugin])
    return plugin.converter


def json_schema(schema: type[Schema] | None) -> dict[str, Any]:
    """JSON Schema for ``schema`` (an empty object schema when there is none)."""
    if schema is None:
        return {"type": "object", "properties": {}}
    return _converter().schema2jsonschema(schema)


def _summary(messages: Any) -> str:
    if isinstance(messages, Mapping):
        parts = []
        for field, errors in messages.items():
            text = errors[0] if isinstance(errors, list) and errors else _summary(errors)
            parts.append(f"{field}: {text}")
        return "; ".join(parts)
    if isinstance(messages, list):
        return "; ".join(str(m) for m in messages)
    return str(messages)
