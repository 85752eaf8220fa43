"""The event loop's direct path (smls.direct): what it takes, and that it builds and writes what gunicorn does.

In process, each request head it takes is also parsed by gunicorn's own parser and
turned into an environ by gunicorn's wsgi.create; each answer is also written by
gunicorn's Response: the two must agree. Live, with the real model, requests the path
takes and the same requests made to go through gunicorn's parser answer alike, on kept-
alive and pipelined connections, and gunicorn's access log records both the same way.
"""

from __future__ import annotations

import socket
import time
from datetime import timedelta

import orjson
import pytest
import requests
from gunicorn import util
from gunicorn.config import Config
from gunicorn.glogging import Logger
from gunicorn.http import wsgi
from gunicorn.http.parser import RequestParser

from smls import direct
from smls.web.endpoints import ENDPOINTS
from tests.helpers import live_counter, start_server

# The paths the app declares fast (the worker reads the same set from the app).
_INLINE_PATHS = frozenset(e.rule.encode() for e in ENDPOINTS if e.fast)

CLIENT, SERVER = ("127.0.0.1", 40000), ("127.0.0.1", 8000)
BODY = b'{"message": ["Hello world!"]}'
SECURE = Config().secure_scheme_headers  # gunicorn's defaults, for a trusted peer


def head(*lines: str, path: str = "/embed", body: bytes = BODY, version: str = "HTTP/1.1") -> bytes:
    """A POST with these header lines (and Content-Length, unless one is among them)."""
    if not any(line.lower().startswith("content-length:") for line in lines):
        lines = (*lines, f"Content-Length: {len(body)}")
    return f"POST {path} {version}\r\n".encode() + "".join(f"{line}\r\n" for line in lines).encode("latin-1") + b"\r\n" + body


def parse(data: bytes, scheme_headers: dict[str, str] | None = None) -> direct.Request | None:
    return direct.parse(data, _INLINE_PATHS, direct.Limits.of(Config()), SECURE if scheme_headers is None else scheme_headers)


# What clients send: curl, Python's requests, wrk, a proxy (nginx, as deploy/nginx.conf sets it up).
TAKEN = {
    "curl": head("Host: localhost:8000", "User-Agent: curl/7.88.1", "Accept: */*", "Content-Type: application/json"),
    "requests": head("Host: 127.0.0.1:8000", "User-Agent: python-requests/2.32.3", "Accept-Encoding: gzip, deflate", "Accept: */*",
                     "Connection: keep-alive", "Content-Type: application/json"),
    "wrk": head("Host: 127.0.0.1:8000", "Content-Type: application/json"),
    "nginx": head("Host: example.org", "X-Request-Id: abc-123", "X-Forwarded-For: 10.0.0.7", "X-Forwarded-Proto: https",
                  "Content-Type: application/json", "Authorization: Bearer s3cret"),
    "openai": head("Host: h", "Content-Type: application/json", path="/v1/embeddings", body=b'{"input": "hi"}'),
    "no body type": head("Host: h"),
    "spaces and tabs": head("Host:  h \t", "Content-Type:\tapplication/json"),
    "empty value": head("Host: h", "X-Empty:", "Content-Type: application/json"),
}

# Anything else is left to gunicorn's parser, which judges it as it always has.
LEFT = {
    "HTTP/1.0": head("Host: h", version="HTTP/1.0"),
    "a query": head("Host: h", path="/embed?x=1"),
    "another route": head("Host: h", path="/health"),
    "a longer path": head("Host: h", path="/embed/"),
    "chunked": head("Host: h", "Transfer-Encoding: chunked"),
    "Expect": head("Host: h", "Expect: 100-continue"),
    "Upgrade": head("Host: h", "Upgrade: h2c", "HTTP2-Settings: AAMAAABkAAQAAP__"),
    "Connection: close": head("Host: h", "Connection: close"),
    "Connection with a list": head("Host: h", "Connection: keep-alive, Upgrade"),
    "a repeated header": head("Host: h", "Accept: a", "Accept: b"),
    "two lengths": head("Host: h", f"Content-Length: {len(BODY)}", f"Content-Length: {len(BODY)}"),
    "a signed length": head("Host: h", f"Content-Length: +{len(BODY)}"),
    "a short body": head("Host: h", f"Content-Length: {len(BODY) + 1}"),
    "a long body": head("Host: h", f"Content-Length: {len(BODY) - 1}"),
    "no length": head("Host: h", "Content-Length:"),
    "an underscore": head("Host: h", "X_Forwarded_For: 1.2.3.4"),
    "a space before the colon": head("Host: h", "Accept : x"),
    "no colon": head("Host: h", "Accept x"),
    "folded": head("Host: h", "Accept: a", " b"),
    "a control character": head("Host: h", "Accept: a\x01b"),
    "a non-ASCII value": head("Host: h", "Accept: caf\xe9"),
    "two schemes": head("Host: h", "X-Forwarded-Proto: https", "X-Forwarded-Ssl: on"),
    "lowercase method": b"post" + head("Host: h")[4:],
    "a bare LF": head("Host: h").replace(b"Host: h\r\n", b"Host: h\n"),
    "a long header": head("Host: h", "X-Big: " + "a" * 8200),
    "too many headers": head(*(f"X-H{i}: v" for i in range(100))),
}


