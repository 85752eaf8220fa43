"""One scheduler per model and worker: short requests batched together, bulk work in pieces beside them.

Two lanes feed the model's inference streams (one batcher thread per stream):

- **Requests** (`encode`): request threads put jobs on a bounded queue and wait; a
  batcher thread takes whatever is queued (up to max_batch sentences, waiting at most
  max_wait for more), runs one forward pass for all of it, and hands each job its slice,
  in order. A full queue is refused at once (503 + Retry-After) instead of letting
  latency grow; a job whose requester stopped waiting is skipped, so it costs no inference.
- **Bulk** (`submit_bulk`): a document chunk is sorted by length and cut into pieces of
  the encoder's batch size, and every stream takes pieces, so one document uses all the
  worker's streams (the whole machine on one worker) instead of one.

When both lanes have work, the streams alternate between them pass by pass: a long
document cannot starve short requests (one waits at most for the pass in progress), and
a flood of short requests cannot stall a document (it keeps every other pass). A piece
is batch-size sentences of similar length (one pass, or a few short ones where the
encoder caps a pass's tokens), about as long as a batch of requests.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from smls.encoders import Encoded, batches_by_length
from smls.errors import Overloaded
from smls.turns import loop_requests

log = logging.getLogger("smls")


class BatchEncoder(Protocol):
    """What the batcher needs of a model: tokenising in the caller's thread, and forward passes."""

    def prepare(self, texts: Sequence[str]) -> list[Any] | None:
        """Work that may run in the caller's thread (tokenising); None if none."""
        ...

    def encode(self, texts: Sequence[str], *, normalize: bool = False, prepared: list[Any] | None = None) -> Encoded:
        """Vectors for texts, in order."""
        ...


E = TypeVar("E", bound=BatchEncoder)


@dataclass(eq=False)
class _Job:
    texts: list[str]
    prepared: list[Any] | None = None
    done: threading.Event | None = None  # what a request thread waits on (a request on the event loop needs none)
    result: Encoded | None = None
    error: BaseException | None = None
    abandoned: bool = False
    deadline: float = float("inf")  # answered in an event-loop turn: by when its pass must start
    timeout: float = 0.0
    parked: bool = False  # counted in the queue depth while parked on the event loop (run_now counts it out)


class BulkJob:
    """Many texts encoded piece by piece in the bulk lane; `wait()` gives them all, in input order."""

    def __init__(self, texts: list[str], prepared: list[Any] | None, piece_size: int) -> None:
        self.texts = texts
        self.prepared = prepared
        # Sorted as SentenceEncoder.encode sorts, so a piece holds similar lengths; the encoder
        # may still run a piece as several passes (its token budget).
        self.pieces = batches_by_length([len(t) for t in texts], piece_size)
        self._parts: list[tuple[list[int], Encoded]] = []
        self._left = len(self.pieces)
        self._running = 0
        self._lock = threading.Condition()
        self._done = threading.Event()
        self.error: BaseException | None = None
        self.cancelled = False
        if not self.pieces:
            self._done.set()

    def cancel(self) -> None:
        """Nobody will wait for this job: pieces not yet started are skipped; returns once none is running."""
        with self._lock:
            self.cancelled = True
            while self._running:
                self._lock.wait()

    def _start_piece(self) -> bool:
        """Whether a piece may run (the job is not cancelled); counted as running until _piece_done."""
        with self._lock:
            if self.cancelled:
                return False
            self._running += 1
            return True

    def wait(self, timeout: float | None = None) -> Encoded:
        """Block until every piece is done; the result in input order (Overloaded after `timeout` seconds)."""
        if not self._done.wait(timeout):
            self.cancel()
            raise Overloaded(f"a document chunk was not computed within {timeout:g} s; retry shortly")
        if self.error is not None:
            raise self.error
        n = len(self.texts)
        dim = self._parts[0][1].vectors.shape[1] if self._parts else 0
        vectors = np.empty((n, dim), dtype=np.float32)
        flags = np.zeros(n, dtype=bool)
        tokens = np.zeros(n, dtype=np.int64)
        for idx, part in self._parts:
            vectors[idx], flags[idx], tokens[idx] = part.vectors, part.truncated_flags, part.token_counts
        return Encoded(vectors, flags, tokens)

    def _piece_done(self, idx: list[int], result: Encoded | None, error: BaseException | None) -> None:
        with self._lock:
            if result is not None:
                self._parts.append((idx, result))
            if error is not None and self.error is None:
                self.error, self.cancelled = error, True  # the other pieces need not run
            self._left -= 1
            self._running -= 1
            self._lock.notify_all()
            if self._left == 0 or error is not None:
                self._done.set()


@dataclass(eq=False)
class _Piece:
    job: BulkJob
    index: list[int]


