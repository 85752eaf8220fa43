"""Per-model prompts: read from the model's folder or SMLS_MODELS, chosen per request, given to queries and documents; held to sentence-transformers."""

from __future__ import annotations

import numpy as np
import pytest
import requests

import smls
from smls.catalog import parse_models
from smls.config import BACKENDS, Settings
from smls.errors import StartupError
from tests.helpers import assert_error, assert_openai_error, start_server, write

PROMPTS = {"query": "query: ", "document": "passage: ", "classification": "classify this: "}
TEXTS = ["How do I reset my password?", "Open Settings and choose Forgot password.", "The cafeteria serves lunch at noon."]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tiny random model whose config declares prompts, the classification one the default (as e5- and bge-style configs do)."""
    from scripts.tiny_models import build_embedding

    return build_embedding(tmp_path_factory.mktemp("prompted") / "e5ish", prompts=PROMPTS, default_prompt_name="classification")


@pytest.fixture(scope="module")
def st(folder):
    """sentence-transformers' own model of the folder: the vectors smls must give."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu", local_files_only=True)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")  # one ONNX export for the module


def app_for(tmp_path, cache, models: str):
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    settings = Settings(models=models, data_dir=data, cache_dir=cache, max_messages=16, max_body_bytes=65536)
    return smls.create_app(settings).test_client(), data


@pytest.fixture()
def client(tmp_path, cache, folder):
    return app_for(tmp_path, cache, f"e5={folder},mini=embedded")[0]


def vectors(client, path="/embed", **body):
    r = client.post(path, json={"model": "e5", **body})
    assert r.status_code == 200, r.data
    got = r.get_json()
    return np.asarray(got["embeddings"] if "embeddings" in got else [d["embedding"] for d in got["data"]])


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_models_lists_each_models_prompts_and_what_it_was_trained_for(client):
    listed = {m["name"]: m for m in client.get("/models").get_json()["models"]}
    assert listed["e5"]["prompts"] == {**PROMPTS, "query": "query: ", "document": "passage: "}
    assert listed["e5"]["default_prompt_name"] == "classification"
    assert listed["e5"]["max_seq_length"] == 128 and listed["e5"]["dimensions_trained"] is False
    assert listed["mini"]["prompts"] == {} and listed["mini"]["default_prompt_name"] is None


@pytest.mark.parametrize("name", ["query", "document", "classification"])
def test_prompt_name_reaches_the_model(client, st, name):
    assert np.allclose(vectors(client, message=TEXTS, prompt_name=name), st.encode(TEXTS, prompt_name=name), atol=1e-5)


def test_a_literal_prompt_and_the_default(client, st):
    assert np.allclose(vectors(client, message=TEXTS, prompt="search_query: "), st.encode(TEXTS, prompt="search_query: "), atol=1e-5)
    # No prompt asked: the model's default prompt, as sentence-transformers' encode gives it.
    assert np.allclose(vectors(client, message=TEXTS), st.encode(TEXTS), atol=1e-5)
    assert not np.allclose(vectors(client, message=TEXTS), st.encode(TEXTS, prompt=""), atol=1e-4)
    # An empty prompt is a prompt: none at all.
    assert np.allclose(vectors(client, message=TEXTS, prompt=""), st.encode(TEXTS, prompt=""), atol=1e-5)


def test_forms_query_strings_and_the_openai_route_take_it_too(client, st):
    want = st.encode(TEXTS[:1], prompt_name="query")
    form = client.post("/embed", data={"model": "e5", "message": TEXTS[0], "prompt_name": "query"}).get_json()["embeddings"]
    query = client.post("/embed?prompt_name=query&model=e5", json={"message": TEXTS[0]}).get_json()["embeddings"]
    assert np.allclose(form, want, atol=1e-5) and np.allclose(query, want, atol=1e-5)
    assert np.allclose(vectors(client, "/v1/embeddings", input=TEXTS, prompt_name="query"), unit(st.encode(TEXTS, prompt_name="query")), atol=1e-5)


def test_rerank_gives_the_query_its_prompt_and_the_documents_theirs(client, st):
    got = client.post("/rerank", json={"model": "e5", "query": TEXTS[0], "documents": TEXTS[1:]}).get_json()
    q, d = st.encode_query([TEXTS[0]])[0], st.encode_document(TEXTS[1:])
    want = unit(d) @ unit(q)
    assert {r["index"]: r["relevance_score"] for r in got["results"]} == pytest.approx(dict(enumerate(want.tolist())), abs=1e-5)


def test_documents_get_the_document_prompt_and_search_the_query_prompt(tmp_path, cache, folder, st):
    client, data = app_for(tmp_path, cache, f"e5={folder}")
    write(data, "faq", texts=[{"text": t, "pages": []} for t in TEXTS])
    got = client.get("/documents/faq").get_json()
    assert np.allclose([s["embedding"] for s in got["sentences"]], st.encode_document(TEXTS), atol=1e-5)
    found = client.get("/search", query_string={"q": "forgot my password"}).get_json()["results"][0]
    want = unit(st.encode_document([TEXTS[found["index"]]]))[0] @ unit(st.encode_query(["forgot my password"]))[0]
    assert found["score"] == pytest.approx(float(want), abs=1e-4)
    inside = client.get("/documents/faq/search", query_string={"q": "forgot my password", "k": 1}).get_json()["results"][0]
    assert inside["score"] == pytest.approx(found["score"], abs=1e-5)


