"""Standby inference workers: loaded and warm, answering only once an active worker is gone.

LitServe's workers all read one request queue, so a second worker that simply runs beside the
first shares its CPU and its requests: the demo's known-user p50 went from 2.8 to 4.4 ms with two
workers on one inference core (experiments/log/serving.md). Here each worker, its bundle loaded,
takes one of ``slots`` exclusive file locks before it starts reading the queue; a standby keeps
trying. The kernel releases a dead worker's lock at once (``kill -9`` included), so the standby
serves within one poll while LitServe restarts the dead one, which becomes the next standby.
"""

from __future__ import annotations

import fcntl
import time
from pathlib import Path
from typing import IO


class ActiveSlots:
    def __init__(self, directory: str | Path, slots: int, poll_s: float = 0.02):
        if slots < 1:
            raise ValueError(f"active slots must be >= 1, got {slots}")
        self.directory, self.slots, self.poll_s = Path(directory), slots, poll_s
        self._held: IO | None = None

    def try_take(self) -> int | None:
        """Take a free slot (kept for the life of this process); None when all are held."""
        for slot in range(self.slots):
            handle = open(self.directory / f"slot-{slot}.lock", "a+")  # noqa: SIM115 (held open)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            self._held = handle
            return slot
        return None

    def wait_for_one(self) -> int:
        """Block until a slot is free and take it."""
        while (slot := self.try_take()) is None:
            time.sleep(self.poll_s)
        return slot

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_held": None}  # a lock belongs to the process that took it
