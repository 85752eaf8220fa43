"""Prometheus metrics, summed correctly over gunicorn's workers.

Under gunicorn, gunicorn.conf.py points PROMETHEUS_MULTIPROC_DIR at a private folder
before anything imports prometheus_client, so every worker writes its numbers there and
/metrics (answered by any one worker) reads them all. Without it (tests, in-process use)
the numbers are this process's own.
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

from smls.afterwards import later

REQUESTS = Counter(
    "smls_http_requests_total", "HTTP requests answered, by route, method, status and model (\"\" where none ran)", ["route", "method", "status", "model"]
)
LATENCY = Histogram(
    "smls_http_request_duration_seconds",
    "Time to build the response, by route (a streamed document: until its first bytes)",
    ["route"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
BATCH_SIZE = Histogram(
    "smls_batch_size_sentences",
    "Sentences per shared forward pass of a model's batcher, by model",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
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


class ModelMetrics:
    """The hooks one model's encoder and batcher report to, with its name as the label."""

    def __init__(self, model: str) -> None:
        self.model = model
        # Not held (smls.afterwards): a rise and its fall held together would never show.
        self.queue_depth = QUEUE_DEPTH.labels(model).inc
        self._batch_size = BATCH_SIZE.labels(model).observe
        self._counters = (SENTENCES.labels(model), TOKENS.labels(model), TRUNCATED.labels(model))

    def batch_size(self, sentences: int) -> None:
        """Count one shared pass's size, once the answer on its way is sent."""
        later(self._batch_size, sentences)

    def observe_encoded(self, sentences: int, tokens: int, truncated: int) -> None:
        """Count one forward pass's sentences, tokens and truncated inputs, once the answer on its way is sent."""
        later(self._count_encoded, sentences, tokens, truncated)

    def _count_encoded(self, sentences: int, tokens: int, truncated: int) -> None:
        for counter, n in zip(self._counters, (sentences, tokens, truncated), strict=True):
            if n:  # each write locks and stamps a shared file; most passes truncate nothing
                counter.inc(n)


def render() -> tuple[bytes, str]:
    """The text exposition of every metric, from all workers when running under gunicorn."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