@pytest.mark.parametrize("name", TAKEN)
def test_the_path_takes_plain_requests_as_gunicorn_reads_them(name):
    data = TAKEN[name]
    request = parse(data)
    assert request is not None
    ours = direct.environ(request, wsgi.base_environ(Config()), CLIENT, SERVER, sock=None)
    gunicorn_request = next(RequestParser(Config(), iter([data]), CLIENT))
    _, theirs = wsgi.create(gunicorn_request, None, CLIENT, SERVER, Config())
    assert ours.pop("wsgi.input").read() == theirs.pop("wsgi.input").read() == data.split(b"\r\n\r\n", 1)[1]
    for key in ("wsgi.errors", "wsgi.early_hints"):  # an object per request in gunicorn; early hints: no smls route sends them
        theirs.pop(key)
        ours.pop(key, None)
    assert ours == theirs
    assert request.headers == gunicorn_request.headers


def test_a_scheme_header_counts_only_from_a_trusted_proxy_as_in_gunicorn():
    data = TAKEN["nginx"]
    trusted, untrusted = parse(data), parse(data, scheme_headers={})
    assert trusted is not None and untrusted is not None
    assert (trusted.scheme, untrusted.scheme) == ("https", "http")
    for request, client in ((trusted, CLIENT), (untrusted, ("10.9.8.7", 5000))):  # gunicorn trusts 127.0.0.1 only
        ours = direct.environ(request, wsgi.base_environ(Config()), client, SERVER, sock=None)
        _, theirs = wsgi.create(next(RequestParser(Config(), iter([data]), client)), None, client, SERVER, Config())
        assert ours["wsgi.url_scheme"] == theirs["wsgi.url_scheme"] and ours["HTTP_X_FORWARDED_PROTO"] == "https"


@pytest.mark.parametrize("name", LEFT)
def test_anything_unusual_is_left_to_gunicorns_parser(name):
    assert parse(LEFT[name]) is None


def test_limits_are_gunicorns_or_tighter():
    cfg = Config()
    cfg.set("limit_request_fields", 5)
    cfg.set("limit_request_line", 28)
    limits = direct.Limits.of(cfg)
    assert direct.parse(head("Host: h", "A: 1", "B: 2"), _INLINE_PATHS, limits, {}) is not None
    assert direct.parse(head("Host: h", "A: 1", "B: 2", "C: 3", "D: 4"), _INLINE_PATHS, limits, {}) is None
    assert direct.parse(head("Host: h", path="/v1/embeddings"), _INLINE_PATHS, limits, {}) is None  # its request line is 28 bytes


class Written:
    """A socket that keeps what gunicorn's Response writes to it."""

    def __init__(self) -> None:
        self.data = bytearray()

    def sendall(self, data: bytes) -> None:
        self.data += data


def gunicorns(status: str, headers: list[tuple[str, str]], body: bytes, keep_alive: bool) -> tuple[bytes, bool]:
    """What gunicorn's Response writes for the answer to TAKEN["curl"], and whether it keeps the connection."""
    sock = Written()
    resp = wsgi.Response(next(RequestParser(Config(), iter([TAKEN["curl"]]), CLIENT)), sock, Config())
    if not keep_alive:
        resp.force_close()
    resp.start_response(status, list(headers))
    resp.write(body)
    resp.close()
    return bytes(sock.data), not resp.should_close()


