"""deploy/nginx.conf in front of two live instances: load goes on when one of them dies."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import requests

from tests.conftest import free_port, start_server

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.deploy, pytest.mark.live]


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if not found:
        message = "nginx is not installed (make test-deploy installs it)"
        if os.environ.get("SMLS_REQUIRE_CLIENTS"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def test_nginx_carries_the_load_when_an_instance_dies(tmp_path):
    nginx = nginx_binary()
    for name in ("a", "b", "run"):
        (tmp_path / name).mkdir()
    a = start_server(tmp_path / "a", workers=1, SMLS_CACHE_DIR=str(tmp_path / "cache-a"))
    b = start_server(tmp_path / "b", workers=1, SMLS_CACHE_DIR=str(tmp_path / "cache-b"))
    port = free_port()
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    # The shipped file, with only the addresses changed.
    conf = conf.replace("127.0.0.1:8001", a.url.removeprefix("http://")).replace("127.0.0.1:8002", b.url.removeprefix("http://"))
    conf = conf.replace("listen 127.0.0.1:8000;", f"listen 127.0.0.1:{port};")
    (tmp_path / "nginx.conf").write_text(conf)
    proxy = subprocess.Popen([nginx, "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path / "run"), "-g", "daemon off;"],
                             stdout=subprocess.DEVNULL, stderr=open(tmp_path / "nginx.err", "w"))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(url + "/health", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "nginx.err").read_text()
            time.sleep(0.1)

        statuses: Counter[int] = Counter()
        after_kill: Counter[int] = Counter()
        killed = threading.Event()
        stop = time.monotonic() + 8

        def client(n: int) -> None:
            session = requests.Session()
            i = 0
            while time.monotonic() < stop:
                i += 1
                try:
                    status = session.post(url + "/embed", data={"message": f"client {n} sentence {i}"}, timeout=30).status_code
                except requests.RequestException:
                    status = 0
                statuses[status] += 1
                if killed.is_set():
                    after_kill[status] += 1

        threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        time.sleep(3)
        # Instance a dies hard, mid-load: master and worker at once.
        for pid in [a.proc.pid, *map(int, Path(f"/proc/{a.proc.pid}/task/{a.proc.pid}/children").read_text().split())]:
            os.kill(pid, signal.SIGKILL)
        a.proc.wait()
        killed.set()
        for t in threads:
            t.join()
        assert statuses[200] > 50, statuses
        assert after_kill[200] > 20, after_kill  # b carried the load on
        assert set(statuses) == {200}, f"requests that failed: {statuses}"
        served_by_b = len(re.findall(r'"POST /embed ', b.access_log.read_text()))
        served_by_a = len(re.findall(r'"POST /embed ', a.access_log.read_text()))
        assert served_by_a > 0 and served_by_b > after_kill[200] * 0.9, (served_by_a, served_by_b, after_kill)
    finally:
        proxy.send_signal(signal.SIGQUIT)
        proxy.wait(10)
        a.stop()
        b.stop()
