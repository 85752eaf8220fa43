"""Documents through a real gunicorn: a 20k-sentence document streamed with bounded worker memory."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.helpers import LiveServer, start_server, write_document

pytestmark = pytest.mark.live


def worker_pids(server: LiveServer) -> list[int]:
    """The gunicorn workers: children of the master."""
    pid = server.proc.pid
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def rss_kib(pid: int) -> int:
    """Resident set size now."""
    return _status_kib(pid, "VmRSS")


def peak_rss_kib(pid: int) -> int:
    """Highest resident set size the process has had."""
    return _status_kib(pid, "VmHWM")


@pytest.fixture(scope="module")
def big_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bigdoc")
    write_document(tmp / "data", "big", 20_000)
    write_document(tmp / "data", "warm", 1_000, seed=3)
    server = start_server(tmp, workers=1, SMLS_DATA_DIR=str(tmp / "data"), SMLS_CACHE_DIR=str(tmp / "cache"))
    yield server
    server.stop()


def test_20k_sentences_stream_with_bounded_memory(big_server):
    (pid,) = worker_pids(big_server)
    # Inference itself needs working memory (activations, allocator pools): reach that plateau
    # first with a small document, so that what is measured below is what the size costs.
    assert requests.get(big_server.url + "/documents/warm", timeout=300).json()["count"] == 1_000
    baseline = peak_rss_kib(pid)
    pieces = 0
    with requests.get(big_server.url + "/documents/big", stream=True, timeout=900) as r:
        assert r.status_code == 200
        assert r.headers.get("Transfer-Encoding") == "chunked" and "Content-Length" not in r.headers
        body = bytearray()
        for chunk in r.iter_content(chunk_size=None):
            pieces += 1
            body += chunk
    doc = json.loads(body)
    assert doc["count"] == 20_000 and doc["cached"] is False
    assert [s["index"] for s in doc["sentences"]] == list(range(20_000))
    assert all(len(s["embedding"]) == 384 for s in doc["sentences"][::997])
    assert doc["sentences"][12_345]["metadata"] == {"n": 12_345}
    assert pieces > 20  # written out as it was computed, not in one piece
    growth_mib = (peak_rss_kib(pid) - baseline) / 1024
    # Measured: ~25 MiB (the parsed document). The response is ~100 MB of JSON and the vectors
    # 30 MB: a worker that held either would break this bound.
    assert growth_mib < 60, f"worker peak RSS grew by {growth_mib:.0f} MiB"

    cached = requests.get(big_server.url + "/documents/big", timeout=300).json()
    assert cached["cached"] is True and cached["sentences"] == doc["sentences"]


def test_search_on_the_big_document_uses_the_cache(big_server):
    r = requests.get(big_server.url + "/documents/big/search", params={"q": "lantern harbour (4321).", "k": 5}, timeout=300)
    assert r.status_code == 200
    results = r.json()["results"]
    assert len(results) == 5 and all(len(h["pages"]) == 1 for h in results)


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("uploads")
    write_document(tmp / "data", "files", 300, seed=5)
    env = {"SMLS_DATA_DIR": str(tmp / "data"), "SMLS_CACHE_DIR": str(tmp / "cache")}
    server = start_server(tmp, workers=2, **env)
    yield server, tmp, env
    server.stop()


VOLCANO = {
    "texts": [
        {"text": "Molten lava poured down the side of the volcano.", "pages": ["p1"]},
        {"text": "The committee approved the annual budget.", "pages": ["p2"]},
    ],
    "pages": [{"id": "p1", "page_number": 1}, {"id": "p2", "page_number": 2}],
}


def answering_pids(server: LiveServer, since: int) -> set[str]:
    """The worker pids of the access log's lines after the first `since`."""
    return {line.split()[0] for line in server.access_log.read_text().splitlines()[since:]}


def test_an_upload_through_one_worker_is_found_by_every_worker(two_workers):
    server, _, _ = two_workers
    files = {"texts": ("t.json", json.dumps(VOLCANO["texts"])), "pages": ("p.csv", "id,page_number\np1,1\np2,2\n")}
    r = requests.put(server.url + "/documents/volcano", files=files, timeout=60)
    assert r.status_code == 201, r.text
    requests.get(server.url + "/search", params={"q": "warm up"}, timeout=300)  # the 300-sentence file document, computed once
    lines = len(server.access_log.read_text().splitlines())
    found = everywhere(server, {"q": "lava from a volcano", "k": 2})
    assert {(h[0]["doc_id"], h[0]["index"], h[0]["pages"][0]["number"]) for h in found} == {("volcano", 0, 1)}
    time.sleep(0.5)  # the access log is written after the response
    assert len(answering_pids(server, lines)) == 2, "one worker answered every search"
    # Replaced through one worker: no worker finds the old text any more.
    r = requests.put(server.url + "/documents/volcano", json={"texts": VOLCANO["texts"][1:], "pages": VOLCANO["pages"]}, timeout=60)
    assert r.status_code == 200
    found = everywhere(server, {"q": "lava", "k": 5, "doc": "volcano"})
    assert {tuple(h["text"] for h in hits) for hits in found} == {("The committee approved the annual budget.",)}
    assert requests.delete(server.url + "/documents/volcano", timeout=60).json() == {"doc_id": "volcano", "deleted": True}
    assert {h["doc_id"] for hits in everywhere(server, {"q": "lava", "k": 5}) for h in hits} == {"files"}


