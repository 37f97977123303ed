"""Name → class registries for tools, agents and workflows.

Runs are stored with the workflow's *name*, so a worker finds the class again from that name. The last class
defined under a name wins (a script may re-declare a bundled workflow, and the worker that imports the bundled
module resolves the same name); a different class taking over a name is logged.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pipeline.errors import DefinitionError, UnknownWorkflowError

if TYPE_CHECKING:
    from pipeline.definitions.operation import Operation
    from pipeline.definitions.workflow import Workflow

log = logging.getLogger("rubot.registry")

T = TypeVar("T", bound=type)


def _origin(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._by_name: dict[str, T] = {}

    def add(self, name: str, cls: T) -> None:
        current = self._by_name.get(name)
        if current is not None and _origin(current) != _origin(cls):
            log.info("%s %r now refers to %s (was %s)", self.kind, name, _origin(cls), _origin(current))
        self._by_name[name] = cls

    def get(self, name: str) -> T | None:
        return self._by_name.get(name)

    def names(self) -> list[str]:
        return sorted(self._by_name)


tools: Registry[type] = Registry("tool")
agents: Registry[type] = Registry("agent")
workflows: Registry[type] = Registry("workflow")
operations: Registry[type[Operation]] = Registry("operation")


def import_modules(modules: list[str] | tuple[str, ...]) -> None:
    """Import the modules that define workflows (``RUBOT_WORKFLOW_MODULES``) so they register."""
    for module in modules:
        try:
            importlib.import_module(module)
        except DefinitionError as exc:
            raise DefinitionError(f"cannot import workflow module {module!r}: {exc.message}") from exc
        except Exception as exc:  # a module may fail any way (a syntax error, a NameError): say which and why
            what = "" if isinstance(exc, ImportError) else f"{type(exc).__name__}: "
            raise DefinitionError(f"cannot import workflow module {module!r}: {what}{_one_line(exc)}") from exc


_imported: set[tuple[str, ...]] = set()


def ensure_imported(modules: tuple[str, ...]) -> None:
    """Import ``modules`` once per process for a reader (the web pages): their schemas say which fields are
    sensitive, and what is shown must be redacted by them. A module that fails is logged, not raised: the pages
    still serve, with the built-in redaction only."""
    if modules in _imported:
        return
    _imported.add(modules)
    try:
        import_modules(modules)
    except DefinitionError as exc:
        log.error("%s", exc.message)


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.msg} ({exc.filename}, line {exc.lineno})"
    return next(iter(str(exc).strip().splitlines()), "") or type(exc).__name__


def workflow(name: str, *, modules: tuple[str, ...] = ()) -> type:
    """The workflow class registered as ``name``, importing ``modules`` first if it is not known yet."""
    cls = workflows.get(name)
    if cls is None and modules:
        import_modules(modules)
        cls = workflows.get(name)
    if cls is None:
        known = ", ".join(workflows.names()) or "none"
        raise UnknownWorkflowError(f"no workflow named {name!r} is registered (known: {known})")
    return cls


def workflow_of(runtime: Any, name: str) -> type[Workflow]:
    """The workflow class of a stored run, importing the deployment's ``workflow_modules`` when needed."""
    return workflow(name, modules=runtime.settings.workflow_modules)
