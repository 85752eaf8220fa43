"""Several models through a real gunicorn: the embedded model (onnx), a tiny embedding model on torch and a tiny cross-encoder."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.helpers import counter, settled_metrics, start_server

pytestmark = pytest.mark.live


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_models):
    tmp = tmp_path_factory.mktemp("live-models")
    models = f"mini=embedded,tiny={tiny_models['tiny']};backend=torch,judge={tiny_models['judge']}"
    srv = start_server(tmp, workers=2, SMLS_MODELS=models, SMLS_CACHE_DIR=str(tmp / "cache"), SMLS_MAX_MESSAGES="64")
    # /health answers as soon as a worker runs; wait until both have warmed every model.
    for _ in range(300):
        if all(requests.get(srv.url + "/ready", headers={"Connection": "close"}, timeout=10).status_code == 200 for _ in range(4)):
            break
    yield srv
    srv.stop()


def test_every_model_is_listed(server):
    listed = requests.get(server.url + "/models", timeout=30).json()
    assert [(m["name"], m["kind"], m["backend"], m["dimension"]) for m in listed["models"]] == [
        ("mini", "embedding", "onnx", 384),
        ("tiny", "embedding", "torch", 32),
        ("judge", "cross-encoder", "torch", 0),
    ]
    assert [m["id"] for m in requests.get(server.url + "/v1/models", timeout=30).json()["data"]] == ["mini", "tiny", "judge"]


def test_each_route_selects_the_model(server):
    url = server.url
    assert requests.post(url + "/embed", data={"message": "hi"}, timeout=30).json()["model"] == "mini"
    tiny = requests.post(url + "/embed", data={"message": "hi", "model": "tiny"}, timeout=30).json()
    assert tiny["model"] == "tiny" and len(tiny["embeddings"][0]) == 32
    assert requests.post(url + "/embed?model=tiny", json={"message": ["a", "b"]}, timeout=30).json()["model"] == "tiny"
    v1 = requests.post(url + "/v1/embeddings", json={"input": "hi", "model": "tiny"}, timeout=30).json()
    assert v1["model"] == "tiny" and len(v1["data"][0]["embedding"]) == 32
    doc = requests.get(url + "/documents/demo?model=tiny&dimensions=4", timeout=120).json()
    assert doc["model"] == "tiny" and len(doc["sentences"][0]["embedding"]) == 4
    found = requests.get(url + "/documents/demo/search", params={"q": "fire exits", "k": 3, "model": "tiny"}, timeout=120).json()
    assert found["model"] == "tiny" and len(found["results"]) == 3


@pytest.mark.parametrize(
    "method, path, kwargs, openai",
    [
        ("post", "/embed", {"json": {"message": "hi", "model": "nope"}}, False),
        ("post", "/embed?model=nope", {"data": {"message": "hi"}}, False),
        ("post", "/v1/embeddings", {"json": {"input": "hi", "model": "nope"}}, True),
        ("get", "/documents/demo?model=nope", {}, False),
        ("get", "/documents/demo/search?q=x&model=nope", {}, False),
        ("post", "/rerank", {"json": {"query": "q", "documents": ["a"], "model": "nope"}}, False),
    ],
)
def test_an_unknown_model_is_404_in_the_routes_shape_listing_the_served_names(server, method, path, kwargs, openai):
    response = getattr(requests, method)(server.url + path, timeout=30, **kwargs)
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "model_not_found"
    assert "lists: mini, tiny, judge" in error["message"]
    assert ("type" in error) == openai


def test_rerank_in_both_scorer_modes(server):
    docs = ["The stock market fell.", "Tokyo is the capital city of Japan.", "Sushi is a Japanese dish."]
    cross = requests.post(server.url + "/rerank", json={"query": "capital of Japan", "documents": docs, "top_n": 2}, timeout=30).json()
    assert cross["scorer"] == "cross-encoder" and cross["model"] == "judge" and len(cross["results"]) == 2
    cosine = requests.post(server.url + "/rerank", json={"query": "capital of Japan", "texts": docs, "model": "mini", "return_documents": True}, timeout=30).json()
    assert cosine["scorer"] == "cosine" and cosine["results"][0] == {"index": 1, "relevance_score": cosine["results"][0]["relevance_score"], "document": docs[1]}
    bad = requests.post(server.url + "/rerank", json={"query": "q", "documents": []}, timeout=30)
    assert bad.status_code == 400 and "documents is an empty list" in bad.json()["error"]["message"]


def test_two_hot_models_both_answer_and_metrics_carry_the_model(server):
    def one(i: int) -> tuple[int, str]:
        model = ("mini", "tiny")[i % 2]
        r = requests.post(server.url + "/embed", json={"message": [f"sentence {i}", "another one"], "model": model}, timeout=60)
        return r.status_code, r.json()["model"]

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(64)))
    assert results == [(200, ("mini", "tiny")[i % 2]) for i in range(64)]
    text = settled_metrics(server.url, lambda t: counter(t, 'smls_http_requests_total{method="POST",model="tiny",route="/embed",status="200"}') >= 32)
    assert counter(text, 'smls_http_requests_total{method="POST",model="tiny",route="/embed",status="200"}') >= 32
    assert counter(text, 'smls_sentences_embedded_total{model="tiny"}') >= 64
    assert counter(text, 'smls_sentences_embedded_total{model="judge"}') >= 2  # each worker's warm-up pair
    assert 'smls_queue_depth{model="mini"}' in text and 'smls_batch_size_sentences_count{model="tiny"}' in text


def test_one_worker_with_a_fresh_cache_serves_an_onnx_model_beside_a_torch_cross_encoder(tmp_path, tiny_models):
    # The ONNX export runs in a child process: run in the master, its torch thread pool
    # made the worker's first cross-encoder pass hang (one worker: two threads per pass).
    srv = start_server(tmp_path, workers=1, SMLS_MODELS=f"mini=embedded,judge={tiny_models['judge']}", SMLS_CACHE_DIR=str(tmp_path / "cache"))
    try:
        got = requests.post(srv.url + "/rerank", json={"query": "q", "documents": ["a", "b"]}, timeout=60).json()
        assert got["scorer"] == "cross-encoder"
        assert requests.post(srv.url + "/embed", data={"message": "hi"}, timeout=60).json()["model"] == "mini"
    finally:
        srv.stop()
