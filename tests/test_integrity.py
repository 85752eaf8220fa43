"""Input integrity through a real gunicorn: a cut-off body is never embedded, and every bad input gets one clear contract.

One test (or group) per numbered item of the input-integrity issue; each failed on the code before it.
"""

from __future__ import annotations

import json
import re
import socket
import time

import numpy as np
import pytest
import requests

from tests.helpers import start_server

pytestmark = pytest.mark.live

FORM = "application/x-www-form-urlencoded"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One worker that gives a client 2 s to send a request, and an API key (public routes stay public)."""
    tmp = tmp_path_factory.mktemp("integrity")
    srv = start_server(tmp, workers=1, SMLS_CLIENT_TIMEOUT="2", SMLS_API_KEY="integrity-test-key-0123456789", SMLS_CACHE_DIR=str(tmp / "cache"))
    yield srv
    srv.stop()


AUTH = {"Authorization": "Bearer integrity-test-key-0123456789"}


def raw_exchange(server, request: bytes, *, shut_write: bool = False, pause: float = 0.0, rest: bytes = b"") -> tuple[int, dict, bytes]:
    """Send raw bytes (optionally shut the write side, or pause and send more); return status, headers, body."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as s:
        s.sendall(request)
        if pause:
            time.sleep(pause)
            try:
                s.sendall(rest)
            except OSError:
                pass
        if shut_write:
            s.shutdown(socket.SHUT_WR)
        s.settimeout(20)
        answer = b""
        try:
            while chunk := s.recv(65536):
                answer += chunk
                if b"\r\n\r\n" in answer:
                    head, _, body = answer.partition(b"\r\n\r\n")
                    length = re.search(rb"(?i)content-length: (\d+)", head)
                    if length and len(body) >= int(length.group(1)):
                        break
        except (ConnectionResetError, TimeoutError):
            pass
    assert answer, "no answer at all"
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def head_for(path: str, content_type: str, length: int, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {AUTH['Authorization']}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n{extra}\r\n"
    ).encode()


def error(response) -> dict:
    assert response.headers["Content-Type"].startswith("application/json"), response.headers
    return response.json()["error"]


# 1. A body that stops early is never embedded.
MULTIPART = (
    b'--XyZ\r\nContent-Disposition: form-data; name="message"\r\n\r\nfirst\r\n'
    b'--XyZ\r\nContent-Disposition: form-data; name="message"\r\n\r\nsecond\r\n--XyZ--\r\n'
)


@pytest.mark.parametrize(
    ("path", "content_type", "body"),
    [
        ("/embed", FORM, b"message=first&message=second"),
        ("/embed", "application/json", b'{"message": ["first", "second"]}'),
        ("/embed", "multipart/form-data; boundary=XyZ", MULTIPART),
        ("/v1/embeddings", "application/json", b'{"input": ["first", "second"]}'),
    ],
)
def test_a_body_shorter_than_its_content_length_is_refused(server, path, content_type, body):
    cut = body[: len(body) - 5]
    status, headers, answer = raw_exchange(server, head_for(path, content_type, len(body)) + cut, shut_write=True)
    assert status == 400, answer
    payload = json.loads(answer)["error"]
    assert payload["code"] == "incomplete_body"
    assert f"{len(cut)} of the {len(body)} bytes" in payload["message"]


