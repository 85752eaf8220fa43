"""Overload on a live server: quick 503s with Retry-After, what was accepted is served, and it recovers alone."""

from __future__ import annotations

import statistics
import threading
import time
from collections import defaultdict
from collections.abc import Callable

import pytest
import requests

from tests.helpers import LiveServer, counter, start_server

pytestmark = pytest.mark.live


def flood(server: LiveServer, texts: list[str], clients: int, seconds: float, during: Callable[[], None] = lambda: None) -> dict[int, list[float]]:
    """clients posting texts to /embed in a loop, a new connection each time; the seconds each answer took, by status.

    `during` runs in this thread meanwhile. Fails on anything but 200 and a proper 503.
    """
    took: dict[int, list[float]] = defaultdict(list)
    bad: list[str] = []
    stop = time.monotonic() + seconds

    def client() -> None:
        while time.monotonic() < stop:
            start = time.monotonic()
            try:
                r = requests.post(server.url + "/embed", json={"message": texts}, headers={"Connection": "close"}, timeout=60)
            except requests.RequestException as exc:
                bad.append(repr(exc))
                continue
            took[r.status_code].append(time.monotonic() - start)
            if r.status_code == 503:
                if r.headers.get("Retry-After") != "1" or r.json()["error"]["code"] != "overloaded":
                    bad.append(f"503 without Retry-After or code: {r.headers} {r.text}")
                time.sleep(0.05)
            elif r.status_code != 200:
                bad.append(f"{r.status_code} {r.text[:200]}")

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    during()
    for t in threads:
        t.join()
    assert not bad, bad[:5]
    assert len(took[200]) > 10 and len(took[503]) > 10, {k: len(v) for k, v in took.items()}
    return took


def assert_recovered(server: LiveServer, texts: list[str]) -> None:
    """The load is gone: it answers normally again, by itself."""
    for _ in range(5):
        start = time.monotonic()
        r = requests.post(server.url + "/embed", json={"message": texts}, timeout=30)
        assert r.status_code == 200 and time.monotonic() - start < 5


def test_more_load_than_it_can_take_is_shed_quickly_and_it_recovers(tmp_path):
    # 16 request threads, 4 places in the model's queue: beyond that, 503 at once.
    server = start_server(tmp_path, workers=1, SMLS_THREADS="16", SMLS_QUEUE_SIZE="4", SMLS_REQUEST_TIMEOUT="20",
                          SMLS_CACHE_DIR=str(tmp_path / "cache"))
    texts = [f"sentence {i} of a heavy request about tides, ships and the weather at sea" for i in range(16)]
    try:
        took = flood(server, texts, clients=48, seconds=8)
        assert statistics.median(took[503]) < 0.5  # refused at once, not after waiting
        assert max(took[200]) < 20  # no accepted request waits without end
        assert_recovered(server, texts)
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("settings", "clients", "reason"),
    [
        ({}, 160, "queue_full"),  # the defaults: at most 64 may wait for the 4 request threads
        ({"SMLS_REQUEST_TIMEOUT": "0.5", "SMLS_QUEUE_SIZE": "1000"}, 96, "deadline"),  # bounded by time instead
    ],
)
def test_a_flood_beyond_the_request_threads_is_shed_and_health_still_answers(tmp_path, settings, clients, reason):
    # 4 request threads, so the model's own queue never fills: the flood queues for the
    # threads instead, and what is beyond the limit (count or time) gets a 503.
    server = start_server(tmp_path, workers=1, SMLS_CACHE_DIR=str(tmp_path / "cache"), **settings)
    texts = [f"sentence {i} of a request about tides, ships and the weather at sea" for i in range(4)]
    health: list[float] = []

    def check_health() -> None:
        stop = time.monotonic() + 7
        while time.monotonic() < stop:
            start = time.monotonic()
            assert requests.get(server.url + "/health", timeout=60).status_code == 200  # never shed
            health.append(time.monotonic() - start)
            time.sleep(0.5)

    try:
        took = flood(server, texts, clients=clients, seconds=8, during=check_health)
        # Nobody waits much beyond the limit plus a request's own work.
        assert statistics.median(took[503]) < 2 and max(took[200]) < 10, (statistics.median(took[503]), max(took[200]))
        assert max(health) < 5, health
        text = requests.get(server.url + "/metrics", timeout=30).text
        shed = counter(text, f'smls_shed_requests_total{{reason="{reason}"}}')
        if reason == "queue_full":  # every 503 was shed before any work (the model's queue never filled)
            assert shed == len(took[503])
        else:  # the rest ran out of their 0.5 s waiting for their vectors
            assert 10 < shed <= len(took[503])
        assert_recovered(server, texts)
    finally:
        server.stop()
