"""Long texts: cut on the right (as the tokenizer does), on the left (keeping the end), or refused; reported on every route."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import requests

import smls
from smls.errors import InvalidInput
from smls.tokens import Tokens
from smls.truncation import Truncation, frame
from tests.helpers import assert_error, assert_openai_error, write

# Every word one token of all-MiniLM-L6-v2's vocabulary, so a cut on a token is also a cut on a word.
FILLER = "word " * 300
ENDING = "and at the very end the answer is forty two"
LONG = FILLER + ENDING  # 312 tokens with [CLS] and [SEP]; the model takes 256


@pytest.fixture()
def settings(settings):
    """The test settings, with room for long texts in a body."""
    return replace(settings, max_body_bytes=256 * 1024)


@pytest.fixture(scope="module")
def tokens(encoder):
    return Tokens(encoder.path, encoder.max_seq_length)


@pytest.fixture(scope="module")
def left_reference(encoder):
    """sentence-transformers itself with its tokenizer cutting on the left: the vectors left truncation must give."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(encoder.path), device="cpu", local_files_only=True)
    model.tokenizer.truncation_side = "left"
    return lambda texts: model.encode(texts, convert_to_numpy=True)


def embed(client, **body):
    r = client.post("/embed", json=body)
    assert r.status_code == 200, r.data
    return r.get_json()


# --- framing, in process ------------------------------------------------------------------


def test_left_keeps_the_end_within_the_limit_and_starts_at_a_whole_word(tokens):
    text = "Antidisestablishmentarianism " * 80 + ENDING  # a word of several tokens, repeated
    framed = frame(["short", text], Truncation(True, "left"), tokens, "message", 256)
    assert framed.texts[0] == "short"
    tail = framed.texts[1]
    assert text.endswith(tail) and tail.endswith(ENDING)
    assert tail.startswith("Antidisestablishmentarianism ")  # not "ment..." or "##arianism"
    n = len(tokens.encodings([tail])[0].ids)
    assert 250 <= n <= 256
    (cut,) = framed.cuts()
    assert (cut.field, cut.index, cut.tokens) == ("message", 1, len(tokens.encodings([text])[0].ids))
    assert cut.dropped == cut.tokens - n


def test_one_endless_word_is_cut_mid_word(tokens):
    text = "ab" * 2000  # one word of ~1000 pieces
    framed = frame([text], Truncation(True, "left"), tokens, "message", 256)
    assert text.endswith(framed.texts[0]) and len(tokens.encodings(framed.texts)[0].ids) <= 256


def test_the_default_counts_nothing_before_the_model(tokens):
    framed = frame([LONG], Truncation(), tokens, "message", 256)
    assert framed.texts == [LONG] and framed.known == {}
    # ... the encoder's flag and tokens fed give the report afterwards
    (cut,) = framed.cuts([True], [256])
    assert (cut.tokens, cut.dropped) == (312, 56)


def test_refusing_names_the_item_and_its_tokens(tokens):
    with pytest.raises(InvalidInput, match=r"message item 1 is 312 tokens, over the model's 256, and \"truncate\" is false") as caught:
        frame(["ok", LONG], Truncation(False), tokens, "message", 256)
    assert caught.value.code == "input_too_long"
    frame(["ok", "fine"], Truncation(False), tokens, "message", 256)  # short texts pass


# --- the routes ---------------------------------------------------------------------------


def test_embed_reports_what_the_right_cut_dropped(client, encoder):
    body = embed(client, message=["short", LONG])
    assert body["truncated"] == 1
    assert body["truncations"] == [{"field": "message", "index": 1, "tokens": 312, "dropped": 56}]
    assert np.allclose(body["embeddings"][1], encoder.run([LONG])[0], atol=1e-5)
    assert embed(client, message="short")["truncations"] == []


def test_embed_left_equals_sentence_transformers_cutting_on_the_left(client, left_reference):
    body = embed(client, message=[LONG, "short"], truncation_direction="left")
    assert body["truncations"] == [{"field": "message", "index": 0, "tokens": 312, "dropped": 56}]
    want = left_reference([LONG, "short"])
    assert np.allclose(body["embeddings"], want, atol=1e-4)
    right = embed(client, message=LONG)["embeddings"][0]
    assert not np.allclose(body["embeddings"][0], right, atol=1e-3)  # the end was read, not the start


def test_the_options_come_from_a_form_or_the_query_string_too(client):
    form = client.post("/embed", data={"message": LONG, "truncation_direction": "left"}).get_json()
    query = client.post("/embed?truncation_direction=left", json={"message": LONG}).get_json()
    body = embed(client, message=LONG, truncation_direction="left")
    assert form["embeddings"] == query["embeddings"] == body["embeddings"]
    assert_error(client.post("/embed?truncate=false", data={"message": LONG}), 400, "input_too_long")


@pytest.mark.parametrize(
    "path, body, says",
    [
        ("/embed", {"message": ["ok", LONG], "truncate": False}, "message item 1 is 312 tokens"),
        ("/rerank", {"query": "q", "documents": ["ok", LONG], "truncate": False}, "documents item 1 is 312 tokens"),
        ("/rerank", {"query": LONG, "texts": ["ok"], "truncate": False}, "the query is 312 tokens"),
    ],
)
def test_truncate_false_refuses_a_long_text_before_the_model_runs(client, encoder, path, body, says):
    before = encoder.sentences_encoded
    error = assert_error(client.post(path, json=body), 400, "input_too_long")
    assert says in error["message"], error["message"]
    assert encoder.sentences_encoded == before


