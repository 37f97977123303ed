"""Input helpers: ``input=`` callables written as data.

``from_input``, ``from_state`` and ``from_context`` read a value (at a dotted path, or the whole source);
``slice`` keeps some keys of a mapping (optionally renamed); ``merge`` combines mappings left to right. Each is a
frozen dataclass callable as ``(input, state, context)``, so it goes wherever a callable would, and is checked when
it is built: a part that is neither a helper, a three-argument callable nor (for ``merge``) a dict is a
:class:`DefinitionError` at import time.

    conference_review = agent_step(ReviewConferenceFit,
                                   input=merge(from_state("policy"), from_state("conference_site")))
    policy = tool_step(LoadTravelPolicy, input=slice(from_input(), "employee_id", "conference_name"))
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pipeline.errors import DefinitionError

Source = Literal["input", "state", "context"]
_SOURCES = ("input", "state", "context")


@dataclass(frozen=True)
class From:
    """The value at ``path`` (keys, outermost first) of the run's input, state or context."""

    source: Source
    path: tuple[str, ...] = ()

    def __call__(self, input: Any, state: Any, context: Any) -> Any:
        value = {"input": input, "state": state, "context": context}[self.source]
        for depth, key in enumerate(self.path):
            if not isinstance(value, Mapping) or key not in value:
                where = ".".join((self.source, *self.path[: depth + 1]))
                raise KeyError(f"{where} (from_{self.source}({'.'.join(self.path)!r}))")
            value = value[key]
        return value


@dataclass(frozen=True)
class Slice:
    """Some keys of the mapping ``source`` returns; ``renamed`` maps a new key to the key it is read from."""

    source: Callable[..., Any]
    keys: tuple[str, ...]
    renamed: tuple[tuple[str, str], ...] = ()

    def __call__(self, input: Any, state: Any, context: Any) -> dict[str, Any]:
        value = self.source(input, state, context)
        if not isinstance(value, Mapping):
            raise TypeError(f"slice() needs a mapping, got {type(value).__name__}")
        out = {key: value[key] for key in self.keys}
        out.update({new: value[old] for new, old in self.renamed})
        return out


@dataclass(frozen=True)
class Merge:
    """The mappings of ``parts`` (callables or literal dicts) merged left to right (later keys win)."""

    parts: tuple[Any, ...]

    def __call__(self, input: Any, state: Any, context: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for part in self.parts:
            value = part(input, state, context) if callable(part) else part
            if not isinstance(value, Mapping):
                raise TypeError(f"merge() needs mappings, got {type(value).__name__}")
            out.update(value)
        return out


def _path(path: str | None, helper: str) -> tuple[str, ...]:
    if path is None:
        return ()
    if not isinstance(path, str) or not path or any(not part for part in path.split(".")):
        raise DefinitionError(f"{helper}() takes a dotted key path like 'policy.budget', got {path!r}")
    return tuple(path.split("."))


def from_input(path: str | None = None) -> From:
    """The run's input, or the value at ``path`` in it (``"order.id"``)."""
    return From("input", _path(path, "from_input"))


def from_state(path: str | None = None) -> From:
    """The run's state, or the value at ``path`` in it (``"policy"``: the result of step ``policy``)."""
    return From("state", _path(path, "from_state"))


def from_context(path: str | None = None) -> From:
    """The run's context, or the value at ``path`` in it (``"user.id"``)."""
    return From("context", _path(path, "from_context"))


def slice(source: Callable[..., Any] | Source, *keys: str, **renamed: str) -> Slice:  # noqa: A001
    """``{key: source[key] for key in keys}``, plus ``new=source["old"]`` for each ``new="old"``.

    ``source`` is a helper or callable ``(input, state, context)``, or ``"input"``, ``"state"`` or ``"context"``.
    """
    if isinstance(source, str):
        if source not in _SOURCES:
            raise DefinitionError(f"slice(): source must be one of {_SOURCES} or a callable, got {source!r}")
        source = From(source)
    check_callable(source, "slice(): the source")
    if not keys and not renamed:
        raise DefinitionError("slice() needs at least one key to keep")
    for key in (*keys, *renamed.values()):
        if not isinstance(key, str) or not key:
            raise DefinitionError(f"slice(): keys are non-empty strings, got {key!r}")
    return Slice(source=source, keys=tuple(keys), renamed=tuple(renamed.items()))


def merge(*parts: Callable[..., Any] | Mapping[str, Any]) -> Merge:
    """The mappings of ``parts`` merged left to right: helpers, callables ``(input, state, context)`` or dicts."""
    if len(parts) < 2:
        raise DefinitionError("merge() needs at least two parts")
    for index, part in enumerate(parts):
        if isinstance(part, Mapping):
            continue
        check_callable(part, f"merge(): part {index + 1}")
    return Merge(parts=tuple(dict(p) if isinstance(p, Mapping) else p for p in parts))


def check_callable(fn: Any, what: str) -> None:
    """``fn`` must be callable as ``(input, state, context)``."""
    if not callable(fn):
        raise DefinitionError(f"{what} must be a callable (input, state, context) or an input helper, got {fn!r}")
    try:
        inspect.signature(fn).bind(None, None, None)
    except TypeError:
        raise DefinitionError(f"{what} must accept three arguments (input, state, context), got {fn!r}") from None
    except ValueError:
        return
