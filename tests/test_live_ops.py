"""Live: metrics summed over two workers, JSON access logs with request ids, and readiness."""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.helpers import counter, settled_metrics, start_server

pytestmark = pytest.mark.live


def test_metrics_are_summed_over_both_workers_and_the_access_log_is_json(tmp_path):
    server = start_server(tmp_path, workers=2, SMLS_ACCESS_LOG_FORMAT="json", SMLS_CACHE_DIR=str(tmp_path / "cache"), TMPDIR=str(tmp_path))
    try:
        assert len(list(tmp_path.glob("smls-metrics-*"))) == 1  # the private metrics folder
        # /health answered as soon as one worker was up; the other may still be starting, so
        # keep sending (a new connection each time, two at once) until both have answered.
        ids: list[str] = []

        def send(i: int) -> str:
            response = requests.post(server.url + "/embed", data={"message": f"sentence number {i}"}, headers={"Connection": "close"}, timeout=30)
            assert response.status_code == 200
            return response.headers["X-Request-Id"]

        deadline = time.monotonic() + 60
        with ThreadPoolExecutor(2) as pool:
            while True:
                ids += pool.map(send, range(len(ids), len(ids) + 10))
                records = [json.loads(line) for line in server.access_log.read_text().splitlines() if line.strip()]
                embed_pids = {r["pid"] for r in records if r["path"] == "/embed" and r["status"] == 200}
                if len(embed_pids) == 2 or time.monotonic() > deadline:
                    break
        assert len(embed_pids) == 2, "both workers should have answered"
        sent = len(ids)
        requests.post(server.url + "/embed", json={"message": []}, headers={"X-Request-Id": "bad-request-1"}, timeout=30)
        for _ in range(50):  # the access log line is written just after the response
            records = [json.loads(line) for line in server.access_log.read_text().splitlines() if line.strip()]
            if {r["request_id"] for r in records} >= set(ids) | {"bad-request-1"}:
                break
            time.sleep(0.1)
        assert {r["request_id"] for r in records} >= set(ids) | {"bad-request-1"}
        assert all(set(r) >= {"time", "method", "path", "status", "duration_ms", "request_id", "pid"} for r in records)
        # Whichever worker answers /metrics, the numbers are the sum over both, once each
        # worker's tally is written (within a moment of its last answer).
        expected = {
            'smls_http_requests_total{method="POST",model="all-MiniLM-L6-v2",route="/embed",status="200"}': sent,
            'smls_http_requests_total{method="POST",model="",route="/embed",status="400"}': 1,
            'smls_sentences_embedded_total{model="all-MiniLM-L6-v2"}': sent + 2,  # each worker's warm-up embeds one sentence too
        }
        settled_metrics(server.url, lambda t: all(counter(t, name) == n for name, n in expected.items()))
        for _ in range(4):
            text = requests.get(server.url + "/metrics", headers={"Connection": "close"}, timeout=30).text
            assert {name: counter(text, name) for name in expected} == expected
            assert re.search(r'^smls_queue_depth\{model="all-MiniLM-L6-v2"\} 0\.0$', text, re.M)
        assert requests.get(server.url + "/ready", timeout=30).json() == {"status": "ready"}
    finally:
        server.stop()
    assert not list(tmp_path.glob("smls-metrics-*"))  # removed at exit
