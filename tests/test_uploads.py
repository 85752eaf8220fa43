"""PUT and DELETE /documents/<id>, and GET /search across documents, through Flask's test client on the real encoder, on both stores."""

from __future__ import annotations

import io
import json

import numpy as np
import orjson
import pytest

from smls import uploads
from smls.errors import InvalidInput
from smls.forms import Part
from smls.index import SearchIndex
from smls.search import ChosenIndex
from tests.helpers import P1, P2, P3, PAGES, STORES, TEXTS, assert_error, store_for, write

PAGES_JSON = [
    {"id": P1, "page_number": 1, "chapter": "One", "heading": "Beginnings"},
    {"id": P2, "page_number": 2, "chapter": "One", "heading": "Middle, with comma"},
    {"id": P3, "page_number": 3, "chapter": "Two", "heading": "End"},
]
OTHER = [
    {"text": "Volcanoes erupt molten rock from deep below the crust.", "pages": ["v1"]},
    {"text": "The recipe needs two eggs and a cup of flour.", "pages": ["v2"]},
    {"text": "Lava flows cooled into black basalt fields.", "pages": ["v2"]},
]
OTHER_PAGES = [{"id": "v1", "page_number": 10}, {"id": "v2", "page_number": 11, "note": 3.5}]


@pytest.fixture(params=STORES)
def settings(request, settings):
    """Every test here runs on every store: SQLite files, and a real PostgreSQL with pgvector and without (a fresh database per test)."""
    from dataclasses import replace

    return replace(settings, max_upload_bytes=64 * 1024, store=store_for(request, request.param))


def chosen(index):
    """The index a search uses (a PostgreSQL store's is chosen when the database first answers)."""
    return index.chosen() if isinstance(index, ChosenIndex) else index


def put_files(client, doc_id, texts=TEXTS, pages=PAGES, **query):
    texts_bytes = texts if isinstance(texts, bytes) else json.dumps(texts).encode()
    pages_bytes = pages if isinstance(pages, bytes) else pages.encode()
    data = {"texts": (io.BytesIO(texts_bytes), "texts.json"), "pages": (io.BytesIO(pages_bytes), "pages.csv")}
    return client.put(f"/documents/{doc_id}", data=data, content_type="multipart/form-data", query_string=query)


def put_json(client, doc_id, texts=TEXTS, pages=PAGES_JSON, **query):
    return client.put(f"/documents/{doc_id}", json={"texts": texts, "pages": pages}, query_string=query)


def search(client, **query):
    r = client.get("/search", query_string=query)
    assert r.status_code == 200, r.data
    return orjson.loads(r.data)


# --- uploads ---------------------------------------------------------------------------


def test_an_upload_reads_like_the_same_files_on_disk(client, settings):
    r = put_files(client, "up")
    assert r.status_code == 201, r.data
    summary = orjson.loads(r.data)
    assert summary["sentences"] == 4 and summary["pages"] == 3 and summary["replaced"] is False and summary["computed"] is False
    write(settings.data_dir, "disk")
    uploaded, on_disk = client.get("/documents/up").get_json(), client.get("/documents/disk").get_json()
    assert uploaded["sentences"] == on_disk["sentences"]  # text, metadata, pages and vectors alike
    listing = client.get("/documents").get_json()["documents"]
    assert {"id": "up", "source": "upload", "sentences": 4} in listing and {"id": "disk", "source": "files", "sentences": 4} in listing


def test_json_upload_equals_multipart_upload(client):
    assert put_json(client, "j").status_code == 201
    assert put_files(client, "m").status_code == 201
    j, m = client.get("/documents/j").get_json(), client.get("/documents/m").get_json()
    assert j["sentences"] == m["sentences"]
    assert j["sentences"][1]["pages"][1]["metadata"] == {"chapter": "One", "heading": "Middle, with comma"}