def everywhere(server: LiveServer, params: dict) -> list[list[dict]]:
    """The results of 24 concurrent searches on fresh connections (so both workers answer some)."""

    def one(_: int) -> list[dict]:
        r = requests.get(server.url + "/search", params=params, timeout=120)
        assert r.status_code == 200, r.text
        return r.json()["results"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(one, range(24)))


def test_a_cut_off_upload_leaves_the_old_version_whole(two_workers):
    import socket

    server, _, _ = two_workers
    assert requests.put(server.url + "/documents/keep", json=VOLCANO, timeout=60).status_code == 201
    body = json.dumps({"texts": VOLCANO["texts"][:1], "pages": VOLCANO["pages"]}).encode()
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as s:
        s.sendall(b"PUT /documents/keep HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:-20])
        s.shutdown(socket.SHUT_WR)
        s.settimeout(30)
        answer = b""
        while not answer.endswith(b"}") and (more := s.recv(65536)):
            answer += more
    assert b" 400 " in answer.split(b"\r\n")[0] and b"incomplete_body" in answer
    doc = requests.get(server.url + "/documents/keep", timeout=60).json()
    assert [s["text"] for s in doc["sentences"]] == [t["text"] for t in VOLCANO["texts"]]


def test_the_search_index_is_loaded_after_a_restart(two_workers, tmp_path):
    server, tmp, env = two_workers
    hits = requests.get(server.url + "/search", params={"q": "a sentence", "k": 3}, timeout=300).json()["results"]
    time.sleep(2.5)  # the index is saved a second after its last change
    saved = list((tmp / "cache" / "index").glob("*.hnsw"))
    assert saved, "no index file was written"
    again = start_server(tmp_path, workers=1, **env)
    try:
        assert requests.get(again.url + "/search", params={"q": "a sentence", "k": 3}, timeout=60).json()["results"] == hits
        assert "rebuilding" not in again.error_log.read_text()
    finally:
        again.stop()


@pytest.fixture(scope="module")
def one_spare_thread(tmp_path_factory):
    """One worker with 2 request threads: one document transfer at a time, one thread kept for the rest."""
    tmp = tmp_path_factory.mktemp("transfers")
    for doc_id, seed in (("long1", 11), ("long2", 12)):
        write_document(tmp / "data", doc_id, 1_500, seed=seed)
    write_document(tmp / "data", "short", 20, seed=13)
    server = start_server(tmp, workers=1, SMLS_THREADS="2", SMLS_DATA_DIR=str(tmp / "data"), SMLS_CACHE_DIR=str(tmp / "cache"))
    yield server
    server.stop()


def test_a_long_download_leaves_a_thread_for_short_requests(one_spare_thread):
    server = one_spare_thread
    with requests.get(server.url + "/documents/long1", stream=True, timeout=600) as long:
        assert long.status_code == 200
        chunks = long.iter_content(chunk_size=None)
        assert next(chunks).startswith(b'{"doc_id":"long1"')  # the header is out; the sentences are being computed
        # The slot is taken: another transfer is refused at once, short requests are answered.
        refused = requests.get(server.url + "/documents/short", timeout=10)
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
        error = refused.json()["error"]
        assert error["code"] == "overloaded" and "SMLS_THREADS - 1" in error["message"]
        assert requests.post(server.url + "/embed", data={"message": "hello"}, timeout=10).status_code == 200
        rest = b"".join(chunks)
    assert rest.endswith(b"]}\n")
    # Sent whole: the slot is free again.
    assert requests.get(server.url + "/documents/short", timeout=60).json()["count"] == 20
    metrics = requests.get(server.url + "/metrics", timeout=10).text
    assert 'smls_shed_requests_total{reason="transfers"} 1.0' in metrics


def test_a_client_gone_mid_document_gives_its_slot_back(one_spare_thread):
    import socket

    server = one_spare_thread
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as s:
        s.sendall(b"GET /documents/long2 HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(60)
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
    # The client went away; the worker notices at its next write (after the chunk being computed) and frees the slot.
    deadline = time.monotonic() + 120
    while (status := requests.get(server.url + "/documents/short", timeout=60).status_code) == 503 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert status == 200
