"""Waking an operation's run when one of its child runs comes to rest.

The move itself (``waiting_for_child`` → ``running``) is a transition, written in the child's transaction by
:mod:`pipeline.engine.transitions`. This internal hook only sends the parent's routing step again once that
transaction has committed, like :class:`pipeline.engine.admission.AdmissionHooks` admits a queued run when a slot
frees. If the process dies between the commit and the send, the parent is ``running`` with nothing claimed and the
sweeper's stall check dispatches it (:mod:`pipeline.engine.recovery`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from pipeline.engine import dispatch
from pipeline.engine.hooks import Hooks, RunInfo
from pipeline.store.tables import WAITING_FOR_CHILD

if TYPE_CHECKING:
    from pipeline.runtime import Runtime

log = logging.getLogger("rubot.children")


class ChildHooks(Hooks):
    """Dispatch a parent run whose child came to rest (it was moved back to ``running`` by that transition)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def run_resumed(self, info: RunInfo) -> None:
        if info.previous == WAITING_FOR_CHILD:
            dispatch.resume(self.runtime, info.run_id)