ANSWERS = [
    ("200 OK", [("Content-Type", "application/json"), ("Content-Length", "13"), ("X-Request-Id", "r1")], b'{"ok": true}\n'),
    ("503 SERVICE UNAVAILABLE", [("Content-Type", "application/json"), ("Retry-After", "1"), ("Content-Length", "2")], b"{}"),
    ("200 OK", [("Content-Length", "2"), ("Connection", "close"), ("Keep-Alive", "timeout=5"), ("Server", "x"), ("X-A", " padded\t")], b"{}"),
    ("200 OK", [("Content-Length", "2")], b"{}and more"),  # cut at its length
    ("204 NO CONTENT", [("Content-Length", "0")], b""),
]


@pytest.mark.parametrize("keep_alive", [True, False])
@pytest.mark.parametrize("answer", ANSWERS, ids=range(len(ANSWERS)))
def test_answers_are_written_as_gunicorns_response_writes_them(answer, keep_alive):
    status, headers, body = answer
    for _ in range(3):  # (the Date header: both within one second)
        ours = direct.response(direct.Answer(status, list(headers)), body, keep_alive)
        theirs = gunicorns(status, headers, body, keep_alive)
        if ours == theirs:
            break
    assert ours == theirs


def test_an_answer_without_a_length_gets_one_and_a_bad_header_is_refused():
    answer = direct.Answer("200 OK", [("Content-Type", "application/json")])
    data, keep_alive = direct.response(answer, b"{}", True)
    assert data.endswith(b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}") and keep_alive and answer.sent == 2
    with pytest.raises(ValueError):
        direct.response(direct.Answer("200 OK", [("X-A", "a\r\nSet-Cookie: b")]), b"", True)
    short, keep_alive = direct.response(direct.Answer("200 OK", [("Content-Length", "5")]), b"{}", True)
    assert not keep_alive and b"Connection: close\r\n" in short  # the client would wait for the rest


def test_the_access_log_reads_what_gunicorns_request_and_response_give_it():
    status, headers, body = ANSWERS[0]
    data = TAKEN["requests"]
    request = parse(data)
    assert request is not None
    answer = direct.Answer(status, list(headers))
    direct.response(answer, body, True)
    ours = Logger(Config()).atoms(answer, request, direct.environ(request, wsgi.base_environ(Config()), CLIENT, SERVER, sock=None), timedelta(0))
    gunicorn_request = next(RequestParser(Config(), iter([data]), CLIENT))
    resp, environ = wsgi.create(gunicorn_request, Written(), CLIENT, SERVER, Config())
    resp.start_response(status, list(headers))
    resp.write(body)
    resp.close()
    theirs = Logger(Config()).atoms(resp, gunicorn_request, environ, timedelta(0))
    objects = ("t", "{wsgi.input}e", "{wsgi.errors}e", "{gunicorn.socket}e", "{wsgi.early_hints}e")  # the time, and objects of each request
    assert {k: v for k, v in ours.items() if k not in objects} == {k: v for k, v in theirs.items() if k not in objects}
    assert ours["b"] == str(len(body))


def test_the_date_is_gunicorns():
    for _ in range(3):
        if direct.http_date() == util.http_date():
            return
    pytest.fail("the Date header differs from gunicorn's")


# Live, with the real model.


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("direct"), workers=1)
    yield srv
    srv.stop()


def direct_count(url: str) -> float:
    return live_counter(url, "smls_direct_requests_total ")


def exchange(url: str, *sends: bytes, responses: int = 1) -> list[bytes]:
    """On one new connection, send each of `sends` once the answers to the one before are read; `responses` answers to each (read whole)."""
    host, port = url.removeprefix("http://").split(":")
    answers = []
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        got = b""
        for data in sends:
            sock.sendall(data)
            for _ in range(responses):
                while b"\r\n\r\n" not in got:
                    chunk = sock.recv(65536)
                    assert chunk, "the server closed the connection"
                    got += chunk
                head_end = got.index(b"\r\n\r\n") + 4
                length = int(next(line.split(b":")[1] for line in got[:head_end].split(b"\r\n") if line.lower().startswith(b"content-length:")))
                while len(got) < head_end + length:
                    got += sock.recv(65536)
                answers.append(got[: head_end + length])
                got = got[head_end + length :]
    return answers


def without_date(response: bytes) -> bytes:
    return b"\r\n".join(line for line in response.split(b"\r\n") if not line.startswith(b"Date: "))


BODIES = [b'{"message": ["Hello world!"]}', b'{"message": ["a", "b"], "normalize": true}', b'{"message": []}', b'{"message": ["x"], "dimensions": 9999}',
          b'{"message": ["unclosed"', b'{"input": "hi"}']


