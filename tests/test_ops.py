"""Readiness, model listing, the OpenAPI description and docs page, request ids and metrics (in-process)."""

from __future__ import annotations

import json
import os

import jsonschema
import orjson
import pytest

import smls
from smls import logs
from smls.web import warm_up
from tests.helpers import assert_error, counter


def test_ready_is_503_until_warmed_up_then_200(app):
    client = app.test_client()
    error = assert_error(client.get("/ready"), 503, "not_ready")
    assert "warming" in error["message"]
    assert client.get("/ready").headers["Retry-After"] == "1"
    warm_up(app)
    response = client.get("/ready")
    assert response.status_code == 200 and orjson.loads(response.data) == {"status": "ready"}


def test_models_lists_the_served_model_as_the_default(client, encoder):
    listed = orjson.loads(client.get("/models").data)
    assert listed["default"] == encoder.name
    assert listed["services"] == ["Reranker", "SentenceEncoder"]  # the services smls registers
    assert listed["models"] == [
        {
            "name": encoder.name,
            "kind": "embedding",
            "backend": encoder.backend,
            "dimension": 384,
            "max_seq_length": encoder.max_seq_length,
            "default": True,
            "service": "SentenceEncoder",
            "routes": ["/embed", "/v1/embeddings", "/documents/{doc_id}", "/documents/{doc_id}/search", "/rerank"],
            "precisions": ["float32", "int8", "uint8", "binary", "ubinary"],
            "encodings": ["json", "base64"],
            "truncation": "right",
            "prompts": {},
            "default_prompt_name": None,
            "dimensions_trained": False,
        }
    ]


def rules(app) -> set[str]:
    """Every route the app answers, in OpenAPI's {param} spelling."""
    out = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "ops.docs_static":  # Swagger UI's own files, not an API operation
            continue
        out.add(rule.rule.replace("<", "{").replace(">", "}"))
    return out


def test_openapi_lists_exactly_the_routes_the_server_has(client, app):
    spec = orjson.loads(client.get("/openapi.json").data)
    assert spec["openapi"].startswith("3.1")
    assert set(spec["paths"]) == rules(app)
    for path, item in spec["paths"].items():
        flask_path = path.replace("{", "<").replace("}", ">")
        methods = {m for r in app.url_map.iter_rules() if r.rule == flask_path for m in r.methods} - {"HEAD", "OPTIONS"}
        assert set(item) == {m.lower() for m in methods}, path


def test_the_index_page_lists_the_same_endpoints_as_the_description(client, app):
    listed = orjson.loads(client.get("/").data)["endpoints"]
    spec = orjson.loads(client.get("/openapi.json").data)
    described = {
        f"{method.upper()} {path.replace('{', '<').replace('}', '>')}": op["summary"] for path, item in spec["paths"].items() for method, op in item.items()
    }
    assert listed == described
    assert {key.split(" ", 1)[1] for key in listed} == {r.replace("{", "<").replace("}", ">") for r in rules(app)}


def schema_for(spec: dict, path: str, method: str, status: int) -> dict:
    """The response schema the description promises, with its $refs resolvable."""
    content = spec["paths"][path][method]["responses"][str(status)]["content"]
    return {**next(iter(content.values()))["schema"], "components": spec["components"]}


@pytest.fixture()
def demo_client(settings, encoder, tmp_path):
    """A client over a data folder holding a copy of the demo document."""
    import shutil

    for name in ("texts_demo.json", "pages_demo.csv"):
        shutil.copy(smls.config.Path("data") / name, settings.data_dir / name)
    return smls.create_app(settings, encoder=encoder).test_client()


CALLS = [
    ("/embed", "post", {"json": {"message": ["a", "b"]}}, 200),
    ("/embed", "post", {"json": {"message": "a", "precision": "int8", "encoding": "base64"}}, 200),
    ("/embed", "post", {"json": {"message": "a", "precision": "binary"}}, 200),
    ("/embed", "post", {"data": {"message": "['a', 'b']", "dimensions": "8"}}, 200),
    ("/embed", "post", {"json": {"message": []}}, 400),
    ("/embed", "post", {"data": b"x", "content_type": "text/plain"}, 415),
    ("/v1/embeddings", "post", {"json": {"input": ["a"]}}, 200),
    ("/v1/embeddings", "post", {"json": {"input": ["a"], "encoding_format": "base64"}}, 200),
    ("/v1/embeddings", "post", {"json": {"input": "a", "model": "other"}}, 404),
    ("/v1/models", "get", {}, 200),
    ("/models", "get", {}, 200),
    ("/rerank", "post", {"json": {"query": "q", "documents": ["a", {"text": "b"}], "return_documents": True}}, 200),
    ("/rerank", "post", {"json": {"query": "q", "documents": []}}, 400),
    ("/rerank", "post", {"json": {"query": "q", "documents": ["a"], "model": "other"}}, 404),
    ("/v1/rerank", "post", {"json": {"query": "q", "texts": ["a"], "top_n": 1}}, 200),
    ("/v1/rerank", "post", {"json": {"query": "q", "texts": ["a"], "model": "other"}}, 404),
    ("/v2/rerank", "post", {"json": {"query": "q", "documents": ["a"]}}, 200),
    ("/embed", "post", {"json": {"message": "a", "model": "other"}}, 404),
    ("/health", "get", {}, 200),
    ("/ready", "get", {}, 503),
    ("/documents", "get", {}, 200),
    ("/documents/{doc_id}", "get", {"path": "/documents/demo"}, 200),
    ("/documents/{doc_id}", "get", {"path": "/documents/demo?dimensions=16&precision=ubinary&encoding=base64"}, 200),
    ("/documents/{doc_id}", "get", {"path": "/documents/demo?precision=int4"}, 400),
    ("/documents/{doc_id}", "get", {"path": "/documents/nope"}, 404),
    ("/documents/{doc_id}", "get", {"path": "/documents/..."}, 400),
    ("/documents/{doc_id}/search", "get", {"path": "/documents/demo/search?q=sea&k=2"}, 200),
    ("/documents/{doc_id}/search", "get", {"path": "/documents/demo/search"}, 400),
]