def test_replacing_answers_200_and_serves_only_the_new_version(client, encoder):
    assert put_json(client, "doc", compute="true").get_json()["computed"] is True
    r = put_json(client, "doc", texts=OTHER, pages=OTHER_PAGES)
    assert r.status_code == 200 and r.get_json()["replaced"] is True
    body = client.get("/documents/doc").get_json()
    assert [s["text"] for s in body["sentences"]] == [t["text"] for t in OTHER]
    assert body["sentences"][1]["pages"][0]["metadata"] == {"note": "3.5"}
    assert np.allclose(np.array([s["embedding"] for s in body["sentences"]]), encoder.run([t["text"] for t in OTHER]), atol=1e-5)


def test_compute_true_fills_the_vectors_before_answering(client):
    r = put_files(client, "c", compute="true")
    assert r.status_code == 201 and r.get_json()["computed"] is True
    assert client.get("/documents/c").get_json()["cached"] is True


@pytest.mark.parametrize(
    ("texts", "pages", "words"),
    [
        (b"[{\"text\": \"x\", \"pages\": [\"nope\"]}]", PAGES, "texts_bad.json item 0: page id 'nope' is not in the pages file"),
        (b"{\"text\": 1}", PAGES, "texts_bad.json must hold a JSON list"),
        (b"[not json", PAGES, "texts_bad.json is not valid JSON"),
        (TEXTS, b"page_id,page_number\np,one\n", "pages_bad.csv line 2: page number 'one' is not an integer"),
        (TEXTS, b"\xff\xfe", "pages_bad.csv is not UTF-8"),
    ],
)
def test_a_bad_upload_gets_the_message_a_bad_file_gets_and_changes_nothing(client, settings, texts, pages, words):
    assert put_files(client, "bad").status_code == 201
    before = client.get("/documents/bad").get_json()
    error = assert_error(put_files(client, "bad", texts=texts, pages=pages), 422, "invalid_document")
    assert words in error["message"]
    write(settings.data_dir, "bad2", texts=texts if isinstance(texts, bytes) else None, pages=pages)
    from_file = assert_error(client.get("/documents/bad2"), 422, "invalid_document")
    assert from_file["message"].replace("bad2", "bad") == error["message"]  # the same words for the same mistake
    assert client.get("/documents/bad").get_json() == {**before, "cached": True}  # the old version, whole


@pytest.mark.parametrize(
    ("body", "code", "words"),
    [
        ({"texts": TEXTS}, "invalid_upload", "'pages' is missing"),
        ({"texts": TEXTS, "pages": PAGES_JSON, "extra": 1}, "unknown_field", "extra"),
        ({"texts": TEXTS, "pages": "p1,1"}, "invalid_upload", "'pages' is a string"),
        ({"texts": TEXTS, "pages": [{"id": 5, "page_number": 1}]}, "invalid_upload", "pages item 0: \"id\" must be a string, got 5"),
        ({"texts": TEXTS, "pages": [{"id": "a", "page_number": "1"}]}, "invalid_upload", "\"page_number\" must be an integer"),
        ({"texts": TEXTS, "pages": [{"id": "a", "page_number": True}]}, "invalid_upload", "\"page_number\" must be an integer, got true"),
        ({"texts": TEXTS, "pages": [{"id": "a", "page_number": 1, "tags": ["x"]}]}, "invalid_upload", "'tags' must be a string or a number"),
        ([1, 2], "invalid_json", "the JSON body is an array"),
    ],
)
def test_bad_json_uploads(client, body, code, words):
    assert words in assert_error(client.put("/documents/x", json=body), 400, code)["message"]
    assert_error(client.get("/documents/x"), 404, "document_not_found")


def test_bad_multipart_uploads(client):
    no_pages = client.put("/documents/x", data={"texts": (io.BytesIO(b"[]"), "t.json")}, content_type="multipart/form-data")
    assert "no 'pages' part" in assert_error(no_pages, 400, "invalid_upload")["message"]
    extra = client.put("/documents/x", data={"texts": (io.BytesIO(b"[]"), "t"), "pages": (io.BytesIO(b"a,b\n"), "p"), "other": "1"}, content_type="multipart/form-data")
    assert_error(extra, 400, "unknown_field")
    assert_error(client.put("/documents/x", data="texts=[]", content_type="text/plain"), 415, "unsupported_media_type")
    assert_error(client.put("/documents/x"), 400, "missing_message")
    assert_error(client.put("/documents/..", json={"texts": [], "pages": []}), 400, "invalid_doc_id")


