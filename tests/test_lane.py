"""The event loop's lane (smls.web.lane): the requests it takes get the answers Flask gives them, byte for byte.

In process, the same app answers each request twice: marked as answered on the event
loop (smls.inline, the lane) and not (Flask). Live, a gunicorn that answers on its loop
(SMLS_INLINE=on) and one that does not (off) answer the same requests alike. The real
model answers throughout.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import orjson
import pytest
import requests
from prometheus_client import REGISTRY

import smls
from smls.contract import INLINE_KEY, QUEUE_WAIT_KEY
from smls.serving.models import EmbeddingModel
from smls.web.endpoints import ENDPOINTS
from tests.helpers import live_counter, start_server

ID = {"X-Request-Id": "lane-test-1"}
JSON = {"Content-Type": "application/json"}

# (path, body): what the lane takes, good and bad; settings allow 8 messages (conftest).
TAKEN = [
    ("/embed", {"message": ["Hello world!", "How are you today?"]}),
    ("/embed", {"message": "one string"}),
    ("/embed", {"message": ["hi"], "normalize": True, "dimensions": 64}),
    ("/embed", {"message": ["hi", "there"], "precision": "int8", "encoding": "base64"}),
    ("/embed", {"message": ["hi"], "precision": "binary"}),
    ("/embed", {"message": ["hi"], "model": "all-MiniLM-L6-v2"}),
    ("/embed", {"message": ["hi"], "model": "nope"}),
    ("/embed", {"message": ["hi"], "model": 5}),
    ("/embed", {"message": ["hi"], "dimensions": 1000}),
    ("/embed", {"message": ["hi"], "colour": "blue"}),
    ("/embed", {"message": []}),
    ("/embed", {"message": ["x"] * 9}),
    ("/embed", {"message": ["ok", 7]}),
    ("/embed", {"text": "no message"}),
    ("/embed", ["not", "an", "object"]),
    ("/embed", b'{"message": ["unclosed"'),
    ("/embed", b'{"message": ["\\ud800"]}'),
    ("/embed", b"\xff\xfe not utf-8"),
    ("/v1/embeddings", {"input": "hello"}),
    ("/v1/embeddings", {"input": ["a", "b"], "encoding_format": "base64", "model": "all-MiniLM-L6-v2"}),
    ("/v1/embeddings", {"input": ["a"], "dimensions": 32}),
    ("/v1/embeddings", {"input": []}),
    ("/v1/embeddings", {"input": "x", "model": "nope"}),
    ("/v1/embeddings", {"input": "x", "user": 5, "extra": 1}),
    ("/rerank", {"query": "where?", "documents": ["here", "there"], "top_n": 1}),
    ("/rerank", {"query": "where?", "documents": ["here"], "model": "nope"}),
    ("/v1/rerank", {"query": "where?", "documents": []}),
    ("/v2/rerank", {"query": "where?", "documents": [{"text": "here"}], "return_documents": True}),
]
# Bodies every fast route is sent besides its example in the OpenAPI description: malformed, or not the route's shape.
ANY_ROUTE = [b"{}", b"[]", b"null", b'{"unclosed"', b"\xff\xfe not utf-8", b'{"x": "\\ud800"}', b'{"colour": "blue"}']
FAST = [e for e in ENDPOINTS if e.fast]


def raw(body: Any) -> bytes:
    return body if isinstance(body, bytes) else orjson.dumps(body)


def answer(client, path: str, body: bytes, *, inline: bool, headers: dict[str, str] | None = None, environ: dict[str, Any] | None = None, **kwargs):
    """One request through the app's whole WSGI stack, as the event loop (inline) or a request thread would pass it."""
    return client.post(path, data=body, headers={**JSON, **ID, **(headers or {})}, environ_overrides={INLINE_KEY: inline, **(environ or {})}, **kwargs)


def same(lane, flask) -> None:
    assert (lane.status, lane.data) == (flask.status, flask.data)
    assert list(lane.headers.items()) == list(flask.headers.items())


@pytest.fixture()
def counted(app):
    """The app, and a list that grows by one for every request Flask's hooks see."""
    seen: list[str] = []
    app.before_request(lambda: seen.append("flask"))
    return app, seen


