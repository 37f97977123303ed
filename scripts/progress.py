"""Live progress: print what runs do while the caller blocks on them (``pipeline.run`` / ``pipeline.wait``).

The waiting call runs in a thread; the caller's thread polls SQL for new events of the runs it follows (all
runs carrying one ``subject``, which is how runs started inside an ``Operation`` are found) and prints one
line per meaningful event. SQL is the only channel: nothing here listens to Celery.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pipeline
from pipeline.errors import WaitTimeout
from pipeline.runs import Event, Run
from rubot_app.scripts import output

Echo = Callable[[str], None]
Summarize = Callable[[str, Any], str]
POLL_SECONDS = 0.1
RESTING_EVENTS = frozenset({"run.completed", "run.failed", "run.cancelled", "run.waiting_for_approval"})


def generic_summary(_step: str, result: Any) -> str:
    return output.compact(result)


class Follower:
    """Prints the progress of every run carrying ``subject``, one line per meaningful new event.

    ``summarize(step, result)`` turns a completed step's state entry into the text after the step name.
    """

    def __init__(self, subject: Any, echo: Echo, *, summarize: Summarize = generic_summary, scan: int = 50) -> None:
        self.subject = subject
        self.echo = echo
        self.summarize = summarize
        self.scan = scan
        self.run_ids: list[str] = []
        self._last_event: dict[str, int] = {}

    def poll(self) -> None:
        """Print the new events of followed runs (looking at the ``scan`` newest runs for new ones)."""
        for run in reversed(pipeline.list_runs(limit=self.scan)):  # oldest first
            if run.subject != self.subject:
                continue
            if run.id not in self._last_event:
                self.run_ids.append(run.id)
                self._last_event[run.id] = 0
            new = [event for event in run.events if event.id > self._last_event[run.id]]
            if not new:
                continue
            # The events were read after the run row, so they may announce steps its state does not hold
            # yet; a state read after them holds every step they announce.
            run = pipeline.get_run(run.id)
            self._last_event[run.id] = new[-1].id
            for event in new:
                line = self.describe(run, event)
                if line:
                    self.echo(line)

    def describe(self, run: Run, event: Event) -> str | None:
        """The progress line for ``event``, or ``None`` for plumbing (dispatches, step starts)."""
        step = f"    {event.step or '':<18} "
        data = event.data
        if event.type == "run.enqueued":
            return f"  {run.workflow} {run.id}"
        if event.type == "step.completed":
            keys = data.get("keys") or [event.step]
            return step + "; ".join(self.summarize(event.step or "", run.state.get(key)) for key in keys)
        if event.type == "model.turn":
            return step + (
                f"model turn ({data.get('provider')} model {data.get('model')}, stop: {data.get('stop_reason')})"
            )
        if event.type == "step.failed":
            return step + f"FAILED: {data.get('message', data.get('reason'))}"
        if event.type == "approval.requested":
            return step + f"approval requested from {data.get('role')}: {data.get('reason')}"
        if event.type.startswith("approval."):
            return step + f"{event.type.split('.', 1)[1].replace('_', ' ')} by {data.get('decided_by')}"
        if event.type in RESTING_EVENTS:
            return f"    -> {event.type.split('.', 1)[1]}"
        return None

    def runs(self) -> list[Run]:
        """Fresh snapshots of every run seen so far, in the order they started."""
        return [pipeline.get_run(run_id) for run_id in self.run_ids]


class RunFollower(Follower):
    """Prints the progress of one run, from the event after ``after`` (``rubot approve --wait``)."""

    def __init__(self, run_id: str, echo: Echo, *, after: int = 0, summarize: Summarize = generic_summary) -> None:
        super().__init__(None, echo, summarize=summarize)
        self.run_ids = [run_id]
        self._last_event = {run_id: after}

    def poll(self) -> None:
        (run_id,) = self.run_ids
        run = pipeline.get_run(run_id)
        new = [event for event in run.events if event.id > self._last_event[run_id]]
        if new:
            self._last_event[run_id] = new[-1].id
            for event in new:
                line = self.describe(run, event)
                if line:
                    self.echo(line)


def follow(action: Callable[[], Run], follower: Follower, *, timeout: float) -> Run:
    """Call ``action`` (which waits on runs) in a thread while ``follower`` prints; bounded by ``timeout``.

    Raises what ``action`` raised, or ``WaitTimeout`` if it is still waiting after ``timeout`` seconds (the
    thread is a daemon, so a stuck wait cannot keep the process alive).
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["run"] = action()
        except BaseException as exc:  # handed back to the caller below
            box["error"] = exc

    thread = threading.Thread(target=target, name="rubot-follow", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while thread.is_alive():
        follower.poll()
        thread.join(POLL_SECONDS)
        if thread.is_alive() and time.monotonic() > deadline:
            raise WaitTimeout(f"the runs did not come to rest within {timeout:g}s (is a worker running?)")
    follower.poll()
    if "error" in box:
        raise box["error"]
    return box["run"]