def test_a_chunked_body_without_its_last_chunk_is_refused(server):
    request = (
        f"POST /embed HTTP/1.1\r\nHost: x\r\nAuthorization: {AUTH['Authorization']}\r\nContent-Type: {FORM}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode() + b"1c\r\nmessage=first&message=second\r\n"
    status, _, answer = raw_exchange(server, request, shut_write=True)
    assert status == 400 and json.loads(answer)["error"]["code"] == "incomplete_body", answer


def test_a_complete_body_still_works_after_those(server):
    r = requests.post(server.url + "/embed", data="message=first&message=second", headers={**AUTH, "Content-Type": FORM}, timeout=30)
    assert r.status_code == 200 and len(r.json()["embeddings"]) == 2


# 2. Lone surrogates are invalid_text, naming the item, on every route that takes texts.
JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "where"),
    [
        ("POST", "/embed", {"data": {"message": "['ok', '\\ud800']"}}, "message item 1"),  # Python-style list in a form
        ("POST", "/embed", {"data": {"message": '["\\ud800"]'}}, "message item 0"),  # a JSON array in a form field
        ("POST", "/embed", {"files": {"message": (None, "['\\udfff', 'ok']")}}, "message item 0"),  # multipart
        ("POST", "/embed", {"data": b'{"message": ["ok", "ok", "x\\ud800"]}', "headers": JSON}, "message item 2"),
        ("POST", "/v1/embeddings", {"data": b'{"input": "\\ud800"}', "headers": JSON}, "input"),
        ("POST", "/v1/embeddings", {"data": b'{"input": ["ok", "\\ud800"]}', "headers": JSON}, "input item 1"),
        ("POST", "/rerank", {"data": b'{"query": "q\\ud800", "documents": ["a"]}', "headers": JSON}, "query"),
        ("POST", "/rerank", {"data": b'{"query": "q", "documents": [{"text": "\\udc00"}]}', "headers": JSON}, "documents item 0, field 'text'"),
        ("POST", "/tokenize", {"data": b'{"text": ["ok", "\\udfff"]}', "headers": JSON}, "text item 1"),
        ("POST", "/embed", {"data": b'{"message": "ok", "prompt": "q\\ud800: "}', "headers": JSON}, "prompt"),
        ("POST", "/v1/embeddings", {"data": b'{"input": "ok", "prompt_name": "\\ud800"}', "headers": JSON}, "prompt_name"),
        # Found as a hostile client would: this upload was a 500 (orjson.dumps of the texts).
        ("PUT", "/documents/surrogate", {"data": b'{"texts": [{"text": "a\\ud800", "pages": []}], "pages": []}', "headers": JSON},
         "texts item 0, field 'text'"),
        ("PUT", "/documents/surrogate", {"data": b'{"texts": [{"text": "a", "pages": ["p"]}], "pages": [{"id": "p\\ud800", "page_number": 1}]}',
                                         "headers": JSON}, "pages item 0, field 'id'"),
    ],
)
def test_lone_surrogates_are_invalid_text_naming_the_item(server, method, path, kwargs, where):
    headers = {**AUTH, **kwargs.pop("headers", {})}
    r = requests.request(method, server.url + path, headers=headers, timeout=30, **kwargs)
    assert r.status_code == 400, r.text
    body = r.json()["error"]
    assert body["code"] == "invalid_text"
    assert f"{where} is not valid Unicode text" in body["message"]


# 3. A body slower than SMLS_CLIENT_TIMEOUT gets 408 request_timeout.
@pytest.mark.parametrize("content_type", [FORM, "application/json", "multipart/form-data; boundary=XyZ"])
def test_a_body_slower_than_the_client_timeout_is_408(server, content_type):
    started = time.monotonic()
    status, headers, answer = raw_exchange(server, head_for("/embed", content_type, 100) + b"message=half", pause=4, rest=b"way")
    assert status == 408, answer
    assert json.loads(answer)["error"]["code"] == "request_timeout"
    assert "x-request-id" in headers
    assert time.monotonic() - started < 10


# 4. Invalid UTF-8 in a multipart part or in a query string's percent-escapes.
def test_invalid_utf8_in_a_multipart_part_is_refused(server):
    r = requests.post(server.url + "/embed", files={"message": (None, b"caf\xe9")}, headers=AUTH, timeout=30)
    assert r.status_code == 400 and error(r)["code"] == "invalid_encoding"
    assert "'message'" in error(r)["message"]


@pytest.mark.parametrize("path", ["/documents/demo/search?q=%ED%A0%80", "/documents/demo/search?q=caf%E9", "/embed?precision=%FF"])
def test_invalid_utf8_in_the_query_string_is_refused(server, path):
    method = requests.post if path.startswith("/embed") else requests.get
    r = method(server.url + path, data={"message": "hi"}, headers=AUTH, timeout=30)
    assert r.status_code == 400 and error(r)["code"] == "invalid_encoding"