class MicroBatcher(Generic[E]):
    """Gathers concurrent encode calls into shared forward passes, and runs bulk jobs beside them; one thread per stream."""

    def __init__(
        self,
        encoder: E,
        *,
        max_batch: int = 16,
        max_wait: float = 0.0,
        queue_size: int = 64,
        streams: int = 1,
        piece_size: int = 8,
        direct: bool = True,
        on_depth: Callable[[int], Any] | None = None,
        on_batch: Callable[[int], Any] | None = None,
        on_shed: Callable[[], Any] | None = None,
    ) -> None:
        self.encoder = encoder
        self.streams = streams
        self.piece_size = piece_size
        # Whether a request may run its own pass when a stream is idle. Not with a budget
        # shared by several models: there the pass may have to wait for another model's,
        # and only a queued job can give up at its deadline.
        self.direct = direct
        # Hooks for metrics: the queue grew or shrank by n; a pass of n sentences ran.
        self._on_depth = on_depth or (lambda n: None)
        self._on_batch = on_batch or (lambda n: None)
        self._on_shed = on_shed or (lambda: None)  # a turn's job past its deadline got a 503 before its pass
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.queue_size = queue_size
        self._jobs: deque[_Job] = deque()
        self._pieces: deque[_Piece] = deque()
        self._cond = threading.Condition()
        self._bulk_turn = False  # with both lanes busy, whose pass is next
        self._busy = 0  # passes running or about to: batcher threads and requests that run their own
        self._threads: list[threading.Thread] = []
        self._pid = 0
        self._start_lock = threading.Lock()
        self._take_lock = threading.Lock()  # one thread at a time assembles a batch
        self._stats_lock = threading.Lock()
        # For tests and metrics: how many forward passes ran, their sizes, and the bulk pieces.
        self.batches = 0
        self.largest_batch = 0
        self.pieces_run = 0

    @property
    def depth(self) -> int:
        """Requests waiting in the queue (bulk pieces not counted)."""
        return len(self._jobs)

    def encode(self, texts: list[str], *, normalize: bool = False, timeout: float = 30.0) -> Encoded:
        """Encode texts as part of a shared batch; Overloaded if the queue is full or timeout passes."""
        self._ensure_threads()
        # Tokenising here, in the request's thread, keeps the model's thread on the model.
        job = _Job(list(texts), self.encoder.prepare(texts))
        loop = loop_requests()
        if loop is not None:
            # Answered on the worker's event loop: the loop runs this job in a pass shared
            # with other parked requests' jobs (run_now) before it resumes this one.
            job.deadline, job.timeout = time.monotonic() + timeout, timeout
            # Waiting for a model, as a queued job is, unless it is alone in its turn: then
            # park runs its pass at once, and the gauge's two writes (15-25 µs each at c=1,
            # its caches cold) would count a wait that never happens.
            job.parked = not loop.alone
            if job.parked:
                self._on_depth(1)
            loop.park(self, job)
            return self._result(job, normalize)
        done = job.done = threading.Event()
        with self._cond:
            # Nothing queued and a stream idle: this thread runs the pass itself, saving
            # two thread hand-offs (about a millisecond at c=1). The model's own slots
            # still bound how many passes run at once.
            direct = self.direct and not self._jobs and not self._pieces and self._busy < self.streams
            if direct:
                self._busy += 1
            elif len(self._jobs) >= self.queue_size:
                raise Overloaded(f"this worker has {self.queue_size} requests waiting; retry shortly")
            else:
                self._jobs.append(job)
                self._cond.notify()
        if direct:
            try:
                self._run_batch([job])
            finally:
                self._pass_done()
        else:
            self._on_depth(1)
        if not done.wait(timeout):
            job.abandoned = True  # the batcher skips it if it has not started it yet
            raise Overloaded.no_result_within(timeout)
        return self._result(job, normalize)

    @staticmethod
    def _result(job: _Job, normalize: bool) -> Encoded:
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result.normalized() if normalize else job.result

    def run_now(self, jobs: list[_Job]) -> None:
        """Run the jobs as one shared pass in the calling thread, now, holding a stream as a direct pass does.

        For the requests the worker's event loop answers (smls.turns): they share passes as
        queued requests do, without a batcher thread.
        """
        self._ensure_threads()
        parked = sum(job.parked for job in jobs)
        if parked:
            self._on_depth(-parked)
        with self._cond:
            self._busy += 1  # counted, so that the batcher threads leave the stream to it
        try:
            self._run_in_time(jobs)
        finally:
            self._pass_done()

    def _run_in_time(self, batch: list[_Job]) -> None:
        """Run the jobs whose deadline has not passed; the others get Overloaded, as a queued job that waited it out does."""
        now = time.monotonic()
        for job in batch:
            if now >= job.deadline:
                job.error = Overloaded.no_result_within(job.timeout)
                self._on_shed()
        in_time = [job for job in batch if job.error is None]
        if in_time:
            self._run_batch(in_time)

    def submit_bulk(self, texts: list[str]) -> BulkJob:
        """Queue many texts in the bulk lane (tokenised here, in the caller's thread); wait on the job for the vectors."""
        self._ensure_threads()
        job = BulkJob(list(texts), self.encoder.prepare(texts), self.piece_size)
        with self._cond:
            self._pieces.extend(_Piece(job, idx) for idx in job.pieces)
            self._cond.notify(len(job.pieces))
        return job

    def _ensure_threads(self) -> None:
        # Started lazily in the process that uses it: a thread started in the gunicorn
        # master would not exist in the forked workers.
        if self._threads and self._pid == os.getpid():
            return
        with self._start_lock:
            if not self._threads or self._pid != os.getpid():
                if self._pid != os.getpid():
                    self._jobs, self._pieces, self._busy = deque(), deque(), 0
                    self._cond = threading.Condition()
                self._pid = os.getpid()
                self._threads = [threading.Thread(target=self._run, name=f"smls-batcher-{i}", daemon=True) for i in range(self.streams)]
                for thread in self._threads:
                    thread.start()

    def _take(self) -> list[_Job] | _Piece:
        """Block for work; a batch of requests or one bulk piece, taking turns when both wait."""
        with self._cond:
            while True:
                while self._pieces and self._pieces[0].job.cancelled:
                    self._pieces.popleft()
                if self._busy >= self.streams:  # every stream is running a pass (some run by requests themselves)
                    self._cond.wait()
                    continue
                if self._jobs and not (self._pieces and self._bulk_turn):
                    self._bulk_turn = bool(self._pieces)
                    self._busy += 1
                    return self._gather()
                if self._pieces:
                    self._bulk_turn = False
                    self._busy += 1
                    return self._pieces.popleft()
                self._cond.wait()

    def _gather(self) -> list[_Job]:
        """The first queued job, and what else fits: queued now, or arriving within max_wait (holding the condition)."""
        first = self._jobs.popleft()
        self._on_depth(-1)
        batch, size = [first], len(first.texts)
        deadline = time.monotonic() + self.max_wait
        while size < self.max_batch:
            if not self._jobs:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
                continue
            job = self._jobs[0]
            if size + len(job.texts) > self.max_batch:
                break  # first in the next batch, so order and fairness hold
            self._jobs.popleft()
            self._on_depth(-1)
            batch.append(job)
            size += len(job.texts)
        return [job for job in batch if not job.abandoned]

    def _run(self) -> None:
        while True:
            with self._take_lock:
                work = self._take()
            try:
                if isinstance(work, _Piece):
                    self._run_piece(work)
                elif work:
                    self._run_batch(work)
            finally:
                self._pass_done()

    def _pass_done(self) -> None:
        with self._cond:
            self._busy -= 1
            # A batcher thread may be waiting for a free stream, but only queued work needs it
            # woken (queueing work wakes it too). Waking it for nothing, after every pass a
            # request or the event loop ran itself, cost a thread switch and a round of the
            # GIL per one-sentence request.
            if self._jobs or self._pieces:
                self._cond.notify()

    def _run_piece(self, piece: _Piece) -> None:
        job = piece.job
        if not job._start_piece():
            return
        texts = [job.texts[i] for i in piece.index]
        prepared = None if job.prepared is None else [job.prepared[i] for i in piece.index]
        try:
            result = self.encoder.encode(texts, prepared=prepared)
        except BaseException as exc:  # handed to the waiting request
            log.exception("a bulk piece of %d sentences failed", len(texts))
            job._piece_done(piece.index, None, exc)
            return
        with self._stats_lock:
            self.pieces_run += 1
        self._on_batch(len(texts))
        job._piece_done(piece.index, result, None)

    def _run_batch(self, batch: list[_Job]) -> None:
        try:
            if len(batch) == 1:  # (at c=1 every pass: its result is the job's, whole)
                texts = batch[0].texts
                batch[0].result = self.encoder.encode(texts, prepared=batch[0].prepared)
            else:
                texts = [t for job in batch for t in job.texts]
                prepared: list[Any] | None = []
                for job in batch:  # tokenised by every requester, or by none: then the encoder does it
                    prepared = None if prepared is None or job.prepared is None else prepared + job.prepared
                result = self.encoder.encode(texts, prepared=prepared)
                start = 0
                for job in batch:
                    job.result = result.slice(start, start + len(job.texts))
                    start += len(job.texts)
            with self._stats_lock:
                self.batches += 1
                self.largest_batch = max(self.largest_batch, len(texts))
            self._on_batch(len(texts))
        except BaseException as exc:  # hand every failure to the waiting requests
            log.exception("batch of %d requests failed", len(batch))
            for job in batch:
                job.error = exc
        finally:
            for job in batch:
                if job.done is not None:
                    job.done.set()