def test_uploads_have_their_own_size_limit(client, settings):
    # Bigger than SMLS_MAX_BODY_BYTES (4096 here), within SMLS_MAX_UPLOAD_BYTES: accepted.
    many = [{"text": f"sentence number {i} of a long upload", "pages": [P1]} for i in range(200)]
    assert len(json.dumps(many)) > settings.max_body_bytes
    assert put_files(client, "big", texts=many).status_code == 201
    huge = [{"text": "x" * 1000, "pages": []} for _ in range(100)]
    error = assert_error(put_files(client, "huge", texts=huge), 413, "body_too_large")
    assert "SMLS_MAX_UPLOAD_BYTES" in error["message"]
    assert "SMLS_MAX_BODY_BYTES" in assert_error(client.post("/embed", json={"message": ["x" * 5000]}), 413, "body_too_large")["message"]


def test_files_in_the_data_folder_are_not_shadowed_or_deleted_over_http(client, settings):
    write(settings.data_dir, "disk")
    assert "change the files there" in assert_error(put_json(client, "disk"), 409, "document_conflict")["message"]
    assert "remove the files there" in assert_error(client.delete("/documents/disk"), 409, "document_conflict")["message"]
    assert client.get("/documents/disk").status_code == 200


def test_delete_removes_the_document_and_its_vectors(client):
    r = put_json(client, "gone", compute="true")
    embedder = client.application.extensions["smls"].embedders[0].documents
    key = embedder.key_for(r.get_json()["digest"])
    assert embedder.cache.is_complete(key) and len(embedder.cache.stored(key)) == 1
    r = client.delete("/documents/gone")
    assert r.status_code == 200 and r.get_json() == {"doc_id": "gone", "deleted": True}
    assert not embedder.cache.is_complete(key) and embedder.cache.stored(key) == set()
    assert_error(client.get("/documents/gone"), 404, "document_not_found")
    assert_error(client.delete("/documents/gone"), 404, "document_not_found")


def test_upload_and_delete_need_the_api_key(settings, encoder):
    from dataclasses import replace

    import smls

    client = smls.create_app(replace(settings, api_key="k" * 20), encoder=encoder).test_client()
    assert_error(put_json(client, "x"), 401, "unauthorized")
    assert_error(client.delete("/documents/x"), 401, "unauthorized")
    auth = {"Authorization": "Bearer " + "k" * 20}
    assert client.put("/documents/x", json={"texts": TEXTS, "pages": PAGES_JSON}, headers=auth).status_code == 201


# --- search across documents -------------------------------------------------------------


def test_search_finds_the_best_sentences_over_every_document(client, settings):
    write(settings.data_dir, "disk")  # a file document, never fetched: /search computes it
    assert put_json(client, "volcano", texts=OTHER, pages=OTHER_PAGES).status_code == 201
    body = search(client, q="molten lava and basalt", k=3)
    assert body["skipped"] == [] and body["k"] == 3
    assert [(h["doc_id"], h["index"]) for h in body["results"][:2]] == [("volcano", 0), ("volcano", 2)] or [
        (h["doc_id"], h["index"]) for h in body["results"][:2]
    ] == [("volcano", 2), ("volcano", 0)]
    top = body["results"][0]
    assert top["pages"][0]["number"] in (10, 11) and set(top) == {"doc_id", "score", "index", "text", "metadata", "pages"}
    scores = [h["score"] for h in body["results"]]
    assert scores == sorted(scores, reverse=True)
    first = search(client, q="The first sentence.", k=1)["results"][0]
    assert (first["doc_id"], first["index"], first["pages"][0]["id"]) == ("disk", 0, P1)