# 5. Unknown option names are refused with a did-you-mean; conflicting values too.
@pytest.mark.parametrize(
    ("kwargs", "path", "hint"),
    [
        ({"data": {"message": "hi", "normalise": "true"}}, "/embed", "did you mean 'normalize'?"),
        ({"data": {"message": "hi", "dimension": "8"}}, "/embed", "did you mean 'dimensions'?"),
        ({"data": {"message": "hi"}}, "/embed?precison=int8", "did you mean 'precision'?"),
        ({"json": {"message": "hi", "encodng": "base64"}}, "/embed", "did you mean 'encoding'?"),
        ({"files": {"message": (None, "hi"), "normalise": (None, "1")}}, "/embed", "did you mean 'normalize'?"),
        ({"json": {"input": "hi", "dimension": 8}}, "/v1/embeddings", "did you mean 'dimensions'?"),
        ({}, "GET /documents/demo?normalise=1", "did you mean 'normalize'?"),
        ({}, "GET /documents/demo/search?q=whale&kk=3", "did you mean 'k'?"),
    ],
)
def test_unknown_option_names_are_refused_with_a_suggestion(server, kwargs, path, hint):
    method, _, path = path.rpartition(" ")
    r = requests.request(method or "POST", server.url + path, headers=AUTH, timeout=30, **kwargs)
    assert r.status_code == 400, r.text
    body = r.json()["error"]  # (OpenAI's shape on /v1/ has code and message too)
    assert body["code"] == "unknown_field" and hint in body["message"]


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"json": {"message": "hi", "precision": "float32"}}, "/embed?precision=int8"),
        ({"data": {"message": "hi", "normalize": "true"}}, "/embed?normalize=false"),
        ({"data": [("message", "hi"), ("dimensions", "8"), ("dimensions", "16")]}, "/embed"),
        ({"data": {"message": "hi"}}, "/embed?encoding=json&encoding=base64"),
        ({}, "GET /documents/demo/search?q=whale&k=1&k=2"),
    ],
)
def test_conflicting_values_of_one_option_are_refused(server, kwargs, path):
    method, _, path = path.rpartition(" ")
    r = requests.request(method or "POST", server.url + path, headers=AUTH, timeout=30, **kwargs)
    assert r.status_code == 400, r.text
    assert error(r)["code"] == "conflicting_option" and "two different values" in error(r)["message"]


def test_the_same_value_in_two_places_agrees(server):
    r = requests.post(server.url + "/embed?normalize=1&dimensions=8", json={"message": "hi", "normalize": True, "dimensions": 8}, headers=AUTH, timeout=30)
    assert r.status_code == 200 and r.json()["dimension"] == 8 and r.json()["normalized"] is True


# 6. Errors in the client's vocabulary; null means "not given" for every option.
@pytest.mark.parametrize(
    ("kwargs", "path", "expected"),
    [
        ({"json": {"message": {"a": 1}}}, "/embed", "'message' is an object; it must be a string or a list of strings"),
        ({"data": {"message": "['a', ...]"}}, "/embed", "message item 1 is '...' (not in quotes); every item must be a quoted string"),
        ({"data": {"message": "['a', f'{x}']"}}, "/embed", "message item 1 is an f-string; every item must be a quoted string"),
        ({"json": {"message": "a", "normalize": None, "precision": 3}}, "/embed", "option 'precision' must be one of float32, int8, uint8, binary, ubinary, got 3"),
        ({"json": {"message": "a", "normalize": "maybe"}}, "/embed", "option 'normalize' must be true or false, got \"maybe\""),
        ({"json": {"message": "a", "dimensions": False}}, "/embed", "option 'dimensions' must be an integer, got false"),
        ({"json": {"input": ["ok", 5]}}, "/v1/embeddings", "input item 1 is a number; every item must be a string"),
        ({"json": {"input": []}}, "/v1/embeddings", "input is an empty list; send at least one text"),
        ({"json": {"input": None}}, "/v1/embeddings", "'input' is null in the JSON body"),
    ],
)
def test_error_messages_speak_the_clients_words(server, kwargs, path, expected):
    r = requests.post(server.url + path, headers=AUTH, timeout=30, **kwargs)
    assert r.status_code == 400, r.text
    payload = r.json()["error"]
    assert expected in payload["message"]
    assert not re.search(r"\b(a object|ellipsis|JoinedStr|got None|got False|got True|NoneType|str|dict)\b", payload["message"])


