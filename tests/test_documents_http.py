"""/documents through Flask's test client on the real encoder: streaming, cache, search, errors; on both stores."""

from __future__ import annotations

import sqlite3
from dataclasses import replace

import numpy as np
import orjson
import pytest

from smls import outputs
from tests.helpers import HOSTILE_IDS, P1, P2, PAGES, STORES, TEXTS, assert_error, store_for, write


@pytest.fixture(params=STORES)
def settings(request, settings):
    """Every test here runs on every store: the SQLite cache file, and a real PostgreSQL with pgvector and without (a fresh database per test)."""
    if request.param == "sqlite":
        return settings
    if request.node.get_closest_marker("sqlite_only"):
        pytest.skip("about the SQLite cache file itself")
    return replace(settings, store=store_for(request, request.param))


@pytest.fixture()
def data(settings):
    return write(settings.data_dir)


def get_doc(client, doc_id="doc", **query):
    r = client.get(f"/documents/{doc_id}", query_string=query)
    assert r.status_code == 200, r.data
    return orjson.loads(r.get_data())


def test_document_is_joined_streamed_and_equals_the_encoder(client, data, encoder):
    r = client.get("/documents/doc")
    assert r.is_streamed
    body = orjson.loads(r.get_data())
    assert {k: body[k] for k in ("doc_id", "model", "dimension", "count", "cached", "normalized")} == {
        "doc_id": "doc", "model": "all-MiniLM-L6-v2", "dimension": 384, "count": 4, "cached": False, "normalized": False,
    }
    assert [s["index"] for s in body["sentences"]] == [0, 1, 2, 3]
    assert [s["text"] for s in body["sentences"]] == [t["text"] for t in TEXTS]
    assert body["sentences"][0]["metadata"] == {"speaker": "narrator", "score": 0.5}
    assert [p["number"] for p in body["sentences"][1]["pages"]] == [1, 2]
    vectors = np.array([s["embedding"] for s in body["sentences"]], dtype=np.float32)
    assert np.allclose(vectors, encoder.run([t["text"] for t in TEXTS]), atol=1e-5)


def test_second_request_is_served_from_the_cache_without_inference(client, data, encoder):
    first = get_doc(client)
    before = encoder.sentences_encoded
    second = get_doc(client)
    assert encoder.sentences_encoded == before
    assert second["cached"] is True and first["cached"] is False
    assert second["sentences"] == first["sentences"]


def test_changing_either_file_invalidates_the_cache(client, data, encoder):
    get_doc(client)
    write(data, pages=PAGES.replace("Beginnings", "Openings"))
    before = encoder.sentences_encoded
    changed = get_doc(client)
    assert changed["cached"] is False and encoder.sentences_encoded == before + 4
    assert changed["sentences"][0]["pages"][0]["metadata"]["heading"] == "Openings"

    write(data, texts=[{"text": "A brand new sentence.", "pages": [P2]}], pages=PAGES.replace("Beginnings", "Openings"))
    fresh = get_doc(client)
    assert fresh["cached"] is False and [s["text"] for s in fresh["sentences"]] == ["A brand new sentence."]
    assert get_doc(client)["cached"] is True


def test_normalize_is_part_of_the_cache_key(client, data, encoder):
    get_doc(client)
    before = encoder.sentences_encoded
    normalized = get_doc(client, normalize="true")
    assert normalized["cached"] is False and normalized["normalized"] is True
    assert encoder.sentences_encoded == before + 4


def test_an_interrupted_computation_resumes_with_only_the_missing_chunks(client, settings, encoder, app):
    texts = [{"text": f"Sentence number {i} of a document that is computed in chunks of four.", "pages": [P1]} for i in range(10)]
    write(settings.data_dir, texts=texts)  # chunks of 4 (SMLS_DOC_BATCH in the test settings): 4, 4, 2
    embedder = app.extensions["smls"].embedding(None).documents
    from smls.documents import load_document

    doc = load_document(settings.data_dir, "doc")
    chunks = embedder.chunks(doc)
    next(chunks), next(chunks)  # two chunks computed and stored, then the client goes away
    chunks.close()
    before = encoder.sentences_encoded
    body = get_doc(client)
    assert body["cached"] is False
    assert encoder.sentences_encoded == before + 2  # only the third chunk (2 sentences) was missing
    vectors = np.array([s["embedding"] for s in body["sentences"]], dtype=np.float32)
    assert np.allclose(vectors, encoder.run([t["text"] for t in texts]), atol=1e-5)

    # A chunk lost from the middle is recomputed alone.
    key = embedder.key(doc)
    if settings.store:
        import psycopg

        with psycopg.connect(settings.store, autocommit=True) as conn:
            conn.execute("DELETE FROM smls_chunks WHERE key = %s AND chunk = 1", (key,))
    else:
        sqlite3.connect(settings.cache_dir / "documents.sqlite3").execute("DELETE FROM chunks WHERE key = ? AND chunk = 1", (key,)).connection.commit()
    before = encoder.sentences_encoded
    again = get_doc(client)
    assert encoder.sentences_encoded == before + 4
    assert again["sentences"] == body["sentences"]


