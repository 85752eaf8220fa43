"""Overload on a live server: quick 503s with Retry-After, what was accepted is served, and it recovers alone."""

from __future__ import annotations

import statistics
import threading
import time
from collections import defaultdict

import pytest
import requests

from tests.conftest import start_server

pytestmark = pytest.mark.live


def test_more_load_than_it_can_take_is_shed_quickly_and_it_recovers(tmp_path):
    # 16 request threads, 4 places in the model's queue: beyond that, 503 at once.
    server = start_server(tmp_path, workers=1, SMLS_THREADS="16", SMLS_QUEUE_SIZE="4", SMLS_REQUEST_TIMEOUT="20",
                          SMLS_CACHE_DIR=str(tmp_path / "cache"))
    texts = [f"sentence {i} of a heavy request about tides, ships and the weather at sea" for i in range(16)]
    seconds: dict[int, list[float]] = defaultdict(list)
    bad: list[str] = []
    stop = time.monotonic() + 8

    def client() -> None:
        while time.monotonic() < stop:
            start = time.monotonic()
            try:
                r = requests.post(server.url + "/embed", json={"message": texts}, headers={"Connection": "close"}, timeout=60)
            except requests.RequestException as exc:
                bad.append(repr(exc))
                continue
            seconds[r.status_code].append(time.monotonic() - start)
            if r.status_code == 503:
                if r.headers.get("Retry-After") != "1" or r.json()["error"]["code"] != "overloaded":
                    bad.append(f"503 without Retry-After or code: {r.headers} {r.text}")
                time.sleep(0.05)
            elif r.status_code != 200:
                bad.append(f"{r.status_code} {r.text[:200]}")

    try:
        threads = [threading.Thread(target=client) for _ in range(48)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not bad, bad[:5]
        assert len(seconds[200]) > 10 and len(seconds[503]) > 10, {k: len(v) for k, v in seconds.items()}
        assert statistics.median(seconds[503]) < 0.5  # refused at once, not after waiting
        assert max(seconds[200]) < 20  # no accepted request waits without end
        # The load is gone: it answers normally again, by itself.
        for i in range(5):
            start = time.monotonic()
            r = requests.post(server.url + "/embed", json={"message": texts}, timeout=30)
            assert r.status_code == 200 and time.monotonic() - start < 5
    finally:
        server.stop()
