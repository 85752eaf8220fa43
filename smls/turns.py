"""The requests a worker's event loop answers itself, each in a greenlet, parked while they wait for shared passes.

Answering a small model request on the event loop saves its hand-offs between threads
(smls.worker), but one request at a time would run one pass per request: on 2 cores,
one-sentence passes reach only 0.89 of the sentences/s that passes shared by several
requests do, in process, with no HTTP at all (docs/benchmarks.org). So each request
runs in a greenlet of the loop's thread: when it asks its model for vectors
(MicroBatcher.encode) it parks, and the loop goes on with the next request. After each
turn of the loop (its events dispatched, the new requests started), the loop runs one
shared pass of what is parked, first come first served, at most SMLS_MAX_BATCH
sentences (MicroBatcher.run_now), and resumes those requests, which answer. A turn
never holds the loop for more than one such pass: new connections, /health and the
threads' callbacks wait for at most that.

A model whose passes are not shared (a cross-encoder scores one request's pairs) parks
too, through own_pass: its pass runs between turns like the others, alone, so a flood
of such requests still holds the loop for one pass at a time.

A turn that starts one request while nothing is parked runs it without a greenlet
(start_alone): its pass would be a pass of its own anyway, so it runs where the request
asks for it, at once. That saves the greenlet's creation and three switches, each of
which copies a slice of the C stack: about 0.1 ms of a one-sentence request at c=1
(docs/benchmarks.org, "One request alone in its turn").

Greenlets switch only where a request parks (MicroBatcher.encode, own_pass), and no
lock is held there; the requests share the loop's thread, so nothing on the way may
keep per-request state in a threading.local across that point (Flask's request
context is a context variable, and every greenlet has its own).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

import greenlet

from smls.errors import Overloaded

T = TypeVar("T")


class Job(Protocol):
    """A parked request's texts; the batcher fills in its result or error."""

    texts: list[str]


class Runner(Protocol):
    """What the loop needs of a model's batcher: run parked jobs as one shared pass, now, in this thread."""

    max_batch: int

    def run_now(self, jobs: list[Any]) -> None:
        """Run the jobs (each gets its result or error)."""
        ...


class _Request(greenlet.greenlet):
    """One request answered on the loop."""

    def __init__(self, run: Callable[[], None], requests: LoopRequests) -> None:
        super().__init__(run)
        self.requests = requests


class LoopRequests:
    """The requests one worker's event loop answers itself: started as they come, run in shared passes, resumed."""

    def __init__(self) -> None:
        self._loop: greenlet.greenlet | None = None  # the loop's own greenlet, where a parked request goes back to
        self._parked: deque[tuple[Runner, Any, greenlet.greenlet]] = deque()

    @property
    def waiting(self) -> int:
        """Requests parked, waiting for their pass."""
        return len(self._parked)

    @property
    def alone(self) -> bool:
        """Whether the calling code runs in a request start_alone runs: what it parks runs at once, waiting for nothing."""
        return _alone.loop is self

    def start(self, answer: Callable[[], None]) -> None:
        """Run `answer` (a request) up to where it needs its model, or to its end (called by the loop)."""
        self._loop = greenlet.getcurrent()
        _Request(answer, self).switch()

    def start_alone(self, answer: Callable[[], None]) -> None:
        """Run `answer` (a turn's only request, with nothing parked) to its end here, its passes run as it asks for them.

        The same passes as start and run_next would run: with nothing else parked, run_next
        would take this request's job alone.
        """
        assert not self._parked, "a request alone in its turn: nothing may be parked"
        _alone.loop = self
        try:
            answer()
        finally:
            _alone.loop = None

    def park(self, runner: Runner, job: Job) -> None:
        """In a request run by start: wait, off the loop, until `runner` has run `job` (run_next); run by start_alone: run it now."""
        if self.alone:
            runner.run_now([job])
            return
        assert self._loop is not None
        self._parked.append((runner, job, greenlet.getcurrent()))
        self._loop.switch()

    def run_next(self) -> None:
        """Run one pass of the first parked jobs of the first model waiting (at most its max_batch sentences, or one job), and resume their requests."""
        if not self._parked:
            return
        runner = self._parked[0][0]
        taken: list[tuple[Runner, Any, greenlet.greenlet]] = []
        kept: deque[tuple[Runner, Any, greenlet.greenlet]] = deque()
        sentences, full = 0, False
        for entry in self._parked:
            if entry[0] is runner and not full:
                full = bool(taken) and sentences + len(entry[1].texts) > runner.max_batch
                if not full:  # (in order: a job that does not fit stays first for the next pass)
                    taken.append(entry)
                    sentences += len(entry[1].texts)
                    continue
            kept.append(entry)
        self._parked = kept
        runner.run_now([job for _, job, _ in taken])
        for _, _, request in taken:
            request.switch()  # it answers, or parks again (a request may ask twice)


class _Alone(threading.local):
    loop: LoopRequests | None = None  # the loop whose lone request this thread runs (start_alone)


_alone = _Alone()


def loop_requests() -> LoopRequests | None:
    """The loop whose request this code runs in, or None (a request thread, a batcher thread, a script)."""
    here = greenlet.getcurrent()
    return here.requests if isinstance(here, _Request) else _alone.loop


class _Call(Generic[T]):
    """Work parked by own_pass: one pass of its own, given the time left of its request; its value or its error."""

    texts = [""]  # counts as one against _OwnPasses.max_batch: a pass each
    value: T  # set by run, unless error is

    def __init__(self, work: Callable[[float], T], timeout: float, on_shed: Callable[[], Any]) -> None:
        self.work = work
        self.timeout = timeout
        self.on_shed = on_shed
        self.deadline = time.monotonic() + timeout
        self.error: BaseException | None = None

    def run(self) -> None:
        left = self.deadline - time.monotonic()
        try:
            if left <= 0:  # as a request that waited out its deadline in a model's queue
                self.on_shed()
                raise Overloaded.no_result_within(self.timeout)
            self.value = self.work(left)
        except BaseException as exc:  # raised in the request, once it resumes
            self.error = exc


class _OwnPasses:
    """The runner of own_pass's work: one call per pass."""

    max_batch = 1

    def run_now(self, jobs: list[Any]) -> None:
        """Run the calls (run_next hands over one)."""
        for job in jobs:
            job.run()


_OWN_PASSES = _OwnPasses()


def own_pass(work: Callable[[float], T], timeout: float, on_shed: Callable[[], Any] = lambda: None) -> T:
    """work(seconds left), a forward pass no other request shares: now, or, in a request answered on the loop, once its turn comes.

    On the loop `work` runs outside the request's context: it must take what it needs of
    the request before. Overloaded (and `on_shed` called) if the turn comes after `timeout` seconds.
    """
    loop = loop_requests()
    if loop is None:
        return work(timeout)
    call = _Call(work, timeout, on_shed)
    loop.park(_OWN_PASSES, call)
    if call.error is not None:
        raise call.error
    return call.value
