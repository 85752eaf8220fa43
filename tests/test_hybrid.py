"""GET /search?mode=keyword|hybrid and rerank=: the store's full-text engine, fused with the vectors by reciprocal rank, on every store."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

import smls
from smls.hybrid import RRF_K, fuse, query_words
from tests.helpers import STORES, assert_error, store_for

PARTS = [
    "The replacement pump for the cooling circuit is part XK-4471.",
    "The cooling circuit needs a new pump every few years.",
    "Pumps for cooling circuits come in several sizes and colours.",
    "Order replacement parts from the supplier's catalogue.",
    "The heating circuit uses a different valve altogether.",
]
OTHER = ["A pump in the garden shed waters the roses.", "The garden needs rain."]


@pytest.fixture(params=STORES)
def settings(request, settings):
    """Every test here runs on every store: SQLite FTS5, and PostgreSQL's full-text search with pgvector and without."""
    if request.param != "sqlite" and request.node.get_closest_marker("sqlite_only"):
        pytest.skip("one store is enough")
    return settings if request.param == "sqlite" else replace(settings, store=store_for(request, request.param), max_body_bytes=65536)


def upload(client, doc_id, texts):
    body = {"texts": [{"text": t, "pages": [f"p{i // 2}"]} for i, t in enumerate(texts)], "pages": [{"id": f"p{n}", "page_number": n + 1} for n in range((len(texts) + 1) // 2)]}
    r = client.put(f"/documents/{doc_id}", json=body)
    assert r.status_code in (200, 201), r.data


@pytest.fixture()
def corpus(client):
    upload(client, "parts", PARTS)
    upload(client, "garden", OTHER)
    return client


def search(client, **query):
    r = client.get("/search", query_string=query)
    assert r.status_code == 200, r.data
    return r.get_json()


def test_keyword_mode_finds_an_exact_part_number_with_its_pages(corpus):
    got = search(corpus, q="XK-4471", mode="keyword", k=3)
    assert got["mode"] == "keyword"
    assert [(h["doc_id"], h["index"]) for h in got["results"]] == [("parts", 0)]
    hit = got["results"][0]
    assert hit["text"] == PARTS[0] and hit["pages"][0]["number"] == 1 and hit["score"] > 0


def test_vector_stays_the_default_and_hybrid_puts_the_exact_match_first(corpus):
    vector = search(corpus, q="part XK-4471", k=5)
    assert vector["mode"] == "vector" and all("ranks" not in h for h in vector["results"])
    got = search(corpus, q="part XK-4471", mode="hybrid", k=5)
    first = got["results"][0]
    assert (first["doc_id"], first["index"]) == ("parts", 0) and first["ranks"]["keyword"] == 1
    for hit in got["results"]:  # each score is the sum of 1 / (60 + rank) over the rankings it is in
        want = sum(1 / (RRF_K + r) for r in hit["ranks"].values() if r is not None)
        assert hit["score"] == pytest.approx(want, abs=1e-7)
    vector_ranks = {(h["doc_id"], h["index"]): n for n, h in enumerate(vector["results"], start=1)}
    assert all(h["ranks"]["vector"] == vector_ranks.get((h["doc_id"], h["index"])) for h in got["results"])


def test_keyword_search_follows_doc_and_every_change_of_a_document(corpus):
    both = search(corpus, q="pump", mode="keyword", k=10)["results"]
    assert {h["doc_id"] for h in both} == {"parts", "garden"}
    assert {h["doc_id"] for h in search(corpus, q="pump", mode="keyword", doc="garden")["results"]} == {"garden"}
    upload(corpus, "parts", ["The part number changed to ZQ-9."])  # a new version: the old sentences are gone
    assert search(corpus, q="XK-4471", mode="keyword")["results"] == []
    assert search(corpus, q="ZQ-9", mode="keyword")["results"][0]["text"] == "The part number changed to ZQ-9."
    assert corpus.delete("/documents/parts").status_code == 200
    assert search(corpus, q="ZQ-9", mode="keyword")["results"] == []
    assert search(corpus, q="ZQ-9", mode="hybrid")["results"][0]["doc_id"] == "garden"  # only the vectors rank it


def test_a_query_with_no_words_finds_nothing_by_keyword(corpus):
    assert search(corpus, q="!!! ???", mode="keyword")["results"] == []
    assert all(h["ranks"]["keyword"] is None for h in search(corpus, q="!!! ???", mode="hybrid")["results"])


@pytest.mark.parametrize(
    "query, status, code, says",
    [
        ({"q": "x", "mode": "fuzzy"}, 400, "invalid_option", "option 'mode' must be one of vector, keyword, hybrid, got \"fuzzy\""),
        ({"q": "x", "rerank": "nope"}, 404, "model_not_found", "'nope'"),
        ({"q": "x", "mode": "keyword", "doc": "missing"}, 404, "document_not_found", "missing"),
    ],
)
def test_bad_options_are_clear_errors(corpus, query, status, code, says):
    error = assert_error(corpus.get("/search", query_string=query), status, code)
    assert says in error["message"], error["message"]


@pytest.mark.sqlite_only
def test_rerank_rescores_the_candidates_by_a_cross_encoder_or_the_models_cosine(settings, tiny_models, encoder):
    client = smls.create_app(replace(settings, models=f"mini=embedded,judge={tiny_models['judge']}")).test_client()
    upload(client, "parts", PARTS)
    judge = smls.ml_services.get("Reranker", model=str(tiny_models["judge"]))
    got = search(client, q="cooling pump", mode="hybrid", k=2, rerank="judge")
    assert got["reranked_by"] == "judge" and len(got["results"]) == 2
    want = {PARTS[i]: score for i, score in judge.rank("cooling pump", PARTS)}
    # (the random tiny judge's scores lie close together: compare them, not the order of near ties)
    assert [h["score"] for h in got["results"]] == pytest.approx(sorted(want.values(), reverse=True)[:2], abs=1e-5)
    assert all(h["score"] == pytest.approx(want[h["text"]], abs=1e-5) and "retrieval_score" in h for h in got["results"])
    cosine = search(client, q="cooling pump", mode="keyword", rerank="mini", k=5)["results"]
    vectors = encoder.run(["cooling pump", *[h["text"] for h in cosine]], normalize=True)
    assert [h["score"] for h in cosine] == pytest.approx((vectors[1:] @ vectors[0]).tolist(), abs=1e-5)
    assert [h["score"] for h in cosine] == sorted((h["score"] for h in cosine), reverse=True)


def test_fusion_and_words_in_process():
    assert query_words("The XK-4471 part, the Café!") == ["the", "xk", "4471", "part", "café"]
    fused = fuse([["a", "b", "c"], ["c", "d"]], 3)
    assert [key for key, _, _ in fused] == ["c", "a", "b"]
    assert fused[0][1] == pytest.approx(1 / 63 + 1 / 61) and fused[0][2] == [3, 1]
    assert np.isclose(fuse([["x"], []], 1)[0][1], 1 / 61)


@pytest.mark.parametrize("q", ['"XK', "pump & valve", "pump | valve", "!pump", "pu:*", "back\\slash", "it's", "NEAR(pump valve)", "AND OR NOT", "*", "(("])
def test_keyword_syntax_in_a_query_is_text_never_an_operator(corpus, q):
    for mode in ("keyword", "hybrid"):
        r = corpus.get("/search", query_string={"q": q, "mode": mode})
        assert r.status_code == 200, r.data
