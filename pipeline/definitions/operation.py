"""``Operation``: a named business process that composes workflow runs (e.g. review, then approve)."""

from __future__ import annotations

from typing import Any

from pipeline.definitions import registry
from pipeline.errors import DefinitionError


class Operation:
    """Subclass and implement ``launch(cls, input, subject=None, context=None)`` returning a ``Run``.

    An operation is plain orchestration code in the caller's process: it may start runs with
    ``pipeline.run`` (waiting) or ``pipeline.enqueue`` and choose what happens next from their outputs.
    """

    name: str = "Operation"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = cls.__name__
        launch = cls.__dict__.get("launch")
        if launch is None and cls.launch is Operation.launch:
            raise DefinitionError(f"{cls.__name__} must define launch(cls, input, subject=None, context=None)")
        if launch is not None and not isinstance(launch, classmethod):
            raise DefinitionError(f"{cls.__name__}.launch must be a @classmethod")
        registry.operations.add(cls.name, cls)

    @classmethod
    def launch(cls, input: Any, subject: Any = None, context: Any = None) -> Any:
        raise NotImplementedError