def test_search_scores_are_the_exact_cosines(client, encoder):
    put_json(client, "volcano", texts=OTHER, pages=OTHER_PAGES)
    hits = search(client, q="eggs and flour", k=3)["results"]
    q = encoder.run(["eggs and flour"])[0]
    vectors = encoder.run([t["text"] for t in OTHER])
    cosines = vectors @ q / np.linalg.norm(vectors, axis=1) / np.linalg.norm(q)
    for hit in hits:
        assert abs(hit["score"] - cosines[hit["index"]]) < 2e-3


def test_a_hit_shows_its_sentence_as_the_document_does(client):
    put_json(client, "volcano", texts=OTHER, pages=OTHER_PAGES)
    sentences = client.get("/documents/volcano").get_json()["sentences"]
    for mode in ("vector", "keyword", "hybrid"):
        hits = search(client, q="lava eggs basalt", k=3, mode=mode)["results"]
        assert len(hits) >= 2
        for hit in hits:
            shown = {key: value for key, value in sentences[hit["index"]].items() if key != "embedding"}
            assert {key: value for key, value in hit.items() if key not in ("doc_id", "score", "ranks")} == shown


def test_a_hit_is_read_from_the_store_as_shown_and_only_for_the_current_version(client):
    store = client.application.extensions["smls"].engine.library.store
    digest = put_json(client, "volcano", texts=OTHER, pages=OTHER_PAGES).get_json()["digest"]
    kept = store.shown([("volcano", digest, 2), ("volcano", digest, 9), ("volcano", "0" * 64, 0)])
    assert list(kept) == [("volcano", 2)] and orjson.loads(kept[("volcano", 2)])["text"] == OTHER[2]["text"]
    put_json(client, "volcano")  # replaced: the old version's sentences are gone with it
    assert store.shown([("volcano", digest, 2)]) == {}
    client.delete("/documents/volcano")
    assert store.shown([("volcano", digest, 0)]) == {}


def test_a_document_stored_without_its_shown_sentences_is_still_shown(client):
    """A store written before smls kept each sentence as hits show it: the hit is read from the parsed document, and its sentences kept then."""
    from smls.store import StoredDocument

    library = client.application.extensions["smls"].engine.library
    texts, pages = uploads.from_json({"texts": OTHER, "pages": OTHER_PAGES})
    doc, _ = library.put("volcano", texts, pages)
    library.store.put(StoredDocument("volcano", texts, pages, doc.digest, len(doc.sentences)))  # no shown sentences
    assert library.store.shown([("volcano", doc.digest, 0)]) == {}
    top = search(client, q="molten lava and basalt", k=1)["results"][0]
    assert (top["doc_id"], top["text"]) == ("volcano", OTHER[top["index"]]["text"]) and top["pages"][0]["number"] in (10, 11)
    # Shown once from the parsed document, its sentences are kept for the next hits.
    kept = library.store.shown([("volcano", doc.digest, i) for i in range(len(OTHER))])
    assert [orjson.loads(kept[("volcano", i)])["text"] for i in range(len(OTHER))] == [t["text"] for t in OTHER]
    assert search(client, q="molten lava and basalt", k=1, mode="keyword")["results"][0]["doc_id"] == "volcano"
    assert not library.keep_shown(doc)  # kept already: nothing written twice


def test_the_store_generations_move_with_every_change(client, settings):
    state = client.application.extensions["smls"]
    library, cache = state.library, state.embedders[0].documents.cache
    seen = [(library.generation(), cache.generation())]

    one_number = settings.store is not None and settings.store.startswith("postgresql")  # one database, one number for both

    def moved(documents: bool, published: bool) -> None:
        now = (library.generation(), cache.generation())
        expected = (documents or published,) * 2 if one_number else (documents, published)
        assert (now[0] != seen[-1][0], now[1] != seen[-1][1]) == expected, (seen[-1], now)
        seen.append(now)

    put_json(client, "a", texts=OTHER, pages=OTHER_PAGES)
    moved(documents=True, published=False)
    search(client, q="lava")  # computes and publishes "a"
    moved(documents=False, published=True)
    search(client, q="lava")
    moved(documents=False, published=False)
    put_json(client, "a")  # replaced: the old version leaves the index at once
    moved(documents=True, published=True)
    search(client, q="lava")
    moved(documents=False, published=True)
    client.delete("/documents/a")
    moved(documents=True, published=True)  # (its vectors leave the index with it)


