"""kombu's filesystem transport with atomic hand-over, for the embedded (serverless) broker.

The stock transport creates a message file and then writes into it, and a consumer moves files out of the
queue folder without taking the writer's lock, so a consumer can pick up a file that is still empty and die
on the JSON decode (seen in our test runs). It also moves claimed files to the system temp folder, which is a
copy rather than a rename when that is another filesystem, so two worker processes could both take one message.

Here a message is written under a temporary name and renamed into the queue folder when complete, and a
consumer claims a message by renaming it into a ``claimed`` folder next to the queue: both renames are atomic
on one filesystem, so every message is read complete and by exactly one consumer.

A consumer with nothing to read does not sleep out a whole polling interval: a producer in the same process
(the in-process worker of ``rubot demo`` and the tests sends its next step from a worker thread) wakes it the
moment a message lands. Messages from other processes are still picked up within the polling interval.
"""

from __future__ import annotations

import os
import threading
import uuid
from functools import partial
from pathlib import Path
from queue import Empty
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads


class Channel(filesystem.Channel):
    # kombu's own classes disagree on these two signatures (the filesystem channel renames ``message``, the
    # virtual transport adds ``timeout``), so whichever we match, mypy sees a conflict with the other.
    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        folder = Path(self.data_folder_out)
        staging = folder / f".{name}.partial"
        try:
            with open(staging, "wb") as handle:
                handle.write(str_to_bytes(dumps(payload)))
            os.replace(staging, folder / name)
        except OSError as exc:
            raise ChannelError(f"cannot add message {name!r} to {folder}") from exc
        global _puts
        with _arrived:
            _puts += 1
            _arrived.notify_all()

    def _get(self, queue: str, timeout: Any = None) -> Any:
        folder = Path(self.data_folder_in)
        claimed = folder.parent / f"{folder.name}-claimed"
        claimed.mkdir(exist_ok=True)
        suffix = f".{queue}.msg"
        for name in sorted(os.listdir(folder)):
            if name.startswith(".") or name.partition(".")[2] != suffix[1:]:
                continue
            target = claimed / name
            try:
                os.rename(folder / name, target)  # atomic: exactly one consumer wins
            except OSError:
                continue  # another consumer took it
            try:
                payload = target.read_bytes()
                target.unlink()
            except OSError as exc:
                raise ChannelError(f"cannot read message {name!r}") from exc
            return loads(bytes_to_str(payload))
        raise Empty()


# Set when a message is put by this process; consumers here wait on it instead of sleeping blindly.
_arrived = threading.Condition()
_puts = 0  # counts local puts, so a put between a failed look and the wait is never slept through


def _put_since(seen: int) -> bool:
    return _puts != seen


class Transport(filesystem.Transport):
    Channel = Channel

    def drain_events(self, connection: Any, timeout: float | None = None) -> None:  # type: ignore[override]
        """Deliver one message; with none waiting, wait for a local put (or the polling interval) and look again."""
        cycle = self.cycle
        assert cycle is not None, "kombu sets the cycle when the transport is created"
        started = monotonic()
        while True:
            seen = _puts
            try:
                cycle.get(self._deliver, timeout=timeout)
                return
            except Empty:
                if timeout is not None and monotonic() - started >= timeout:
                    raise TimeoutError() from None
                pause = self.polling_interval or 0.05
                if timeout is not None:
                    pause = min(pause, max(0.0, timeout - (monotonic() - started)))
                with _arrived:
                    _arrived.wait_for(partial(_put_since, seen), pause)
