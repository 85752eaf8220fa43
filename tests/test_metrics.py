"""The worker's tally (smls.metrics.Tally): the same numbers as writing each count at once, written together."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from smls import metrics

# Values on both sides of every bound, the bounds themselves (a bound is inclusive), and past the last.
LATENCIES = [0.0, 0.0019, 0.002, 0.0021, 0.004, 0.01, 0.3, 1, 2.5, 29.9, 30, 31, 1000]
SIZES = [1, 1, 2, 3, 32, 33, 512, 513, 4000]


def samples(name: str, labels: dict[str, str]) -> dict[str, float]:
    """Every sample of the metric `name` with these labels (buckets by their bound, _sum, _count), but when it was made."""
    found = {}
    for metric in REGISTRY.collect():
        for s in metric.samples:
            if s.name.startswith(name) and not s.name.endswith("_created") and {k: v for k, v in s.labels.items() if k != "le"} == labels:
                found[s.name + s.labels.get("le", "")] = s.value
    return found


@pytest.fixture
def tally(monkeypatch):
    monkeypatch.setattr(metrics, "_tally", None)
    made = metrics.tally_here()
    yield made
    monkeypatch.setattr(metrics, "_tally", None)


def test_a_flush_writes_what_writing_each_count_at_once_would(tally):
    for value in LATENCIES:
        metrics.observe(metrics.LATENCY, value, "/tally-test")
        metrics.LATENCY.labels("/direct-test").observe(value)
    for size in SIZES:
        metrics.observe(metrics.BATCH_SIZE, size, "tally-model")
        metrics.BATCH_SIZE.labels("direct-model").observe(size)
    for _ in range(3):
        metrics.inc(metrics.REQUESTS, "/tally-test", "POST", "200", "m")
    metrics.inc(metrics.SENTENCES, "tally-model", amount=7)
    metrics.inc(metrics.DIRECT)
    direct_before = REGISTRY.get_sample_value("smls_direct_requests_total")
    assert REGISTRY.get_sample_value("smls_http_request_duration_seconds_count", {"route": "/tally-test"}) is None  # not yet written
    assert tally.flush_in() is not None
    tally.flush()
    assert tally.flush_in() is None  # nothing left to write
    latency = samples("smls_http_request_duration_seconds", {"route": "/tally-test"})
    assert latency and latency == samples("smls_http_request_duration_seconds", {"route": "/direct-test"})
    sizes = samples("smls_batch_size_sentences", {"model": "tally-model"})
    assert sizes and sizes == samples("smls_batch_size_sentences", {"model": "direct-model"})
    assert REGISTRY.get_sample_value("smls_http_requests_total", {"route": "/tally-test", "method": "POST", "status": "200", "model": "m"}) == 3
    assert REGISTRY.get_sample_value("smls_sentences_embedded_total", {"model": "tally-model"}) == 7
    assert REGISTRY.get_sample_value("smls_direct_requests_total") == direct_before + 1


def test_counts_wait_for_the_flush_and_render_flushes_them(tally):
    key = {"route": "/render-test", "method": "GET", "status": "200", "model": ""}
    metrics.inc(metrics.REQUESTS, "/render-test", "GET", "200", "")
    assert REGISTRY.get_sample_value("smls_http_requests_total", key) is None  # tallied, not yet written
    assert 0 < tally.flush_in() <= metrics.Tally.FLUSH_EVERY
    body, _ = metrics.render()
    assert 'smls_http_requests_total{method="GET",model="",route="/render-test",status="200"} 1.0' in body.decode()


def test_without_a_tally_every_count_is_written_at_once(monkeypatch):
    monkeypatch.setattr(metrics, "_tally", None)
    metrics.inc(metrics.REQUESTS, "/at-once", "GET", "200", "")
    metrics.observe(metrics.LATENCY, 0.003, "/at-once")
    assert REGISTRY.get_sample_value("smls_http_requests_total", {"route": "/at-once", "method": "GET", "status": "200", "model": ""}) == 1
    assert REGISTRY.get_sample_value("smls_http_request_duration_seconds_count", {"route": "/at-once"}) == 1
