"""How many forward passes may run at once: each model's own limit, and the worker's budget shared by all models.

A worker has SMLS_INFERENCE_STREAMS streams (each a share of the cores). With several
models, every pass of every model holds one slot of the worker's Budget, so two busy
models never run more passes at once than the cores were shared out for.

The budget hands a free slot to the waiting model that has used the least inference
time lately (seconds of forward passes, halved every HALF_LIFE seconds): fair by time,
not by turns. A model whose passes take six times longer (all-mpnet-base-v2 beside
all-MiniLM-L6-v2) would otherwise get six times the cores by taking turns, and starve
the small model's short requests.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from smls.errors import Overloaded

HALF_LIFE = 1.0  # seconds: the window over which the budget is fair


class Budget:
    """At most n forward passes at once over all of a worker's models, handed out fairly by recent inference time."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._cond = threading.Condition()
        self._free = n
        self._usage: dict[str, tuple[float, float]] = {}  # model -> (decayed seconds used, as of when)
        self._waiting: dict[str, int] = {}

    def used(self, model: str, now: float | None = None) -> float:
        """The model's recent inference seconds (decayed with HALF_LIFE)."""
        now = time.monotonic() if now is None else now
        seconds, since = self._usage.get(model, (0.0, now))
        return seconds * 0.5 ** ((now - since) / HALF_LIFE)

    def acquire(self, model: str, timeout: float | None = None) -> bool:
        """Wait for a slot (at most `timeout` seconds: then False); when several models wait, the least used goes first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._waiting[model] = self._waiting.get(model, 0) + 1
            try:
                while not (self._free > 0 and self._next() == model):
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self._cond.wait(remaining)
                self._free -= 1
            finally:
                self._waiting[model] -= 1
                if not self._waiting[model]:
                    del self._waiting[model]
                if self._free > 0 and self._waiting:
                    self._cond.notify_all()  # a slot is free: let the next model in
            return True

    def release(self, model: str, seconds: float) -> None:
        """Give the slot back, counting the pass's seconds against the model."""
        with self._cond:
            now = time.monotonic()
            self._usage[model] = (self.used(model, now) + seconds, now)
            self._free += 1
            self._cond.notify_all()

    def _next(self) -> str:
        now = time.monotonic()
        return min(self._waiting, key=lambda m: (self.used(m, now), m))


class Slots:
    """A model's own limit on concurrent forward passes, and the worker-wide budget it shares with other models.

    The model's own slot is taken first and the budget's second, by every model: a
    thread holding a budget slot never waits for anything else, so no two can deadlock.
    The own slots are tokens in a queue.SimpleQueue, a counting semaphore written in C:
    threading.Semaphore is Python over a Condition, and right after a forward pass, its
    caches cold, its release alone took 35 µs (docs/benchmarks.org, "Around the pass").
    """

    def __init__(self, n: int, budget: Budget | None = None, model: str = "") -> None:
        self._own: queue.SimpleQueue[None] = queue.SimpleQueue()
        for _ in range(n):
            self._own.put(None)
        self._budget = budget
        self._model = model

    def acquire(self, timeout: float | None = None) -> float:
        """Take one of the model's own slots and one of the budget's for a pass (Overloaded after `timeout` seconds); give back what this returns to release."""
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            self._own.get(timeout=timeout)
        except queue.Empty:
            raise Overloaded(f"no free inference stream within {timeout:g} s (SMLS_REQUEST_TIMEOUT); retry shortly") from None
        if self._budget is None:
            return 0.0
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not self._budget.acquire(self._model, remaining):
            self._own.put(None)
            raise Overloaded(f"no free inference stream within {timeout:g} s (SMLS_REQUEST_TIMEOUT); retry shortly")
        return time.monotonic()

    def release(self, started: float) -> None:
        """Give back the slots acquire took (`started`: what it returned, for the budget's count of inference time)."""
        if self._budget is not None:
            self._budget.release(self._model, time.monotonic() - started)
        self._own.put(None)

    @contextmanager
    def hold(self, timeout: float | None = None) -> Iterator[None]:
        """Hold the slots of one pass for the block (acquire, then release)."""
        started = self.acquire(timeout)
        try:
            yield
        finally:
            self.release(started)
