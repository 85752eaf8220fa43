"""smls.worker on a live gunicorn: sharing a burst of connections between workers, and answering on the event loop."""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections import Counter

import numpy as np
import pytest
import requests

from smls.worker.deadline import DeadlineSocket, is_head_of_sized_body
from tests.helpers import live_counter, start_server

BODY = json.dumps({"message": ["a burst of kept-alive connections"]}).encode()
REQUEST = (
    b"POST /embed HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
    + f"Content-Length: {len(BODY)}\r\n\r\n".encode() + BODY
)


def read_response(sock: socket.socket) -> bytes:
    """One whole HTTP response from a kept-alive connection: its head, then its Content-Length body."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def answering_pids(access_log_text: str) -> list[str]:
    """The pid of the worker that answered each /embed request, in log order (the test log format puts it first)."""
    return [line.split()[0] for line in access_log_text.splitlines() if '"POST /embed ' in line]


def test_a_burst_of_kept_alive_connections_is_shared_between_the_workers(tmp_path):
    # Two request threads per worker, so that a worker holds more connections than
    # threads early in the burst. Opened the way a load generator or a proxy's pool
    # opens them: all at once, each sending its first request as soon as it connects.
    server = start_server(tmp_path, workers=2, SMLS_THREADS="2")
    try:
        deadline = time.monotonic() + 60
        while len(set(answering_pids(server.access_log.read_text()))) < 2:  # both workers warmed up and accepting
            assert time.monotonic() < deadline, "both workers should answer"
            requests.post(server.url + "/embed", json={"message": ["warm"]}, headers={"Connection": "close"}, timeout=30)
        already = len(answering_pids(server.access_log.read_text()))
        port = int(server.url.rsplit(":", 1)[1])
        conns = []
        for _ in range(24):
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            sock.sendall(REQUEST)
            conns.append(sock)
        for sock in conns:
            assert read_response(sock).startswith(b"HTTP/1.1 200")
        time.sleep(0.5)  # the access log is written after the response
        burst = Counter(answering_pids(server.access_log.read_text())[already:])
        for sock in conns:
            sock.close()
        assert sum(burst.values()) == 24
        # Kept alive, each connection stays with the worker that accepted it: a worker
        # with most of them would have to answer most of the load on one core.
        assert len(burst) == 2 and min(burst.values()) >= 8, f"connections per worker: {sorted(burst.values())}"
    finally:
        server.stop()


def post(sock: socket.socket, texts: list[str]) -> None:
    """Send one /embed request for `texts` on a kept-alive connection."""
    body = json.dumps({"message": texts}, separators=(",", ":")).encode()
    sock.sendall(b"POST /embed HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                 + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)


def read_json(sock: socket.socket) -> dict:
    """One whole response's JSON body."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += sock.recv(65536)
    return json.loads(body)


@pytest.mark.parametrize("inline", ["on", "off"])
def test_requests_arriving_together_on_many_connections_each_get_their_own_vectors(tmp_path, encoder, inline):
    # One worker: on the event loop (SMLS_INLINE=on) the requests of a turn share passes,
    # each in a greenlet; a mix-up between them would give a request another's vectors.
    server = start_server(tmp_path, workers=1, SMLS_INLINE=inline)
    port = int(server.url.rsplit(":", 1)[1])
    topics = ["tides", "tax law", "violins", "volcanoes", "chess", "bread", "satellites", "bees"]
    try:
        conns = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in topics]
        for round_ in range(3):
            asked = [[f"a sentence about {topic}", f"round {round_}: more on {topic}"][: 1 + i % 2] for i, topic in enumerate(topics)]
            for sock, texts in zip(conns, asked, strict=True):
                post(sock, texts)
            for sock, texts in zip(conns, asked, strict=True):
                got = np.array(read_json(sock)["embeddings"], np.float32)
                alone = encoder.run(texts, normalize=True)
                assert got.shape == alone.shape
                assert ((got * alone).sum(1) / np.linalg.norm(got, axis=1)).min() > 0.999
        for sock in conns:
            sock.close()
    finally:
        server.stop()


def test_a_client_that_does_not_read_its_answer_holds_up_no_one(tmp_path):
    # On the event loop a response the client cannot take yet is kept and sent as it
    # reads; waiting for it there would stop every other connection of the worker.
    server = start_server(tmp_path, workers=1, SMLS_INLINE="on", SMLS_INLINE_BYTES="4096")
    port = int(server.url.rsplit(":", 1)[1])
    try:
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect(("127.0.0.1", port))
        texts = ["a"] * 1000  # 4 KB of request (answered on the loop), 4.7 MB of response: more than the socket takes
        post(slow, texts)
        time.sleep(1)  # answered, and stuck in the socket
        start = time.monotonic()
        r = requests.post(server.url + "/embed", json={"message": ["meanwhile"]}, timeout=30)
        assert r.status_code == 200 and time.monotonic() - start < 2
        slow.settimeout(30)
        assert len(read_json(slow)["embeddings"]) == 1000  # all of it, once the client reads
        post(slow, ["and the connection is kept alive"])
        assert len(read_json(slow)["embeddings"]) == 1
        slow.close()
    finally:
        server.stop()