def test_a_search_with_nothing_changed_lists_no_documents(client, monkeypatch):
    library = client.application.extensions["smls"].library
    listed = []
    listing = library.store.listing
    monkeypatch.setattr(library.store, "listing", lambda: listed.append(1) or listing())
    put_json(client, "a", texts=OTHER, pages=OTHER_PAGES)
    search(client, q="lava")  # computes and publishes "a": the numbers move
    first = search(client, q="lava")  # lists every document once more, and keeps the answer
    n = len(listed)
    assert n >= 1 and search(client, q="lava") == first and len(listed) == n  # nothing changed: nothing listed
    put_json(client, "b")
    assert {h["doc_id"] for h in search(client, q="lava", k=10)["results"]} == {"a", "b"} and len(listed) > n


def test_a_search_sees_what_another_instance_changed_and_new_files(client, settings, encoder):
    import smls

    other = smls.create_app(settings, encoder=encoder).test_client()
    put_json(client, "a")
    assert {h["doc_id"] for h in search(client, q="volcano lava", k=10)["results"]} == {"a"}
    assert put_json(other, "volcano", texts=OTHER, pages=OTHER_PAGES).status_code == 201
    assert search(client, q="volcano lava", k=1)["results"][0]["doc_id"] == "volcano"
    assert other.delete("/documents/volcano").status_code == 200
    assert {h["doc_id"] for h in search(client, q="volcano lava", k=10)["results"]} == {"a"}
    write(settings.data_dir, "disk")  # a file dropped into the data folder
    assert "disk" in {h["doc_id"] for h in search(client, q="The first sentence.", k=10)["results"]}
    (settings.data_dir / "texts_disk.json").unlink()
    assert "disk" not in {h["doc_id"] for h in search(client, q="The first sentence.", k=10)["results"]}


def test_search_follows_replacements_and_deletes(client):
    put_json(client, "a", texts=OTHER, pages=OTHER_PAGES)
    assert search(client, q="volcano lava", k=1)["results"][0]["doc_id"] == "a"
    put_json(client, "a")  # replaced by a text with no volcano in it
    hits = search(client, q="volcano lava", k=10)["results"]
    assert all("Lava" not in h["text"] and "Volcano" not in h["text"] for h in hits) and {h["doc_id"] for h in hits} == {"a"}
    client.delete("/documents/a")
    assert search(client, q="volcano lava", k=10)["results"] == []


def test_search_restricted_to_some_documents(client):
    put_json(client, "a", texts=OTHER, pages=OTHER_PAGES)
    put_json(client, "b")
    assert {h["doc_id"] for h in search(client, q="volcano", k=10, doc="b")["results"]} == {"b"}
    assert {h["doc_id"] for h in search(client, q="volcano", k=10, doc="a,b")["results"]} == {"a", "b"}
    assert_error(client.get("/search", query_string={"q": "x", "doc": "nope"}), 404, "document_not_found")
    assert_error(client.get("/search", query_string={"q": "x", "doc": ","}), 400, "invalid_option")
    assert_error(client.get("/search", query_string={"q": "x", "doc": "../etc"}), 400, "invalid_doc_id")


def test_search_skips_a_broken_document_and_says_why(client, settings):
    put_json(client, "good", texts=OTHER, pages=OTHER_PAGES)
    write(settings.data_dir, "broken", texts=b"[oops")
    body = search(client, q="volcano", k=2)
    assert len(body["results"]) == 2 and body["skipped"][0]["doc_id"] == "broken" and body["skipped"][0]["code"] == "invalid_document"
    assert_error(client.get("/search", query_string={"q": "x", "doc": "broken"}), 422, "invalid_document")


