"""Connections shared fairly between the workers: each says how many it holds, and one ahead of another pauses accepting.

Every worker wakes for a new connection and the first to accept it wins, so a burst of
kept-alive connections often went to one worker: at c=32, all 32 on one worker in half of
the runs, which then answered 177-209 one-sentence requests/s (onnx-int8) against 226-234
with the connections split (one GIL doing all the Python). Each worker writes how many
connections it holds into memory shared with the others (SharedCounts); one that holds
more than the worker with fewest stops accepting for a moment that grows with the
difference, which hands the next connection to that worker.
"""

from __future__ import annotations

import multiprocessing
import time
from typing import Any

from gunicorn.workers import gthread

_ACCEPT_PAUSE_STEP = 0.001  # seconds a worker pauses accepting per connection it holds beyond the worker with fewest
_ACCEPT_PAUSE_MAX = 0.02


class SharedCounts:
    """Connections held by each live worker of this server, in memory the master shares with the workers it forks.

    A worker's slot is its gunicorn age (a number the master gives each new worker) modulo
    the slots; the master frees it when the worker exits (gunicorn.conf.py, child_exit).
    A count is written on every turn of the worker's loop, so it lags by a turn at most.
    """

    slots = 256

    def __init__(self) -> None:
        self._held = multiprocessing.RawArray("l", [-1] * self.slots)  # -1: no worker

    def hold(self, slot: int, connections: int) -> None:
        """The worker in `slot` holds this many connections now."""
        self._held[slot] = connections

    def release(self, age: int) -> None:
        """The worker of this age is gone."""
        self._held[age % self.slots] = -1

    def fewest(self, slot: int) -> int:
        """The fewest connections any other worker holds (a large number if there is no other)."""
        others = [held for i, held in enumerate(self._held) if held >= 0 and i != slot]
        return min(others, default=1 << 30)


# Made at import, in the gunicorn master (gunicorn.conf.py imports this module), before any fork.
CONNECTIONS = SharedCounts()


class Balancing(gthread.ThreadWorker):
    """gthread, pausing its accepts while it holds more connections than another worker."""

    alive: bool  # (set by gunicorn's Worker)
    inline: bool  # the event loop answers requests (smls.worker.loop): then every waiting connection is taken

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._resume_accepting = 0.0  # monotonic time before which this worker accepts no connection

    def init_process(self) -> None:
        """Take this worker's slot in the shared counts, then go on as gthread does."""
        self._slot = self.age % CONNECTIONS.slots
        CONNECTIONS.hold(self._slot, 0)
        super().init_process()

    def accept(self, listener: Any) -> None:
        """Accept as gthread does; pause accepting while this worker holds more than another.

        When the loop answers requests itself, it takes every connection waiting (until a
        pause): the loop is busy between turns, and connections left in the listen backlog
        would wait there unseen, neither answered nor refused.
        """
        while True:
            held = self.nr_conns
            super().accept(listener)
            CONNECTIONS.hold(self._slot, self.nr_conns)
            ahead = self.nr_conns - CONNECTIONS.fewest(self._slot)
            if ahead > 1:
                self._resume_accepting = time.monotonic() + min(ahead * _ACCEPT_PAUSE_STEP, _ACCEPT_PAUSE_MAX)
                self.set_accept_enabled(False)
            if not self.inline or self.nr_conns == held or not self._accepting or self.nr_conns >= self.worker_connections:
                return

    def set_accept_enabled(self, enabled: bool) -> None:
        """As gthread does, except that accepting stays off until a pause set by accept() is over."""
        if enabled and time.monotonic() < self._resume_accepting:
            return
        super().set_accept_enabled(enabled)

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        """Say how many connections this worker holds, and wake in time to accept again when a pause is over; then the turn."""
        pause = self._resume_accepting - time.monotonic()
        if pause > 0 and self.alive:
            timeout = min(timeout, pause)
        CONNECTIONS.hold(self._slot, self.nr_conns)
        super().wait_for_and_dispatch_events(timeout)