@pytest.mark.live
def test_live_the_path_answers_as_gunicorns_parser_does(server):
    before = direct_count(server.url)
    for body in BODIES:
        path = "/v1/embeddings" if b'"input"' in body else "/embed"
        lines = ("Host: test", "X-Request-Id: direct-1", "Content-Type: application/json")
        taken = exchange(server.url, head(*lines, path=path, body=body))[0]
        parsed = exchange(server.url, head(*lines, "X_Gunicorn: 1", path=path, body=body))[0]  # an underscore: gunicorn's parser (which drops it)
        assert without_date(taken) == without_date(parsed), body
    assert direct_count(server.url) - before == len(BODIES)


@pytest.mark.live
def test_live_kept_alive_and_pipelined_requests_are_answered_in_order(server):
    one = head("Host: t", "Content-Type: application/json", body=b'{"message": ["one"]}')
    two = head("Host: t", "Content-Type: application/json", "X_Gunicorn: 1", body=b'{"message": ["two", "three"]}')
    three = head("Host: t", "Content-Type: application/json", path="/v1/embeddings", body=b'{"input": ["four"]}')
    for sends, responses, taken in (
        ((one, two, three, one), 1, 3),  # one after another on a kept-alive connection: all but `two` taken
        ((one + two + three + one,), 4, 1),  # pipelined: `one`; then gunicorn's parser has read ahead, and answers the rest
    ):
        before = direct_count(server.url)
        answers = exchange(server.url, *sends, responses=responses)
        assert [a.split(b"\r\n", 1)[0] for a in answers] == [b"HTTP/1.1 200 OK"] * 4
        payloads = [orjson.loads(a.split(b"\r\n\r\n", 1)[1]) for a in answers]
        assert [len(p["embeddings"]) if "embeddings" in p else len(p["data"]) for p in payloads] == [1, 2, 1, 1]
        assert direct_count(server.url) - before == taken


@pytest.mark.live
def test_live_a_request_asking_to_close_goes_to_gunicorn_which_closes(server):
    before = direct_count(server.url)
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head("Host: t", "Connection: close", "Content-Type: application/json"))
        got = b""
        while chunk := sock.recv(65536):  # until the server closes
            got += chunk
    assert got.startswith(b"HTTP/1.1 200 OK") and b"Connection: close\r\n" in got
    assert direct_count(server.url) == before


@pytest.mark.live
def test_live_the_access_log_records_both_paths_alike(server):
    for extra in ((), ("X_Gunicorn: 1",)):
        exchange(server.url, head("Host: t", "Content-Type: application/json", *extra, path="/v1/embeddings", body=b'{"input": "logged"}'))
    time.sleep(0.5)
    lines = [line.split(" ", 1)[1] for line in server.access_log.read_text().splitlines() if "/v1/embeddings" in line]
    assert lines[-2:] == ['"POST /v1/embeddings HTTP/1.1" 200'] * 2
    assert requests.get(server.url + "/health", timeout=10).status_code == 200


@pytest.mark.live
def test_live_max_requests_closes_a_kept_alive_connection_and_the_worker_restarts(tmp_path):
    # gthread's rule, kept by the direct path: the request that reaches --max-requests is
    # answered with Connection: close, and the worker then exits for a fresh one.
    srv = start_server(tmp_path, workers=1, gunicorn_args=("--max-requests", "6"))
    try:
        host, port = srv.url.removeprefix("http://").split(":")
        before = direct_count(srv.url)
        one = head("Host: t", "Content-Type: application/json", body=b'{"message": ["one"]}')
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            heads = []
            for _ in range(6):  # /health and /metrics count too: the worker's sixth request comes sooner
                sock.sendall(one)
                got = b""
                while b"\r\n\r\n" not in got and (chunk := sock.recv(65536)):
                    got += chunk
                heads.append(got.split(b"\r\n\r\n", 1)[0])
                if b"Connection: close" in heads[-1]:
                    break
            assert b"Connection: close" in heads[-1] and all(b"Connection: keep-alive" in h for h in heads[:-1])
            assert heads[-1].startswith(b"HTTP/1.1 200 OK")
        deadline = time.monotonic() + 60
        while "Autorestarting worker after current request." not in srv.error_log.read_text():
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert requests.post(srv.url + "/embed", json={"message": ["after"]}, timeout=60).status_code == 200  # a fresh worker
        assert direct_count(srv.url) - before >= len(heads)
    finally:
        srv.stop()