def test_openai_route_takes_the_same_fields(client, left_reference):
    r = client.post("/v1/embeddings", json={"input": [LONG], "truncation_direction": "left"})
    assert r.status_code == 200, r.data
    got = r.get_json()
    assert got["truncations"] == [{"field": "input", "index": 0, "tokens": 312, "dropped": 56}]
    want = left_reference([LONG])[0]
    assert np.allclose(got["data"][0]["embedding"], want / np.linalg.norm(want), atol=1e-4)
    error = assert_openai_error(client.post("/v1/embeddings", json={"input": LONG, "truncate": False}), 400, "input_too_long")
    assert "input item 0 is 312 tokens" in error["message"]


def test_rerank_reports_cut_documents_and_cuts_them_on_the_left_when_asked(client, left_reference):
    body = {"query": "what is the answer?", "documents": ["the answer is forty two", LONG]}
    right = client.post("/rerank", json=body).get_json()
    left = client.post("/rerank", json={**body, "truncation_direction": "left"}).get_json()
    assert right["truncations"] == left["truncations"] == [{"field": "documents", "index": 1, "tokens": 312, "dropped": 56}]
    query, document = left_reference([body["query"], LONG])
    want = float(query @ document / np.linalg.norm(query) / np.linalg.norm(document))
    score = {name: {r["index"]: r["relevance_score"] for r in got["results"]}[1] for name, got in (("right", right), ("left", left))}
    assert score["left"] == pytest.approx(want, abs=1e-4) and abs(score["right"] - want) > 1e-3


@pytest.mark.parametrize("path", ["/search", "/documents/doc/search"])
def test_search_cuts_its_query_as_asked(client, settings, path):
    write(settings.data_dir)
    got = client.get(path, query_string={"q": LONG, "truncation_direction": "left"}).get_json()
    assert got["truncations"] == [{"field": "q", "index": 0, "tokens": 312, "dropped": 56}]
    assert client.get(path, query_string={"q": "fire"}).get_json()["truncations"] == []
    error = assert_error(client.get(path, query_string={"q": LONG, "truncate": "false"}), 400, "input_too_long")
    assert "the query q is 312 tokens" in error["message"]


@pytest.mark.parametrize(
    "path, body, code, says",
    [
        ("/embed", {"message": "x", "truncation_direction": "middle"}, "invalid_option", "'truncation_direction' must be right or left, got \"middle\""),
        ("/embed", {"message": "x", "truncation_direction": 1}, "invalid_option", "must be right or left, got 1"),
        ("/embed", {"message": "x", "truncate": "maybe"}, "invalid_option", "'truncate'"),
        ("/rerank", {"query": "q", "documents": ["a"], "truncation_direction": "up"}, "invalid_option", "must be right or left"),
        ("/embed", {"message": "x", "truncation": "left"}, "unknown_field", "'truncation'"),
    ],
)
def test_bad_truncation_options_are_clear_errors(client, path, body, code, says):
    error = assert_error(client.post(path, json=body), 400, code)
    assert says in error["message"], error["message"]


# --- a model that keeps the end: its default, and its documents' ---------------------------


def test_a_model_set_to_truncation_left_cuts_requests_and_documents_on_the_left(settings, left_reference):
    settings = replace(settings, models="mini=embedded;truncation=left", doc_batch=8)
    texts = ["A short one.", LONG, "Another short one."]
    write(settings.data_dir, "long", texts=[{"text": t, "pages": []} for t in texts])
    client = smls.create_app(settings).test_client()
    assert client.get("/models").get_json()["models"][0]["truncation"] == "left"
    want = left_reference(texts)
    assert np.allclose(embed(client, message=LONG)["embeddings"][0], want[1], atol=1e-4)
    assert not np.allclose(embed(client, message=LONG, truncation_direction="right")["embeddings"][0], want[1], atol=1e-3)
    got = client.get("/documents/long").get_json()
    assert np.allclose([s["embedding"] for s in got["sentences"]], want, atol=1e-4)
    # Cached under a key of its own: the same document under a right-cutting model is computed afresh.
    right = smls.create_app(replace(settings, models="mini=embedded")).test_client()
    again = right.get("/documents/long").get_json()
    assert got["cached"] is False and again["cached"] is False
    assert not np.allclose(again["sentences"][1]["embedding"], want[1], atol=1e-3)


def test_truncation_left_on_a_cross_encoder_is_refused_at_start(settings, tiny_models):
    with pytest.raises(smls.errors.StartupError, match="cross-encoder"):
        smls.create_app(replace(settings, models=f"mini=embedded,judge={tiny_models['judge']};truncation=left"))


def test_live_gunicorn_cuts_and_refuses_on_its_event_loop(live_server):
    r = requests.post(f"{live_server.url}/embed", json={"message": [LONG], "truncation_direction": "left"}, timeout=30)
    assert r.status_code == 200 and r.json()["truncations"][0]["dropped"] == 56
    r = requests.post(f"{live_server.url}/v1/embeddings", json={"input": [LONG], "truncate": False}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["code"] == "input_too_long"