@pytest.mark.sqlite_only
def test_corrupt_cache_file_is_rebuilt(client, data, settings):
    get_doc(client)
    cache_file = settings.cache_dir / "documents.sqlite3"
    app_cache = client.application.extensions["smls"].embedders[0].documents.cache
    app_cache.db._local.conn.close()
    app_cache.db._local.conn = None
    for suffix in ("-wal", "-shm"):
        (settings.cache_dir / f"documents.sqlite3{suffix}").unlink(missing_ok=True)
    cache_file.write_bytes(b"this is not a database" * 100)
    body = get_doc(client)
    assert body["cached"] is False and len(body["sentences"]) == 4
    assert get_doc(client)["cached"] is True
    # A new, working database holds the recomputed chunk; the broken file was moved aside, not lost.
    assert sqlite3.connect(cache_file).execute("SELECT count(*) FROM chunks").fetchone() == (1,)
    assert [p.name for p in settings.cache_dir.glob("documents.sqlite3.broken-*")]


@pytest.mark.sqlite_only
def test_deleted_cache_file_is_recreated(client, data, settings):
    get_doc(client)
    for path in settings.cache_dir.iterdir():
        path.unlink()
    assert get_doc(client)["cached"] is False
    assert get_doc(client)["cached"] is True


def test_list_documents(client, data, settings):
    write(settings.data_dir, "second", texts=TEXTS[:1])
    body = orjson.loads(client.get("/documents").data)
    assert body == {"documents": [{"id": "doc", "source": "files", "sentences": 4}, {"id": "second", "source": "files", "sentences": 1}]}
    assert orjson.loads(client.get("/documents/").data) == body


def test_search_finds_the_planted_sentence_first(client, settings, encoder):
    filler = [f"Quarterly report {i}: revenue, costs and the tax schedule were reviewed." for i in range(30)]
    planted = "The old lighthouse keeper rowed out through the storm to rescue the fishermen."
    texts = [{"text": t, "pages": [P1]} for t in filler[:17]] + [{"text": planted, "pages": [P2], "id": "planted"}]
    texts += [{"text": t, "pages": []} for t in filler[17:]]
    write(settings.data_dir, texts=texts)
    r = client.get("/documents/doc/search", query_string={"q": "a sailor saved people from a shipwreck at sea", "k": 3})
    body = orjson.loads(r.data)
    assert r.status_code == 200 and body["k"] == 3 and len(body["results"]) == 3
    best = body["results"][0]
    assert best["index"] == 17 and best["text"] == planted and best["metadata"] == {"id": "planted"}
    assert [p["number"] for p in best["pages"]] == [2]
    scores = [h["score"] for h in body["results"]]
    assert scores == sorted(scores, reverse=True) and scores[0] > scores[1]
    # the scores are the cosines of the real vectors
    q, v = encoder.run(["a sailor saved people from a shipwreck at sea", planted], normalize=True)
    assert abs(float(q @ v) - scores[0]) < 1e-4


def test_search_uses_the_cached_vectors(client, data, encoder):
    get_doc(client)
    before = encoder.sentences_encoded
    client.get("/documents/doc/search", query_string={"q": "first"})
    assert encoder.sentences_encoded == before + 1  # the query only


def test_k_larger_than_the_document_returns_every_sentence(client, data):
    body = orjson.loads(client.get("/documents/doc/search", query_string={"q": "page", "k": 50}).data)
    assert sorted(h["index"] for h in body["results"]) == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/documents/absent", 404, "document_not_found"),
        ("/documents/absent/search?q=x", 404, "document_not_found"),
        ("/documents/doc/search", 400, "missing_query"),
        ("/documents/doc/search?q=x&k=0", 400, "invalid_option"),
        ("/documents/doc/search?q=x&k=101", 400, "invalid_option"),
        ("/documents/doc/search?q=x&k=many", 400, "invalid_option"),
        ("/documents/doc?normalize=perhaps", 400, "invalid_option"),
    ],
)
def test_document_request_errors(client, data, path, status, code):
    assert_error(client.get(path), status, code)


