"""Hostile input against a live server with the default limits: big, many, deep, broken, slow. Nothing may crash or hang it."""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.helpers import start_server

pytestmark = pytest.mark.live


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    srv = start_server(tmp, workers=2, SMLS_CACHE_DIR=str(tmp / "cache"))
    yield srv
    srv.stop()


def post(server, data, content_type="application/json", timeout=60):
    start = time.monotonic()
    response = requests.post(server.url + "/embed", data=data, headers={"Content-Type": content_type}, timeout=timeout)
    return response, time.monotonic() - start


def error_code(response) -> str:
    return response.json()["error"]["code"]


def test_a_10_mb_body_is_refused_quickly(server):
    response, seconds = post(server, b'{"message": "' + b"a" * 10_000_000 + b'"}')
    assert response.status_code == 413 and error_code(response) == "body_too_large"
    assert seconds < 10


def test_100000_messages_are_refused(server):
    response, _ = post(server, b'{"message": [' + b",".join([b'"a"'] * 100_000) + b"]}")
    assert response.status_code == 413 and error_code(response) == "too_many_messages"
    form, _ = post(server, "&".join(["message=a"] * 100_000), "application/x-www-form-urlencoded")
    assert form.status_code == 413


def test_deeply_nested_json_is_400(server):
    response, _ = post(server, b'{"message": ' + b"[" * 200_000 + b"]" * 200_000 + b"}")
    assert response.status_code == 400 and error_code(response) == "invalid_json"


@pytest.mark.parametrize(("body", "content_type"), [(b'{"message": "caf\xe9"}', "application/json"), (b"message=caf%E9", "application/x-www-form-urlencoded"), (b"message=\xff\xfe", "application/x-www-form-urlencoded")])
def test_non_utf8_is_400(server, body, content_type):
    response, _ = post(server, body, content_type)
    assert response.status_code == 400 and error_code(response) == "invalid_encoding"


def test_nul_bytes_are_just_characters(server):
    response, _ = post(server, '{"message": ["a\\u0000b", "\\u0000"]}')
    assert response.status_code == 200 and len(response.json()["embeddings"]) == 2


def test_a_huge_single_string_is_truncated_not_fatal(server):
    text = "word " * 700_000  # 3.5 MB, one message
    response, seconds = post(server, requests.compat.json.dumps({"message": text}))
    assert response.status_code == 200 and response.json()["truncated"] == 1
    assert seconds < 60
    assert requests.get(server.url + "/health", timeout=10).status_code == 200


def test_slow_clients_do_not_starve_the_others(server):
    """20 connections that send a request one byte a second are cut off after SMLS_CLIENT_TIMEOUT (10 s)."""
    host, port = server.url.removeprefix("http://").split(":")
    stop = threading.Event()
    socks = []

    def dribble(sock):
        request = b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 20\r\n\r\n"
        for byte in request:
            if stop.is_set():
                return
            try:
                sock.send(bytes([byte]))
            except OSError:
                return
            time.sleep(1)

    began = time.monotonic()
    for _ in range(20):
        s = socket.create_connection((host, int(port)))
        socks.append(s)
        threading.Thread(target=dribble, args=(s,), daemon=True).start()
    try:
        time.sleep(2)
        for i in range(5):
            start = time.monotonic()
            # (A 503 would be a fair answer while the slow ones hold every thread; a client
            # that honours Retry-After gets through, within the 20 s bound below.)
            for _ in range(20):
                response = requests.post(server.url + "/embed", json={"message": f"hello {i}"}, headers={"Connection": "close"}, timeout=30)
                if response.status_code != 503 or time.monotonic() - start > 20:
                    break
                assert response.headers["Retry-After"] == "1"
                time.sleep(1)
            assert response.status_code == 200, response.text
            assert time.monotonic() - start < 20, "a normal request waited behind the slow ones"
        time.sleep(max(0.0, 13 - (time.monotonic() - began)))
        for s in socks:  # the server closed every one of them (recv gives EOF or a reset)
            s.settimeout(5)
            try:
                assert s.recv(1) == b""
            except ConnectionResetError:
                pass
    finally:
        stop.set()
        for s in socks:
            s.close()


def test_a_body_that_stops_half_way_is_cut_off(server):
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as s:
        s.sendall(b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n" + b'{"message": "hal')
        s.settimeout(30)
        start = time.monotonic()
        answer = b""
        try:
            while chunk := s.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
        assert time.monotonic() - start < 20
    # The client is still there to read it: a 408 in the JSON error shape, never a silent drop.
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b'"code":"request_timeout"' in answer


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        (b"GARBAGE\r\n\r\n", 400, "bad_http_request"),
        (b"GET / HTTP/7.1\r\nHost: x\r\n\r\n", 400, "bad_http_request"),
        (b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "uri_too_long"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9_000 + b"\r\n\r\n", 431, "headers_too_large"),
        (b"POST /embed HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400, "bad_http_request"),
    ],
)
def test_what_gunicorn_cannot_parse_is_answered_in_the_json_error_shape(server, raw, status, code):
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as s:
        s.sendall(raw)
        s.settimeout(10)
        answer = b""
        while chunk := s.recv(65536):  # gunicorn closes the connection after such an error
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith(f"HTTP/1.1 {status} ")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert headers["Content-Type"] == "application/json" and int(headers["Content-Length"]) == len(body)
    assert len(headers["X-Request-Id"]) == 32
    error = json.loads(body)["error"]
    assert (error["status"], error["code"]) == (status, code) and error["message"]


def test_a_whole_request_that_waited_past_the_client_timeout_for_a_thread_is_still_answered(tmp_path):
    """The receive deadline runs from the accept; a request that was all there gets read when a thread comes, not dropped."""
    srv = start_server(tmp_path, workers=1, SMLS_THREADS="1", SMLS_CLIENT_TIMEOUT="1", SMLS_CACHE_DIR=str(tmp_path / "cache"))
    try:
        big = [f"sentence {i} about the long voyage of a whaling ship across the southern ocean" for i in range(1500)]
        with ThreadPoolExecutor(1) as pool:
            busy = pool.submit(requests.post, srv.url + "/embed", json={"message": big}, timeout=120)
            time.sleep(0.3)  # the only request thread is now embedding 1500 sentences
            start = time.monotonic()
            response = requests.post(srv.url + "/embed", json={"message": "a short one"}, headers={"Connection": "close"}, timeout=120)
            waited = time.monotonic() - start
            assert busy.result().status_code == 200
        assert waited > 1.5, f"the short request should have queued past SMLS_CLIENT_TIMEOUT, waited {waited:.1f} s"
        assert response.status_code == 200
    finally:
        srv.stop()
