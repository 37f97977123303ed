"""Where ``pipeline.run`` / ``enqueue`` / ``wait`` go while an Operation's routing runs in a worker.

An Operation's routing is ordinary code (``review = pipeline.run(ReviewWorkflow, ...)``, then ``if review.status
...``). The engine executes it in a worker as the one step of the operation's run, with a :class:`Router` set
here for the duration. Inside it, the three public calls become durable child launches and waits
(:mod:`pipeline.operations`): outside it (``current()`` is ``None``) they are what they always were.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pipeline.runs import Run


class Router(Protocol):
    """What an executing routing does with the public calls (see :mod:`pipeline.operations`)."""

    def enqueue(self, workflow: Any, input: Any, *, subject: Any, context: Any) -> Run: ...

    def wait(self, run: Run | str) -> Run: ...


_current: ContextVar[Router | None] = ContextVar("rubot_router", default=None)


def current() -> Router | None:
    """The router of the routing executing in this context, or ``None`` (the calls are not inside a routing)."""
    return _current.get()


@contextmanager
def routing(router: Router) -> Iterator[Router]:
    token = _current.set(router)
    try:
        yield router
    finally:
        _current.reset(token)