@pytest.mark.parametrize(("path", "method", "kwargs", "status"), CALLS, ids=[f"{c[1]} {c[0]} {c[3]}" for c in CALLS])
def test_real_responses_match_the_description(demo_client, path, method, kwargs, status):
    spec = orjson.loads(demo_client.get("/openapi.json").data)
    kwargs = dict(kwargs)
    url = kwargs.pop("path", path)
    response = getattr(demo_client, method)(url, **kwargs)
    assert response.status_code == status, response.data
    jsonschema.validate(json.loads(response.get_data()), schema_for(spec, path, method, status))


def test_docs_page_and_its_assets_are_served_locally(client):
    page = client.get("/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert "http" not in html.replace('lang="en"', "")  # no address outside this server
    for asset, mimetype in [("swagger-ui-bundle.js", "application/javascript"), ("swagger-ui.css", "text/css"), ("init.js", "application/javascript")]:
        assert f"/docs/static/{asset}" in html
        response = client.get(f"/docs/static/{asset}")
        assert response.status_code == 200 and response.mimetype == mimetype and len(response.data) > 50
    assert len(client.get("/docs/static/swagger-ui-bundle.js").data) > 1_000_000
    assert_error(client.get("/docs/static/..%2f..%2fserver.py"), 404, "not_found")
    assert_error(client.get("/docs/static/VERSION"), 404, "not_found")


@pytest.mark.parametrize(
    ("sent", "echoed"),
    [("abc-123", True), ("req_01HF8Z:proxy/1", True), ("has space", False), ("x" * 129, False), ("", False), ('a"b', False)],
)
def test_request_ids_are_echoed_when_sane_else_generated(client, sent, echoed):
    for response in (client.get("/health", headers={"X-Request-Id": sent}), client.get("/nowhere", headers={"X-Request-Id": sent})):
        rid = response.headers["X-Request-Id"]
        assert (rid == sent) is echoed
        assert 1 <= len(rid) <= 128 and " " not in rid


def test_every_response_gets_a_fresh_id_when_none_is_sent(client):
    ids = {client.post("/embed", json={"message": "hi"}).headers["X-Request-Id"] for _ in range(3)}
    ids.add(client.post("/embed", json={}).headers["X-Request-Id"])
    assert len(ids) == 4


def test_a_forked_worker_makes_other_ids_than_its_parent():
    # Ids come from `random`, not the system's entropy on each request: each forked worker
    # must draw its own sequence, or two workers would hand out the same ids.
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write, "".join(logs.request_id(None) for _ in range(3)).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    os.close(write)
    child = os.read(read, 1000).decode()
    os.close(read)
    mine = "".join(logs.request_id(None) for _ in range(3))
    assert len(child) == len(mine) == 96 and child != mine


def metric(client, line_start: str) -> float:
    return counter(client.get("/metrics").get_data(as_text=True), line_start)


def test_metrics_count_requests_sentences_tokens_and_batches(client, encoder):
    label = f'{{model="{encoder.name}"}}'
    before = {
        "requests": metric(client, 'smls_http_requests_total{method="POST",model="all-MiniLM-L6-v2",route="/embed",status="200"}'),
        "sentences": metric(client, "smls_sentences_embedded_total" + label),
        "tokens": metric(client, "smls_tokens_embedded_total" + label),
        "truncated": metric(client, "smls_truncated_inputs_total" + label),
        "batches": metric(client, "smls_batch_size_sentences_count" + label),
        "errors": metric(client, 'smls_http_requests_total{method="POST",model="",route="/embed",status="400"}'),
    }
    client.post("/embed", json={"message": ["one two three", "long " * 600]})
    client.post("/embed", json={"message": []})
    assert metric(client, 'smls_http_requests_total{method="POST",model="all-MiniLM-L6-v2",route="/embed",status="200"}') == before["requests"] + 1
    assert metric(client, 'smls_http_requests_total{method="POST",model="",route="/embed",status="400"}') == before["errors"] + 1
    assert metric(client, "smls_sentences_embedded_total" + label) == before["sentences"] + 2
    assert metric(client, "smls_tokens_embedded_total" + label) >= before["tokens"] + 256 + 5
    assert metric(client, "smls_truncated_inputs_total" + label) == before["truncated"] + 1
    assert metric(client, "smls_batch_size_sentences_count" + label) == before["batches"] + 1
    assert "smls_http_request_duration_seconds_bucket" in client.get("/metrics").get_data(as_text=True)
    unmatched = metric(client, 'smls_http_requests_total{method="GET",model="",route="unmatched",status="404"}')
    client.get("/no/such/page")
    assert metric(client, 'smls_http_requests_total{method="GET",model="",route="unmatched",status="404"}') == unmatched + 1


def test_document_metrics_tell_cache_from_computed(demo_client):
    computed = metric(demo_client, 'smls_documents_served_total{model="all-MiniLM-L6-v2",source="computed"}')
    cached = metric(demo_client, 'smls_documents_served_total{model="all-MiniLM-L6-v2",source="cache"}')
    demo_client.get("/documents/demo").get_data()
    demo_client.get("/documents/demo").get_data()
    assert metric(demo_client, 'smls_documents_served_total{model="all-MiniLM-L6-v2",source="computed"}') == computed + 1
    assert metric(demo_client, 'smls_documents_served_total{model="all-MiniLM-L6-v2",source="cache"}') == cached + 1
