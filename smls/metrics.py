"""Prometheus metrics, summed correctly over gunicorn's workers.

Under gunicorn, gunicorn.conf.py points PROMETHEUS_MULTIPROC_DIR at a private folder
before anything imports prometheus_client, so every worker writes its numbers there and
/metrics (answered by any one worker) reads them all. Without it (tests, in-process use)
the numbers are this process's own.
"""

from __future__ import annotations

import os
import threading
import time
from bisect import bisect_left
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

from smls.afterwards import later

REQUESTS = Counter(
    "smls_http_requests_total", "HTTP requests answered, by route, method, status and model (\"\" where none ran)", ["route", "method", "status", "model"]
)
_LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
LATENCY = Histogram(
    "smls_http_request_duration_seconds",
    "Time to build the response, by route (a streamed document: until its first bytes)",
    ["route"],
    buckets=_LATENCY_BUCKETS,
)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
BATCH_SIZE = Histogram(
    "smls_batch_size_sentences",
    "Sentences per shared forward pass of a model's batcher, by model",
    ["model"],
    buckets=_BATCH_BUCKETS,
)
_BOUNDS = {id(LATENCY): (*_LATENCY_BUCKETS, float("inf")), id(BATCH_SIZE): (*_BATCH_BUCKETS, float("inf"))}
SHED = Counter(
    "smls_shed_requests_total", "Requests answered 503 before any work: the queue for threads was full, or they waited too long", ["reason"]
)
QUEUE_DEPTH = Gauge("smls_queue_depth", "Requests waiting for a model, over all workers, by model", ["model"], multiprocess_mode="livesum")
SENTENCES = Counter("smls_sentences_embedded_total", "Sentences (for a cross-encoder: query-document pairs) run through a model", ["model"])
TOKENS = Counter("smls_tokens_embedded_total", "Tokens run through a model (after truncation, special tokens included)", ["model"])
TRUNCATED = Counter("smls_truncated_inputs_total", "Sentences or pairs cut to a model's maximum sequence length", ["model"])
DIRECT = Counter("smls_direct_requests_total", "Requests whose HTTP head a worker's event loop read itself, without gunicorn's parser (smls.direct)")
LANE = Counter("smls_lane_requests_total", "Requests answered on a worker's event loop without Flask (smls.web.lane), by route", ["route"])
DOCUMENTS = Counter("smls_documents_served_total", "Documents served, by where their vectors came from, and model", ["source", "model"])


class Tally:
    """Counts and observations a worker made, written to prometheus-client's shared files together (flush).

    Each write to those files takes a lock, checks the process id (a system call) and
    stamps the file: about 2-4 µs with warm caches, several times that after a forward
    pass, and a one-sentence request makes about ten (docs/benchmarks.org, "Counters
    tallied"). Summed here first, one flush writes each counter and each histogram
    bucket touched once, however many requests it counts. The worker flushes at most
    every FLUSH_EVERY seconds of its event loop and before it exits, and /metrics
    flushes its own worker's tally before it reads.
    """

    FLUSH_EVERY = 0.1

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[Any, tuple[str, ...]], float] = {}
        self._observed: dict[tuple[Any, tuple[str, ...]], tuple[float, dict[int, int]]] = {}
        self._flushed = time.monotonic()

    def inc(self, metric: Any, labels: tuple[str, ...], amount: float) -> None:
        """Add `amount` to a counter (with these label values), to be written at the next flush."""
        key = (metric, labels)
        with self._lock:
            self._counts[key] = self._counts.get(key, 0.0) + amount

    def observe(self, metric: Any, labels: tuple[str, ...], value: float) -> None:
        """Observe `value` in a histogram (with these label values), to be written at the next flush."""
        key, bucket = (metric, labels), bisect_left(_BOUNDS[id(metric)], value)  # (the first bound >= value, as prometheus-client's)
        with self._lock:
            total, buckets = self._observed.get(key, (0.0, {}))
            buckets[bucket] = buckets.get(bucket, 0) + 1
            self._observed[key] = (total + value, buckets)

    def flush_in(self) -> float | None:
        """Seconds until a flush is due (<= 0: now), or None while nothing waits to be written."""
        if not (self._counts or self._observed):
            return None
        return self._flushed + self.FLUSH_EVERY - time.monotonic()

    def flush(self) -> None:
        """Write what was tallied since the last flush (holding the tally: a /metrics flushing meanwhile waits for the whole of it)."""
        with self._lock:
            for (metric, labels), amount in self._counts.items():
                (metric.labels(*labels) if labels else metric).inc(amount)
            for (metric, labels), (total, buckets) in self._observed.items():
                # prometheus-client's Histogram.observe, for many observations at once: its sum
                # and the bucket each fell in (tests/test_metrics.py holds it to observe's result).
                child = metric.labels(*labels)
                child._sum.inc(total)
                for bucket, n in buckets.items():
                    child._buckets[bucket].inc(n)
            self._counts, self._observed = {}, {}
            self._flushed = time.monotonic()


_tally: Tally | None = None  # set in a gunicorn worker (tally_here); elsewhere every count is written at once


def tally_here() -> Tally:
    """From now on, sum this process's counts in a Tally that its owner flushes (a gunicorn worker: smls.worker)."""
    global _tally
    _tally = Tally()
    return _tally


def inc(metric: Any, *labels: str, amount: float = 1.0) -> None:
    """Count `amount` on a counter with these label values: into this process's tally if it has one, else at once."""
    if _tally is not None:
        _tally.inc(metric, labels, amount)
    else:
        (metric.labels(*labels) if labels else metric).inc(amount)


def observe(metric: Any, value: float, *labels: str) -> None:
    """Observe `value` in a histogram with these label values: into this process's tally if it has one, else at once."""
    if _tally is not None:
        _tally.observe(metric, labels, value)
    else:
        metric.labels(*labels).observe(value)


class ModelMetrics:
    """The hooks one model's encoder and batcher report to, with its name as the label."""

    def __init__(self, model: str) -> None:
        self.model = model
        # Neither held nor tallied: a rise and its fall held together would never show.
        self.queue_depth = QUEUE_DEPTH.labels(model).inc

    def batch_size(self, sentences: int) -> None:
        """Count one shared pass's size, once the answer on its way is sent."""
        later(observe, BATCH_SIZE, sentences, self.model)

    def observe_encoded(self, sentences: int, tokens: int, truncated: int) -> None:
        """Count one forward pass's sentences, tokens and truncated inputs, once the answer on its way is sent."""
        later(self._count_encoded, sentences, tokens, truncated)

    def _count_encoded(self, sentences: int, tokens: int, truncated: int) -> None:
        for counter, n in ((SENTENCES, sentences), (TOKENS, tokens), (TRUNCATED, truncated)):
            if n:  # most passes truncate nothing
                inc(counter, self.model, amount=n)


def render() -> tuple[bytes, str]:
    """The text exposition of every metric, from all workers when running under gunicorn."""
    if _tally is not None:
        _tally.flush()  # this worker's own counts are exact; another's are at most a moment behind
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