@pytest.mark.parametrize(("path", "body"), TAKEN, ids=[f"{p} {raw(b)[:40]!r}" for p, b in TAKEN])
def test_the_lane_answers_as_flask_does(counted, path, body):
    app, seen = counted
    client = app.test_client()
    lane = answer(client, path, raw(body), inline=True)
    assert seen == []  # answered by the lane
    flask = answer(client, path, raw(body), inline=False)
    assert seen == ["flask"]
    same(lane, flask)


def test_every_fast_route_has_an_example_body_in_the_description(app):
    """So the test below can send each a good request without naming it: a new fast route needs an example."""
    paths = app.extensions["smls"].description["paths"]
    assert FAST and all("example" in paths[e.path]["post"]["requestBody"]["content"]["application/json"] for e in FAST)


@pytest.mark.parametrize("endpoint", FAST, ids=[e.rule for e in FAST])
def test_every_fast_route_answers_as_flask_does(counted, endpoint):
    """Driven by the endpoint table: the route's example, the example with an unknown field, and bodies any route must refuse."""
    app, seen = counted
    client = app.test_client()
    example = app.extensions["smls"].description["paths"][endpoint.path]["post"]["requestBody"]["content"]["application/json"]["example"]
    statuses = set()
    for body in [orjson.dumps(example), orjson.dumps({**example, "colour": "blue"}), *ANY_ROUTE]:
        seen.clear()
        lane = answer(client, endpoint.rule, body, inline=True)
        assert seen == [], body  # answered by the lane
        flask = answer(client, endpoint.rule, body, inline=False)
        assert seen == ["flask"]
        same(lane, flask)
        statuses.add(lane.status_code)
    assert 200 in statuses and statuses - {200}  # the example was answered, the rest refused


def test_an_answer_without_a_request_id_gets_a_fresh_one(counted):
    app, seen = counted
    client = app.test_client()
    got = {client.post("/embed", json={"message": "hi"}, environ_overrides={INLINE_KEY: True}).headers["X-Request-Id"] for _ in range(3)}
    assert seen == [] and len(got) == 3 and all(re.fullmatch(r"[0-9a-f]{32}", g) for g in got)


@pytest.mark.parametrize(
    ("path", "kwargs"),
    [
        ("/embed?normalize=true", {}),  # a query string
        ("/embed", {"headers": {"Content-Type": "application/json; charset=utf-8"}}),
        ("/embed", {"headers": {"Content-Type": "application/x-www-form-urlencoded"}}),
        ("/embed/", {}),
        ("/nothing", {}),
    ],
)
def test_anything_else_goes_on_to_flask(counted, path, kwargs):
    app, seen = counted
    r = app.test_client().post(path, data=b'{"message": "hi"}', environ_overrides={INLINE_KEY: True}, **{"headers": JSON, **kwargs})
    assert seen == ["flask"] and r.headers["Content-Type"] == "application/json"


def test_a_body_over_the_limit_goes_on_to_flask_which_refuses_it(counted, settings):
    app, seen = counted
    body = orjson.dumps({"message": ["x" * settings.max_body_bytes]})
    r = answer(app.test_client(), "/embed", body, inline=True)
    assert seen == ["flask"] and r.status_code == 413


def test_the_api_key_is_checked_as_flask_checks_it(settings, encoder):
    app = smls.create_app(replace(settings, api_key="sk-lane-test-key-0123456789"), encoder=encoder)
    client = app.test_client()
    for headers in ({}, {"Authorization": "Bearer wrong-key"}, {"Authorization": "Bearer sk-lane-test-key-0123456789"}):
        lane, flask = (answer(client, "/embed", b'{"message": "hi"}', inline=inline, headers=headers) for inline in (True, False))
        same(lane, flask)
    assert lane.status_code == 200
    assert answer(client, "/embed", b'{"message": "hi"}', inline=True).status_code == 401


