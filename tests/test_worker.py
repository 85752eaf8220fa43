"""smls.worker on a live gunicorn: how a burst of kept-alive connections is shared between workers."""

from __future__ import annotations

import json
import socket
import time
from collections import Counter

import requests

from tests.conftest import start_server

BODY = json.dumps({"message": ["a burst of kept-alive connections"]}).encode()
REQUEST = (
    b"POST /embed HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
    + f"Content-Length: {len(BODY)}\r\n\r\n".encode() + BODY
)


def read_response(sock: socket.socket) -> bytes:
    """One whole HTTP response (head and Content-Length body) from a kept-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += sock.recv(65536)
    return head


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
