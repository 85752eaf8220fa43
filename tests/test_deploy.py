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
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from tests.helpers import free_port, start_server

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


def start_nginx(tmp_path: Path, a, b) -> tuple[subprocess.Popen, str]:
    """deploy/nginx.conf with only the addresses changed, in front of a and b; (the process, its URL) once it answers."""
    nginx = nginx_binary()
    (tmp_path / "run").mkdir(exist_ok=True)
    port = free_port()
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    conf = conf.replace("127.0.0.1:8001", a.url.removeprefix("http://")).replace("127.0.0.1:8002", b.url.removeprefix("http://"))
    conf = conf.replace("listen 127.0.0.1:8000;", f"listen 127.0.0.1:{port};")
    (tmp_path / "nginx.conf").write_text(conf)
    proxy = subprocess.Popen([nginx, "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path / "run"), "-g", "daemon off;"],
                             stdout=subprocess.DEVNULL, stderr=open(tmp_path / "nginx.err", "w"))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(url + "/health", timeout=2).status_code == 200:
                return proxy, url
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline, (tmp_path / "nginx.err").read_text()
        time.sleep(0.1)


def kill_instance(server) -> None:
    """An instance dies hard: master and workers at once."""
    for pid in [server.proc.pid, *map(int, Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children").read_text().split())]:
        os.kill(pid, signal.SIGKILL)
    server.proc.wait()


def load_and_kill(victim, clients: int, send: Callable[[requests.Session, int, int], int]) -> tuple[Counter[int], Counter[int]]:
    """`clients` threads call send(session, client, i) for 8 s; the victim is SIGKILLed after 3 s. (Every status, the statuses after the kill.)"""
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
                status = send(session, n, i)
            except requests.RequestException:
                status = 0
            statuses[status] += 1
            if killed.is_set():
                after_kill[status] += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    time.sleep(3)
    kill_instance(victim)  # mid-load
    killed.set()
    for t in threads:
        t.join()
    return statuses, after_kill


def test_nginx_carries_the_load_when_an_instance_dies(tmp_path):
    nginx_binary()
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    a = start_server(tmp_path / "a", workers=1, SMLS_CACHE_DIR=str(tmp_path / "cache-a"))
    b = start_server(tmp_path / "b", workers=1, SMLS_CACHE_DIR=str(tmp_path / "cache-b"))
    proxy, url = start_nginx(tmp_path, a, b)
    try:

        def embed(session: requests.Session, n: int, i: int) -> int:
            return session.post(url + "/embed", data={"message": f"client {n} sentence {i}"}, timeout=30).status_code

        statuses, after_kill = load_and_kill(a, 6, embed)
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


def test_two_instances_on_one_postgresql_share_uploads_vectors_and_search(tmp_path, postgres):
    nginx_binary()
    dsn = postgres.fresh_database()
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    env = {"SMLS_STORE": dsn, "SMLS_DATA_DIR": str(tmp_path / "no-files")}
    a = start_server(tmp_path / "a", workers=1, SMLS_CACHE_DIR=str(tmp_path / "cache-a"), **env)
    b = start_server(tmp_path / "b", workers=1, SMLS_CACHE_DIR=str(tmp_path / "cache-b"), **env)
    proxy, url = start_nginx(tmp_path, a, b)
    try:
        # Uploaded and computed through a; found through b, whose index follows a's changes.
        body = {"texts": [{"text": "Molten lava poured down the side of the volcano.", "pages": ["p1"]}], "pages": [{"id": "p1", "page_number": 7}]}
        assert requests.put(a.url + "/documents/volcano?compute=true", json=body, timeout=120).status_code == 201
        hits = requests.get(b.url + "/search", params={"q": "an erupting volcano", "k": 1}, timeout=120).json()["results"]
        assert [(h["doc_id"], h["pages"][0]["number"]) for h in hits] == [("volcano", 7)]
        assert requests.get(b.url + "/documents/volcano", timeout=60).json()["cached"] is True  # computed once, by a
        assert "volcano" in {d["id"] for d in requests.get(url + "/documents", timeout=60).json()["documents"]}

        # Uploads through nginx while instance a dies: every one is acknowledged and kept.
        acknowledged: dict[str, str] = {}

        cut_off: list[str] = []

        def upload(session: requests.Session, n: int, i: int) -> int:
            doc_id, text = f"c{n}-{i}", f"client {n} wrote sentence number {i} about {['ships', 'tax', 'rain'][i % 3]}"
            body = {"texts": [{"text": text, "pages": ["p"]}], "pages": [{"id": "p", "page_number": i}]}

            def put(via: requests.Session) -> int:
                return via.put(f"{url}/documents/{doc_id}", params={"compute": "true"}, json=body, timeout=60).status_code

            try:
                status = put(session)
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
                # a died after nginx had begun passing its answer on, which nginx cannot retry
                # (its error log: "upstream prematurely closed connection while reading
                # upstream"). A request thread now sends a small answer's head and body in
                # one send, which leaves little such window, but a PUT may be sent again, as a
                # client whose answer was cut off would; a second failure is a failure.
                cut_off.append(doc_id)
                status = put(requests.Session())
            if status in (200, 201):
                acknowledged[doc_id] = text
            return status

        statuses, _ = load_and_kill(a, 4, upload)
        # 200: stored by a, which died before it answered; nginx sent the same PUT to b,
        # which found it there and replaced it with itself.
        assert set(statuses) <= {200, 201}, f"uploads that failed: {statuses}"
        assert len(cut_off) <= 4, cut_off  # at most the uploads in flight when a died
        assert len(acknowledged) > 20, statuses
        listed = {d["id"]: d["sentences"] for d in requests.get(url + "/documents", timeout=60).json()["documents"]}
        assert set(acknowledged) <= set(listed)
        for doc_id, text in list(acknowledged.items())[::5]:
            doc = requests.get(f"{url}/documents/{doc_id}", timeout=60).json()
            assert [s["text"] for s in doc["sentences"]] == [text]
        doc_id, text = sorted(acknowledged.items())[-1]
        hits = requests.get(url + "/search", params={"q": text, "k": 1}, timeout=300).json()["results"]
        assert (hits[0]["doc_id"], hits[0]["text"]) == (doc_id, text) and hits[0]["score"] > 0.999
    finally:
        proxy.send_signal(signal.SIGQUIT)
        proxy.wait(10)
        a.stop()
        b.stop()


def test_a_postgresql_restart_under_load_loses_no_acknowledged_upload(tmp_path):
    """Two instances on one PostgreSQL, clients uploading, the database restarted: 503s with Retry-After while it is down, then every acknowledged upload is there."""
    from scripts.postgres import start_postgres

    database = start_postgres(free_port())
    env = {"SMLS_STORE": database.fresh_database(), "SMLS_DATA_DIR": str(tmp_path / "no-files")}
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    servers = [start_server(tmp_path / n, workers=1, SMLS_CACHE_DIR=str(tmp_path / f"cache-{n}"), **env) for n in ("a", "b")]
    acknowledged: dict[str, str] = {}
    statuses: Counter[int] = Counter()
    bad: list[str] = []
    stop = threading.Event()

    def client(n: int) -> None:
        session, i = requests.Session(), 0
        while not stop.is_set():
            doc_id, text = f"r{n}-{i}", f"client {n} kept note {i} about the harbour"
            body = {"texts": [{"text": text, "pages": ["p"]}], "pages": [{"id": "p", "page_number": 1}]}
            r = session.put(f"{servers[i % 2].url}/documents/{doc_id}", json=body, timeout=60)
            statuses[r.status_code] += 1
            if r.status_code in (200, 201):
                acknowledged[doc_id] = text
            elif r.status_code != 503 or r.json()["error"]["code"] != "store_unavailable" or "Retry-After" not in r.headers:
                bad.append(f"{r.status_code} {r.text[:200]}")
            else:
                time.sleep(float(r.headers["Retry-After"]) / 4)
            i += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    try:
        for t in threads:
            t.start()
        time.sleep(3)
        before = len(acknowledged)
        database.restart(down=2.0)  # fast shutdown: open transactions are rolled back, none half-written
        time.sleep(4)
        stop.set()
        for t in threads:
            t.join(60)
        assert not bad, bad[:5]
        assert statuses[503] > 0, statuses  # the clients saw it go, and were told to come back
        assert before > 5 and len(acknowledged) > before, statuses  # and it came back
        listed = {d["id"] for d in requests.get(servers[0].url + "/documents", timeout=60).json()["documents"]}
        assert set(acknowledged) <= listed, sorted(set(acknowledged) - listed)[:5]
        for doc_id, text in list(acknowledged.items())[::7]:
            doc = requests.get(f"{servers[1].url}/documents/{doc_id}", timeout=60).json()
            assert [s["text"] for s in doc["sentences"]] == [text]
        found = requests.get(servers[1].url + "/search", params={"q": "harbour note", "mode": "keyword", "k": 3}, timeout=120)
        assert found.status_code == 200 and found.json()["results"], found.text
    finally:
        stop.set()
        for server in servers:
            server.stop()
        database.stop()