def test_a_body_sent_apart_from_its_head_is_answered_on_the_loop_and_a_late_one_on_a_thread(tmp_path):
    # Python's requests (urllib3) writes a request's head and its body separately: the
    # loop waits a moment for the body rather than hand the request to a thread. A body
    # that does not come goes to a thread after that moment, and gets its 408 there.
    server = start_server(tmp_path, workers=1, SMLS_INLINE="on", SMLS_CLIENT_TIMEOUT="3")
    port = int(server.url.rsplit(":", 1)[1])
    head, body = REQUEST.split(b"\r\n\r\n", 1)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(head + b"\r\n\r\n")
            time.sleep(0.3)
            sock.sendall(body)
            assert read_response(sock).startswith(b"HTTP/1.1 200")
        assert live_counter(server.url, "smls_lane_requests_total{") == 1
        with socket.create_connection(("127.0.0.1", port), timeout=30) as late:
            late.sendall(head + b"\r\n\r\n" + body[:5])
            started = time.monotonic()
            time.sleep(0.2)
            r = requests.post(server.url + "/embed", json={"message": ["meanwhile"]}, timeout=30)  # the loop is not held up
            assert r.status_code == 200 and time.monotonic() - started < 1
            answer = read_response(late)
            waited = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 408 ") and b"request_timeout" in answer, answer[:300]
        assert 2 < waited < 8
        assert live_counter(server.url, "smls_lane_requests_total{") == 2  # the request sent by requests, not the late one
    finally:
        server.stop()


SIZED_HEAD = b"HTTP/1.1 200 OK\r\nServer: gunicorn\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n"


def adopted_pair() -> tuple[DeadlineSocket, socket.socket]:
    """A request thread's socket (blocking, as gthread sets it) and its client's end."""
    ours, theirs = socket.socketpair()
    sock = DeadlineSocket.adopt(ours, 5.0)
    sock.setblocking(True)
    theirs.settimeout(5)
    return sock, theirs


def waiting(sock: socket.socket) -> bytes:
    """What the client could read now (waiting a moment for it)."""
    readable, _, _ = select.select([sock], [], [], 0.05)
    return sock.recv(1 << 20) if readable else b""


@pytest.mark.parametrize(
    ("data", "held"),
    [
        (SIZED_HEAD, True),
        (SIZED_HEAD.replace(b"Content-Length", b"content-length"), True),
        (SIZED_HEAD.replace(b"Content-Length: 11", b"Content-Length: 0"), False),  # no body will follow
        (SIZED_HEAD.replace(b"Content-Length: 11", b"Transfer-Encoding: chunked"), False),  # a stream: its first chunk may be a while
        (b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n", False),
        (SIZED_HEAD[:-2], False),  # not a whole head
        (b'{"ok":true}', False),
    ],
)
def test_a_thread_holds_only_the_head_of_an_answer_with_a_body_to_come(data, held):
    assert is_head_of_sized_body(data) is held
    sock, client = adopted_pair()
    sock.sendall(data)
    assert waiting(client) == (b"" if held else data)
    sock.flush_held()  # (what the worker does when a request thread is done)
    assert waiting(client) == (data if held else b"")


def test_a_held_head_goes_out_with_the_body_and_before_anything_else():
    sock, client = adopted_pair()
    sock.sendall(SIZED_HEAD)
    sock.sendall(b'{"ok":true}')
    assert waiting(client) == SIZED_HEAD + b'{"ok":true}'
    sock.flush_held()  # nothing held: nothing sent
    assert waiting(client) == b""

    # A body bigger than the socket takes at once: the rest follows, in order, as the client reads.
    body = bytes(range(256)) * 20_000
    sock.sendall(SIZED_HEAD.replace(b"11", str(len(body)).encode()))
    received = bytearray()
    reader = threading.Thread(target=lambda: [received.extend(client.recv(1 << 16)) for _ in iter(lambda: len(received) < len(SIZED_HEAD) + len(body), False)])
    reader.start()
    sock.sendall(memoryview(body))
    reader.join(10)
    assert bytes(received) == SIZED_HEAD.replace(b"11", str(len(body)).encode()) + body


def test_a_held_head_goes_out_before_a_file_sent_from_the_file(tmp_path):
    # gunicorn sends a wsgi.file_wrapper's file with socket.sendfile, past sendall.
    path = tmp_path / "file"
    path.write_bytes(b"x" * 11)
    sock, client = adopted_pair()
    sock.sendall(SIZED_HEAD)
    with path.open("rb") as file:
        assert sock.sendfile(file) == 11
    assert waiting(client) == SIZED_HEAD + b"x" * 11


def test_on_a_thread_a_small_answer_arrives_whole_and_a_head_alone_arrives(tmp_path):
    server = start_server(tmp_path, workers=1, SMLS_INLINE="off")  # every request on a request thread
    port = int(server.url.rsplit(":", 1)[1])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            for _ in range(20):
                sock.sendall(REQUEST)
                first = sock.recv(1 << 20)  # the head and the body left in one send: one read has both
                head, _, body = first.partition(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200") and body, f"the first read had the head alone: {first[:200]!r}"
                assert len(json.loads(body)["embeddings"]) == 1
            sock.sendall(b"HEAD /health HTTP/1.1\r\nHost: test\r\n\r\n")  # a head with a length, and no body to follow
            head = sock.recv(1 << 20)
            assert head.startswith(b"HTTP/1.1 200") and head.endswith(b"\r\n\r\n") and b"Content-Length: " in head
            sock.sendall(b"GET /docs/static/swagger-ui-bundle.js HTTP/1.1\r\nHost: test\r\n\r\n")  # more than one send takes
            bundle = read_response(sock)
            assert len(bundle.partition(b"\r\n\r\n")[2]) > 1_000_000
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")  # and the connection is still in step
            assert read_response(sock).startswith(b"HTTP/1.1 200")
    finally:
        server.stop()