def test_cached_document_vectors_are_keyed_by_the_prompt(tmp_path, cache, folder, st):
    client, data = app_for(tmp_path, cache, f"e5={folder}")
    texts = TEXTS[::-1]  # a document no other test of the module (sharing its cache) computes
    write(data, "keyed", texts=[{"text": t, "pages": []} for t in texts])
    assert client.get("/documents/keyed").get_json()["cached"] is False
    assert client.get("/documents/keyed").get_json()["cached"] is True
    # The same model and folder with another document prompt: another key, computed afresh with that prompt.
    other = smls.create_app(Settings(models=f"e5={folder};prompts=document:doc: ", data_dir=data, cache_dir=cache)).test_client()
    got = other.get("/documents/keyed").get_json()
    assert got["cached"] is False
    assert np.allclose([s["embedding"] for s in got["sentences"]], st.encode(texts, prompt="doc: "), atol=1e-5)


def test_smls_models_prompts_replace_the_folders_keeping_their_spaces(tmp_path, cache, folder, st):
    client, _ = app_for(tmp_path, cache, f"e5={folder};prompts=query:q: |passage:p: ")
    listed = client.get("/models").get_json()["models"][0]
    assert listed["prompts"] == {"query": "q: ", "passage": "p: "} and listed["default_prompt_name"] is None
    assert np.allclose(vectors(client, message=TEXTS, prompt_name="passage"), st.encode(TEXTS, prompt="p: "), atol=1e-5)
    # passage is its document prompt now (no "document" among them), as encode_document would choose
    got = client.post("/rerank", json={"model": "e5", "query": TEXTS[0], "documents": TEXTS[1:2]}).get_json()
    want = unit(st.encode([TEXTS[1]], prompt="p: "))[0] @ unit(st.encode([TEXTS[0]], prompt="q: "))[0]
    assert got["results"][0]["relevance_score"] == pytest.approx(float(want), abs=1e-5)


@pytest.mark.parametrize(
    "raw, says",
    [
        ("m=embedded;prompts=query", "prompts must be name:prefix pairs"),
        ("m=embedded;prompts=:x", "prompts must be name:prefix pairs"),
        ("m=embedded;prompts=a:x|a:y", "the prompt 'a' is given twice"),
        ("m=embedded;matryoshka=yes", "matryoshka must be true or false"),
    ],
)
def test_bad_prompt_settings_stop_the_start(raw, says):
    with pytest.raises(StartupError, match=says):
        parse_models(raw, BACKENDS)


@pytest.mark.parametrize(
    "body, status, code, says",
    [
        ({"prompt_name": "querry"}, 400, "unknown_prompt", "prompt_name 'querry' is not one of this model's prompts; it has: classification, document, query"),
        ({"prompt_name": "query", "prompt": "x: "}, 400, "conflicting_option", "both 'prompt_name' and 'prompt'"),
        ({"prompt": 3}, 400, "invalid_option", "option 'prompt' must be a string, got 3"),
        ({"prompt_name": ["query"]}, 400, "invalid_option", "option 'prompt_name' must be a string"),
        ({"model": "mini", "prompt_name": "query"}, 400, "unknown_prompt", "it has: none (send 'prompt' with the prefix itself)"),
    ],
)
def test_bad_prompt_requests_are_clear_errors(client, body, status, code, says):
    error = assert_error(client.post("/embed", json={"model": "e5", "message": "hi", **body}), status, code)
    assert says in error["message"], error["message"]
    openai = assert_openai_error(client.post("/v1/embeddings", json={"model": "e5", "input": "hi", **body}), status, code)
    assert says in openai["message"]


def test_dimensions_on_a_model_not_trained_for_them_says_so_once(tmp_path, cache, folder, client):
    assert client.post("/embed", json={"message": "hi", "model": "e5", "dimensions": 16}).get_json()["dimensions_trained"] is False
    assert client.post("/v1/embeddings", json={"input": "hi", "model": "e5", "dimensions": 16}).get_json()["dimensions_trained"] is False
    assert "dimensions_trained" not in client.post("/embed", json={"message": "hi", "model": "e5"}).get_json()
    trained, _ = app_for(tmp_path, cache, f"e5={folder};matryoshka=true")
    assert trained.get("/models").get_json()["models"][0]["dimensions_trained"] is True
    assert "dimensions_trained" not in trained.post("/embed", json={"message": "hi", "dimensions": 16}).get_json()


def test_a_live_server_gives_prompts_on_its_event_loop(tmp_path, folder, st):
    server = start_server(tmp_path, workers=1, SMLS_MODELS=f"e5={folder}", SMLS_CACHE_DIR=str(tmp_path / "cache"))
    try:
        r = requests.post(f"{server.url}/embed", json={"message": TEXTS, "prompt_name": "query"}, timeout=30)
        assert r.status_code == 200 and np.allclose(r.json()["embeddings"], st.encode(TEXTS, prompt_name="query"), atol=1e-5)
        r = requests.post(f"{server.url}/v1/embeddings", json={"input": "hi", "prompt_name": "nope"}, timeout=30)
        assert r.status_code == 400 and r.json()["error"]["code"] == "unknown_prompt"
    finally:
        server.stop()