def test_null_means_not_given_for_every_option(server):
    r = requests.post(server.url + "/embed", json={"message": "hi", "normalize": None, "dimensions": None, "precision": None, "encoding": None}, headers=AUTH, timeout=30)
    assert r.status_code == 200, r.text
    assert {k: r.json()[k] for k in ("dimension", "normalized", "precision", "encoding")} == {"dimension": 384, "normalized": False, "precision": "float32", "encoding": "json"}
    r = requests.post(server.url + "/v1/embeddings", json={"input": "hi", "model": None, "dimensions": None, "encoding_format": None, "user": None}, headers=AUTH, timeout=30)
    assert r.status_code == 200 and len(r.json()["data"][0]["embedding"]) == 384


# 7. Every response is JSON or has no body: redirects and OPTIONS included.
def test_a_double_slash_is_a_json_404_not_an_html_redirect(server):
    r = requests.get(server.url + "/documents//demo", headers=AUTH, timeout=30, allow_redirects=False)
    assert r.status_code == 404 and error(r)["code"] == "not_found"


@pytest.mark.parametrize("path", ["/embed", "/v1/embeddings", "/documents/demo", "/health"])
def test_options_has_no_body(server, path):
    r = requests.options(server.url + path, headers=AUTH, timeout=30)
    assert r.status_code == 204 and r.content == b""
    assert "Content-Type" not in r.headers and "OPTIONS" in r.headers["Allow"]


# 8. A whitespace-only text is refused like an empty one.
@pytest.mark.parametrize(("kwargs", "path"), [({"json": {"message": "   "}}, "/embed"), ({"data": {"message": "\t \n"}}, "/embed"), ({"json": {"input": ["ok", "  "]}}, "/v1/embeddings")])
def test_whitespace_only_texts_are_refused_like_empty_ones(server, kwargs, path):
    r = requests.post(server.url + path, headers=AUTH, timeout=30, **kwargs)
    assert r.status_code == 400, r.text
    assert "only whitespace" in r.json()["error"]["message"]


def test_blank_search_query_is_refused(server):
    r = requests.get(server.url + "/documents/demo/search?q=%20%20", headers=AUTH, timeout=30)
    assert r.status_code == 400 and error(r)["code"] == "missing_query"


# 9. /ready is public like /health, even with an API key.
def test_ready_needs_no_key(server):
    assert requests.get(server.url + "/ready", timeout=30).status_code == 200
    assert requests.get(server.url + "/health", timeout=30).status_code == 200
    assert requests.get(server.url + "/models", timeout=30).status_code == 401


# 10. curl -F message=@file.txt: one text per line.
def test_a_text_file_sent_as_message_is_one_text_per_line(server):
    lines = ["The whale surfaced at dawn.", "", "Call me Ishmael.", "   ", "A third line, with a comma"]
    upload = requests.post(server.url + "/embed", files={"message": ("sentences.txt", "\r\n".join(lines).encode())}, headers=AUTH, timeout=30)
    assert upload.status_code == 200, upload.text
    as_json = requests.post(server.url + "/embed", json={"message": [line for line in lines if line.strip()]}, headers=AUTH, timeout=30)
    assert len(upload.json()["embeddings"]) == 3
    np.testing.assert_allclose(upload.json()["embeddings"], as_json.json()["embeddings"], atol=1e-6)


def test_an_empty_or_binary_file_is_a_clear_error(server):
    empty = requests.post(server.url + "/embed", files={"message": ("empty.txt", b"\n\n")}, headers=AUTH, timeout=30)
    assert empty.status_code == 400 and "holds no text" in error(empty)["message"]
    binary = requests.post(server.url + "/embed", files={"message": ("img.png", b"\x89PNG\r\n\x1a\n\xff")}, headers=AUTH, timeout=30)
    assert binary.status_code == 400 and error(binary)["code"] == "invalid_encoding" and "img.png" in error(binary)["message"]