def test_invalid_document_is_422_naming_file_and_item(client, settings):
    write(settings.data_dir, texts=[{"text": "ok", "pages": ["missing-page"]}])
    error = assert_error(client.get("/documents/doc"), 422, "invalid_document")
    assert error["message"] == "texts_doc.json item 0: page id 'missing-page' is not in the pages file"
    assert_error(client.get("/documents/doc/search?q=x"), 422, "invalid_document")


def quote_all(doc_id: str) -> str:
    return "".join(f"%{b:02X}" for b in doc_id.encode())


@pytest.mark.parametrize("doc_id", [i for i in HOSTILE_IDS if i])  # "/documents/" is the listing
@pytest.mark.parametrize("encode", [False, True], ids=["raw", "percent-encoded"])
def test_hostile_ids_over_http_never_leave_the_data_folder(client, settings, tmp_path, doc_id, encode):
    # A document that a traversal would find, one level above the data folder.
    write(tmp_path, "secret")
    write(settings.data_dir, "doc")
    path = "/documents/" + (quote_all(doc_id) if encode else doc_id)
    for suffix in ("", "/search?q=x"):
        r = client.get(path + suffix)
        assert r.status_code in (400, 404), (path, r.status_code)
        body = orjson.loads(r.data)
        assert set(body["error"]) == {"status", "code", "message"}
        assert "secret" not in r.get_data(as_text=True).replace(doc_id, "")


def test_output_options_give_what_embed_gives_for_the_same_texts(client, data):
    texts = [t["text"] for t in TEXTS]
    for options in ({"dimensions": "64", "normalize": "true"}, {"precision": "int8"}, {"precision": "ubinary", "dimensions": "128"}):
        doc = get_doc(client, **options)
        embedded = client.post("/embed", json={"message": texts, **options}).get_json()
        assert {k: doc[k] for k in ("dimension", "normalized", "precision", "encoding")} == {
            k: embedded[k] for k in ("dimension", "normalized", "precision", "encoding")
        }
        ours = np.array([s["embedding"] for s in doc["sentences"]], dtype=np.float64)
        theirs = np.array(embedded["embeddings"], dtype=np.float64)
        assert ours.shape == theirs.shape
        # Computed in another batch: floats agree closely, a code may sit one step off a boundary.
        tolerance = 1e-5 if "precision" not in options else 1 if options["precision"] == "int8" else 0
        if options.get("precision") == "ubinary":
            assert (np.unpackbits(ours.astype(np.uint8), axis=1) != np.unpackbits(theirs.astype(np.uint8), axis=1)).mean() < 0.01
        else:
            assert np.abs(ours - theirs).max() <= tolerance


def test_a_cut_is_served_from_the_cached_full_vectors(client, data, encoder):
    full = get_doc(client)
    before = encoder.sentences_encoded
    cut = get_doc(client, dimensions="32", normalize="true")
    assert cut["cached"] is True and encoder.sentences_encoded == before
    vectors = np.array([s["embedding"][:32] for s in full["sentences"]], dtype=np.float32)
    expected = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    assert np.allclose([s["embedding"] for s in cut["sentences"]], expected, atol=1e-6)


def test_base64_document_vectors_decode_to_the_float_ones(client, data):
    floats = get_doc(client)
    packed = get_doc(client, encoding="base64")
    assert packed["encoding"] == "base64"
    for f, p in zip(floats["sentences"], packed["sentences"], strict=False):
        assert np.array_equal(outputs.decode_base64(p["embedding"], "float32"), np.array(f["embedding"], dtype=np.float32))


@pytest.mark.parametrize(("query", "message"), [({"precision": "int4"}, "must be one of"), ({"dimensions": "0"}, "between 1 and 384")])
def test_a_bad_output_option_is_refused_before_anything_is_streamed(client, data, query, message):
    r = client.get("/documents/doc", query_string=query)
    assert r.status_code == 400
    assert message in r.get_json()["error"]["message"]


def test_a_streamed_texts_file_is_served_and_searched_like_a_small_one(client, data, monkeypatch):
    from smls import spill

    small = get_doc(client)
    hits = client.get("/documents/doc/search", query_string={"q": "a page break", "k": 2}).get_json()["results"]
    monkeypatch.setattr(spill, "STREAM_ABOVE", 0)  # as if the texts file were over 32 MiB
    streamed = get_doc(client)
    assert streamed == {**small, "cached": True}  # the same digest: the cached vectors serve it
    assert client.get("/documents/doc/search", query_string={"q": "a page break", "k": 2}).get_json()["results"] == hits
    assert client.get("/documents").get_json()["documents"][0]["sentences"] == 4