def test_search_input_errors(client):
    assert_error(client.get("/search"), 400, "missing_query")
    assert_error(client.get("/search", query_string={"q": "  "}), 400, "missing_query")
    assert_error(client.get("/search", query_string={"q": "x", "k": "0"}), 400, "invalid_option")
    assert_error(client.get("/search", query_string={"q": "x", "model": "nope"}), 404, "model_not_found")
    assert_error(client.get("/search", query_string={"q": "x", "limit": "3"}), 400, "unknown_field")
    assert search(client, q="anything")["results"] == []  # no documents: nothing found, no error


def test_the_index_survives_a_restart_without_recomputing(settings, encoder):
    import smls

    client = smls.create_app(settings, encoder=encoder).test_client()
    put_json(client, "a", texts=OTHER, pages=OTHER_PAGES)
    first = search(client, q="basalt", k=2)
    index = chosen(client.application.extensions["smls"].embedders[0].search.index)
    in_memory = isinstance(index, SearchIndex)  # (with pgvector the database holds it: nothing to save or load)
    if in_memory:
        index.save()
    again = smls.create_app(settings, encoder=encoder)
    restarted = chosen(again.extensions["smls"].embedders[0].search.index)
    assert isinstance(restarted, SearchIndex) == in_memory
    if in_memory:
        assert restarted.held == index.held and len(restarted.ann) == 3  # loaded from disk, not rebuilt
    assert restarted.sync() == 0  # nothing to catch up on
    assert search(again.test_client(), q="basalt", k=2)["results"] == first["results"]


def test_a_store_that_cannot_be_reached_is_a_503_not_a_500(tmp_path, encoder):
    import smls
    from smls.config import Settings
    from tests.helpers import free_port

    dead = f"postgresql://smls@127.0.0.1:{free_port()}/none"
    client = smls.create_app(Settings(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", store=dead), encoder=encoder).test_client()
    searches = [client.get(f"/search?q=x&mode={mode}") for mode in ("vector", "keyword", "hybrid")]
    for response in (client.get("/documents"), put_json(client, "x"), *searches, client.delete("/documents/x")):
        error = assert_error(response, 503, "store_unavailable")
        assert "PostgreSQL" in error["message"] and response.headers["Retry-After"] == "1"


def test_instances_sharing_postgresql_keep_their_own_files_out_of_each_others_results(tmp_path, postgres, encoder):
    import smls
    from smls.config import Settings

    dsn = postgres.fresh_database()
    a, b = (smls.create_app(Settings(data_dir=tmp_path / n, cache_dir=tmp_path / f"cache-{n}", store=dsn), encoder=encoder).test_client() for n in "ab")
    write(tmp_path / "a", "only-on-a", texts=OTHER, pages="page_id,page_number\nv1,1\nv2,2\n")
    put_json(b, "shared")  # an upload: both see it
    assert search(a, q="lava", k=1)["results"][0]["doc_id"] == "only-on-a"
    index = a.application.extensions["smls"].embedders[0].search.index
    versions = index.cache.published(index.model)
    found_by_b = search(b, q="lava", k=3)["results"]
    assert {h["doc_id"] for h in found_by_b} == {"shared"} and len(found_by_b) == 3  # still k results
    assert index.cache.published(index.model) == versions  # b's search did not take a's file out of the index
    assert search(a, q="lava", k=1)["results"][0]["doc_id"] == "only-on-a"


# --- the pure parts -----------------------------------------------------------------------


def test_pages_csv_writes_what_the_json_says():
    csv = uploads.pages_csv([{"id": "a", "page_number": 1, "x": "1,2"}, {"id": "b", "page_number": 2, "y": 2, "x": None}])
    assert csv == b'id,page_number,x,y\na,1,"1,2",\nb,2,,2\n'


def test_from_parts_refuses_a_repeated_part():
    with pytest.raises(InvalidInput, match="more than one 'texts' part"):
        uploads.from_parts([Part("texts", "a", b"[]"), Part("texts", "b", b"[]"), Part("pages", "p", b"")])
