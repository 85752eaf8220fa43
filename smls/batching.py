"""Cross-request micro-batching inside one worker.

Request threads put jobs on a bounded queue and wait; a batcher thread (one per
inference stream) takes whatever is queued (up to max_batch sentences, waiting at
most max_wait for more), runs one forward pass for all of it, and hands each job
its slice, in order.
A full queue is refused at once (503 + Retry-After) instead of letting latency grow;
a job whose requester stopped waiting is skipped, so it costs no inference.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from smls.encoders import Encoded
from smls.errors import Overloaded

log = logging.getLogger("smls")


@dataclass(eq=False)
class _Job:
    texts: list[str]
    prepared: list[Any] | None = None
    done: threading.Event = field(default_factory=threading.Event)
    result: Encoded | None = None
    error: BaseException | None = None
    abandoned: bool = False


class MicroBatcher:
    """Gathers concurrent encode calls into shared forward passes; one thread per inference stream."""

    def __init__(
        self,
        encoder: Any,
        *,
        max_batch: int = 16,
        max_wait: float = 0.0,
        queue_size: int = 64,
        streams: int = 1,
        on_depth: Callable[[int], Any] | None = None,
        on_batch: Callable[[int], Any] | None = None,
    ) -> None:
        self.encoder = encoder
        self.streams = streams
        # Hooks for metrics: the queue grew or shrank by n; a pass of n sentences ran.
        self._on_depth = on_depth or (lambda n: None)
        self._on_batch = on_batch or (lambda n: None)
        self.max_batch = max_batch
        self.max_wait = max_wait
        self._queue: queue.Queue[_Job] = queue.Queue(maxsize=queue_size)
        self._carry: _Job | None = None
        self._threads: list[threading.Thread] = []
        self._pid = 0
        self._start_lock = threading.Lock()
        self._take_lock = threading.Lock()  # one thread at a time assembles a batch
        self._stats_lock = threading.Lock()
        # For tests and metrics: how many forward passes ran, and their sizes.
        self.batches = 0
        self.largest_batch = 0

    def encode(self, texts: list[str], *, normalize: bool = False, timeout: float = 30.0) -> Encoded:
        """Encode texts as part of a shared batch; Overloaded if the queue is full or timeout passes."""
        self._ensure_thread()
        # Tokenising here, in the request's thread, keeps the model's thread on the model.
        job = _Job(list(texts), self.encoder.prepare(texts))
        try:
            self._queue.put_nowait(job)
            self._on_depth(1)
        except queue.Full:
            raise Overloaded(f"this worker has {self._queue.maxsize} requests waiting; retry shortly") from None
        if not job.done.wait(timeout):
            job.abandoned = True  # the batcher skips it if it has not started it yet
            raise Overloaded(f"no result within {timeout:g} s (SMLS_REQUEST_TIMEOUT); retry shortly")
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result.normalized() if normalize else job.result

    def _ensure_thread(self) -> None:
        # Started lazily in the process that uses it: a thread started in the gunicorn
        # master would not exist in the forked workers.
        if self._threads and self._pid == os.getpid():
            return
        with self._start_lock:
            if not self._threads or self._pid != os.getpid():
                if self._pid != os.getpid():
                    self._queue = queue.Queue(maxsize=self._queue.maxsize)
                    self._carry = None
                self._pid = os.getpid()
                self._threads = [threading.Thread(target=self._run, name=f"smls-batcher-{i}", daemon=True) for i in range(self.streams)]
                for thread in self._threads:
                    thread.start()

    def _next_batch(self) -> list[_Job]:
        """Block for one job, then take what else fits: queued now, or arriving within max_wait."""
        if self._carry:
            first, self._carry = self._carry, None
        else:
            first = self._queue.get()
            self._on_depth(-1)
        batch, size = [first], len(first.texts)
        deadline = time.monotonic() + self.max_wait
        while size < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                job = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            self._on_depth(-1)
            if size + len(job.texts) > self.max_batch:
                self._carry = job  # first in the next batch, so order and fairness hold
                break
            batch.append(job)
            size += len(job.texts)
        return [job for job in batch if not job.abandoned]

    def _run(self) -> None:
        while True:
            with self._take_lock:
                batch = self._next_batch()
            if not batch:
                continue
            try:
                texts = [t for job in batch for t in job.texts]
                prepared: list[Any] | None = []
                for job in batch:  # tokenised by every requester, or by none: then the encoder does it
                    prepared = None if prepared is None or job.prepared is None else prepared + job.prepared
                result = self.encoder.encode(texts, prepared=prepared)
                with self._stats_lock:
                    self.batches += 1
                    self.largest_batch = max(self.largest_batch, len(texts))
                self._on_batch(len(texts))
                start = 0
                for job in batch:
                    job.result = result.slice(start, start + len(job.texts))
                    start += len(job.texts)
            except BaseException as exc:  # hand every failure to the waiting requests
                log.exception("batch of %d requests failed", len(batch))
                for job in batch:
                    job.error = exc
            finally:
                for job in batch:
                    job.done.set()
