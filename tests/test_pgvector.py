"""Search in PostgreSQL with pgvector (smls.store.pgvector), against a real PostgreSQL 18 started by the tests.

The rest of the search tests run on every store (tests/test_uploads.py, test_documents_http.py:
SQLite, PostgreSQL with pgvector, and without it); these are about pgvector itself.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import psycopg
import pytest

import smls
from smls.index import SearchIndex
from smls.search import ChosenIndex
from smls.store.pgvector import PgvectorIndex, table_name
from tests.helpers import write_document


def index_of(app):
    """The search index the app's default model searches with."""
    index = app.extensions["smls"].embedders[0].search.index
    return index.chosen() if isinstance(index, ChosenIndex) else index


def search(client, **query):
    r = client.get("/search", query_string=query)
    assert r.status_code == 200, r.data
    return r.get_json()


@pytest.fixture()
def db(postgres):
    return postgres.fresh_database()


@pytest.fixture()
def app(settings, encoder, db):
    return smls.create_app(replace(settings, store=db, max_messages=64), encoder=encoder)


class Lines(logging.Handler):
    """The log lines of smls's logger (it does not propagate to the root, where caplog listens)."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_each_store_gets_the_index_it_should(settings, encoder, postgres, postgres_without_pgvector):
    assert isinstance(index_of(smls.create_app(settings, encoder=encoder)), SearchIndex)
    assert isinstance(index_of(smls.create_app(replace(settings, store=postgres.fresh_database()), encoder=encoder)), PgvectorIndex)
    seen = Lines()
    logging.getLogger("smls").addHandler(seen)
    try:
        fallback = smls.create_app(replace(settings, store=postgres_without_pgvector.fresh_database()), encoder=encoder)
    finally:
        logging.getLogger("smls").removeHandler(seen)
    assert isinstance(index_of(fallback), SearchIndex)
    lines = [line for line in seen.lines if "pgvector is not available" in line]
    assert lines == [
        "pgvector is not available in SMLS_STORE's database (extension \"vector\" is not available): each worker keeps its own search index"
    ]


def test_search_finds_what_exact_cosine_finds(app, settings, encoder, db):
    write_document(settings.data_dir, "big", 400)
    client = app.test_client()
    found = search(client, q="a quiet harbour at night", k=10)["results"]
    texts = [s["text"] for s in client.get("/documents/big").get_json()["sentences"]]
    vectors = encoder.run(texts, normalize=True)
    query = encoder.run(["a quiet harbour at night"], normalize=True)[0]
    scores = vectors @ query
    best = np.argsort(-scores, kind="stable")[:10]
    assert [hit["index"] for hit in found] == best.tolist() or len({hit["index"] for hit in found} & set(best.tolist())) >= 9
    for hit in found:
        assert abs(hit["score"] - scores[hit["index"]]) < 2e-3  # halfvec: about three decimal digits
    with psycopg.connect(db) as conn:
        held = conn.execute(f"SELECT count(*) FROM {table_name(index_of(app).model)}").fetchone()[0]
    assert held == 400  # the vectors are in the database, not in the worker


def test_a_search_restricted_to_a_small_document_still_returns_k(app, settings):
    write_document(settings.data_dir, "big", 1200, seed=1)
    write_document(settings.data_dir, "small", 30, seed=2)
    client = app.test_client()
    search(client, q="warm up", k=1)  # both documents indexed
    found = search(client, q="the captain counts the lanterns", k=10, doc="small")["results"]
    assert len(found) == 10 and {hit["doc_id"] for hit in found} == {"small"}
    assert [hit["score"] for hit in found] == sorted((hit["score"] for hit in found), reverse=True)


def test_another_instance_sees_a_change_the_moment_it_commits(settings, encoder, db, tmp_path):
    """Two apps on one database, no LISTEN between them: pgvector is the only index, so there is nothing to catch up."""
    one = smls.create_app(replace(settings, store=db, cache_dir=tmp_path / "one"), encoder=encoder).test_client()
    two = smls.create_app(replace(settings, store=db, cache_dir=tmp_path / "two", data_dir=tmp_path / "empty"), encoder=encoder).test_client()
    texts = [{"text": "The lighthouse keeper logged a storm from the north.", "pages": ["p1"]}]
    assert one.put("/documents/log", json={"texts": texts, "pages": [{"id": "p1", "page_number": 1}]}, query_string={"compute": "true"}).status_code == 201
    assert [hit["doc_id"] for hit in search(two, q="storm at the lighthouse", k=3)["results"]] == ["log"]
    replaced = [{"text": "Bread rises in a warm kitchen.", "pages": ["p1"]}]
    one.put("/documents/log", json={"texts": replaced, "pages": [{"id": "p1", "page_number": 1}]}, query_string={"compute": "true"})
    hits = search(two, q="storm at the lighthouse", k=3)["results"]
    assert [hit["text"] for hit in hits] == ["Bread rises in a warm kitchen."]  # the old version left with the new one's commit
    assert one.delete("/documents/log").status_code == 200
    assert search(two, q="storm at the lighthouse", k=3)["results"] == []
    with psycopg.connect(db) as conn:
        assert conn.execute(f"SELECT count(*) FROM {table_name(index_of(two.application).model)}").fetchone()[0] == 0