def test_a_request_that_waited_out_its_time_is_shed_as_flask_sheds_it(counted, settings):
    app, _ = counted
    client = app.test_client()
    late = {QUEUE_WAIT_KEY: settings.request_timeout + 1}
    lane, flask = (answer(client, "/embed", b'{"message": "hi"}', inline=inline, environ=late) for inline in (True, False))
    same(lane, flask)
    assert lane.status_code == 503


def test_a_bug_is_a_logged_500_as_in_flask(counted, monkeypatch, caplog):
    app, _ = counted
    model = app.extensions["smls"].models[app.extensions["smls"].default]
    assert isinstance(model, EmbeddingModel)

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(model.batcher, "encode", broken)
    client = app.test_client()
    for path, body in (("/embed", b'{"message": "hi"}'), ("/v1/embeddings", b'{"input": "hi"}')):
        caplog.clear()
        lane = answer(client, path, body, inline=True)
        assert "unhandled error on POST " + path in caplog.text and "RuntimeError: a bug" in caplog.text
        same(lane, answer(client, path, body, inline=False))
        assert lane.status_code == 500


def test_the_lane_counts_its_requests_as_flask_does(counted, encoder):
    app, _ = counted
    client = app.test_client()

    def counts() -> list[float]:
        wanted = [("/embed", "200", encoder.name), ("/embed", "400", ""), ("/embed", "404", ""), ("/v1/embeddings", "200", encoder.name)]
        found = [REGISTRY.get_sample_value("smls_http_requests_total", {"route": r, "method": "POST", "status": s, "model": m}) or 0 for r, s, m in wanted]
        timed = [REGISTRY.get_sample_value("smls_http_request_duration_seconds_count", {"route": r}) or 0 for r in ("/embed", "/v1/embeddings")]
        return found + timed

    for inline in (True, False):
        before = counts()
        for path, body in (("/embed", b'{"message": "hi"}'), ("/embed", b'{"message": []}'), ("/embed", b'{"message": "hi", "model": "nope"}'), ("/v1/embeddings", b'{"input": "hi"}')):
            answer(client, path, body, inline=inline)
        assert [a - b for a, b in zip(counts(), before, strict=True)] == [1, 1, 1, 1, 3, 1]


def test_live_servers_answer_alike_on_their_loop_and_on_threads(tmp_path):
    """Through gunicorn, with the real model: the lane (SMLS_INLINE=on) and Flask on threads (off)."""
    for inline in ("on", "off"):
        (tmp_path / inline).mkdir()
    servers = {inline: start_server(tmp_path / inline, workers=1, SMLS_INLINE=inline, SMLS_MAX_MESSAGES="8") for inline in ("on", "off")}
    embedded = 0
    try:
        for path, body in TAKEN:
            on, off = (requests.post(servers[inline].url + path, data=raw(body), headers={**JSON, **ID}, timeout=30) for inline in ("on", "off"))
            assert (on.status_code, on.content) == (off.status_code, off.content), (path, body)
            drop = {"Date"}  # the only header that may differ
            assert [(k, v) for k, v in on.headers.items() if k not in drop] == [(k, v) for k, v in off.headers.items() if k not in drop]
            embedded += path == "/embed" and on.status_code == 200
        metrics = {inline: server_lines(servers[inline].url) for inline in ("on", "off")}
        assert metrics["on"] == metrics["off"] and metrics["on"]
        assert lane_count(servers["on"].url) == len(TAKEN) and lane_count(servers["off"].url) == 0  # the lane answered
        access = servers["on"].access_log.read_text()
        assert embedded >= 5 and access.count('"POST /embed HTTP/1.1" 200') == embedded  # gunicorn still logs them
    finally:
        for server in servers.values():
            server.stop()


def server_lines(url: str) -> list[str]:
    """The request counters of the fast routes in /metrics."""
    text = requests.get(url + "/metrics", timeout=30).text
    routes = tuple(f'route="{e.rule}"' for e in FAST)
    return sorted(line for line in text.splitlines() if line.startswith("smls_http_requests_total{") and any(r in line for r in routes))


def lane_count(url: str) -> float:
    """Requests the server's lane answered (smls_lane_requests_total, all routes)."""
    return live_counter(url, "smls_lane_requests_total{")
