"""PostgreSQL: documents, their vectors and what each search index holds, shared by every smls instance that names it.

Set SMLS_STORE=postgresql://user@host:port/db. Uploads, computed vectors (bytea, float32
rows; pgvector is not needed) and the `published` table live in the database, so an
upload through one instance is served, computed once and found by search through all.
Every change to `published` sends NOTIFY smls_published; each worker LISTENs and brings
its in-memory index up to date at once (and checks again before each search anyway, so
a lost notification costs nothing but a moment).

Each thread of each process has its own connection, in autocommit mode; a write of
several statements is one transaction. A database that cannot be reached is a 503
(store_unavailable) for the request, and the next request connects again.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import psycopg

from smls.errors import StoreUnavailable
from smls.store.base import KeywordHit, Neighbour, StoredDocument
from smls.store.pgvector import EF_SEARCH

log = logging.getLogger("smls")

CHANNEL = "smls_published"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS smls_documents (
    doc_id TEXT PRIMARY KEY, texts BYTEA NOT NULL, pages BYTEA NOT NULL,
    digest TEXT NOT NULL, sentences INTEGER NOT NULL, updated TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS smls_entries (
    key TEXT PRIMARY KEY, doc_id TEXT NOT NULL, model TEXT NOT NULL, count INTEGER NOT NULL,
    dimension INTEGER NOT NULL, complete BOOLEAN NOT NULL DEFAULT false, updated TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS smls_entries_doc ON smls_entries (doc_id, model);
CREATE TABLE IF NOT EXISTS smls_chunks (
    key TEXT NOT NULL, chunk INTEGER NOT NULL, rows INTEGER NOT NULL, data BYTEA NOT NULL, PRIMARY KEY (key, chunk)
);
-- Each uploaded sentence as a search hit shows it: a hit reads its row, not its whole document
-- parsed (at a million sentences, ten hits in ten documents took most of a search's time).
CREATE TABLE IF NOT EXISTS smls_sentences (
    doc_id TEXT NOT NULL REFERENCES smls_documents ON DELETE CASCADE, idx INTEGER NOT NULL, shown BYTEA NOT NULL, PRIMARY KEY (doc_id, idx)
);
CREATE SEQUENCE IF NOT EXISTS smls_versions;
CREATE TABLE IF NOT EXISTS smls_published (
    id BIGINT PRIMARY KEY DEFAULT nextval('smls_versions'), model TEXT NOT NULL, doc_id TEXT NOT NULL,
    key TEXT NOT NULL, count INTEGER NOT NULL, UNIQUE (model, doc_id)
);
-- Keyword search: every document's current sentences once, whatever the model, with a
-- GIN index over their words ('simple': no stemming, no stop words, any language).
CREATE TABLE IF NOT EXISTS smls_keyword_docs (doc_id TEXT PRIMARY KEY, digest TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS smls_keywords (
    doc_id TEXT NOT NULL REFERENCES smls_keyword_docs ON DELETE CASCADE, idx INTEGER NOT NULL, text TEXT NOT NULL,
    words tsvector GENERATED ALWAYS AS (to_tsvector('simple', text)) STORED, PRIMARY KEY (doc_id, idx)
);
CREATE INDEX IF NOT EXISTS smls_keywords_words ON smls_keywords USING GIN (words);
-- A number that moves whenever a document or a published version changes, whoever changes
-- it: a search that finds it where it was skips listing every document (smls.search).
-- Bumped by triggers in the writing transaction, so it moves once that commits; it starts
-- at random, so a database made afresh never repeats an old number.
CREATE TABLE IF NOT EXISTS smls_generation (id INTEGER PRIMARY KEY, n BIGINT NOT NULL);
INSERT INTO smls_generation VALUES (1, (random() * 1e15)::bigint) ON CONFLICT DO NOTHING;
CREATE OR REPLACE FUNCTION smls_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN UPDATE smls_generation SET n = n + 1 WHERE id = 1; RETURN NULL; END $$;
-- (made only where missing: making a trigger locks its table against writers)
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'smls_documents_changed') THEN
        CREATE TRIGGER smls_documents_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON smls_documents
            FOR EACH STATEMENT EXECUTE FUNCTION smls_bump();
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'smls_published_changed') THEN
        CREATE TRIGGER smls_published_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON smls_published
            FOR EACH STATEMENT EXECUTE FUNCTION smls_bump();
    END IF;
END $$;
"""


class Database:
    """Connections to one PostgreSQL database: one per thread and per process, the schema made once."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._local = threading.local()
        self._schema_made_by: int | None = None
        # Run on every new connection, after the schema (pgvector's type adapters are per connection).
        self.on_connect: list[Callable[[psycopg.Connection], None]] = []

    def connection(self) -> psycopg.Connection:
        """This thread's connection (a new one after a fork or a broken connection)."""
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.broken or self._local.pid != os.getpid():
            try:
                conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=10)
            except psycopg.OperationalError as exc:
                raise StoreUnavailable(f"the document store (PostgreSQL) cannot be reached: {_first_line(exc)}") from None
            self._local.conn, self._local.pid = conn, os.getpid()
            if self._schema_made_by != os.getpid():
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(72710)")  # one process at a time creates the tables
                    conn.execute(_SCHEMA)
                self._schema_made_by = os.getpid()
            for hook in self.on_connect:
                hook(conn)
        return conn

    def generation(self) -> int:
        """A number that differs whenever any document or published version has changed since it was last read."""
        return int(self.run("SELECT n FROM smls_generation WHERE id = 1")[0][0])

    def run(self, sql: str, args: tuple = ()) -> list[tuple]:
        """Execute one statement and fetch its rows (none for a statement that returns none)."""
        with self._errors():
            cursor = self.connection().execute(sql, args)
            return cursor.fetchall() if cursor.description else []

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection]:
        """One transaction: every statement in it lands, or none does."""
        with self._errors():
            conn = self.connection()
            with conn.transaction():
                yield conn

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except psycopg.OperationalError as exc:
            conn = getattr(self._local, "conn", None)
            if conn is not None:
                conn.close()
            raise StoreUnavailable(f"the document store (PostgreSQL) failed: {_first_line(exc)}") from None


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class PostgresStore:
    """Uploaded documents in PostgreSQL (smls_documents)."""

    def __init__(self, dsn: str) -> None:
        self.db = Database(dsn)

    def get(self, doc_id: str) -> StoredDocument | None:
        """The stored document, or None."""
        rows = self.db.run("SELECT texts, pages, digest, sentences FROM smls_documents WHERE doc_id = %s", (doc_id,))
        return StoredDocument(doc_id, bytes(rows[0][0]), bytes(rows[0][1]), rows[0][2], rows[0][3]) if rows else None

    def summary(self, doc_id: str) -> tuple[str, int] | None:
        """(digest, sentence count) of a stored document without its bytes, or None."""
        rows = self.db.run("SELECT digest, sentences FROM smls_documents WHERE doc_id = %s", (doc_id,))
        return (rows[0][0], rows[0][1]) if rows else None

    def put(self, doc: StoredDocument) -> bool:
        """Store doc and its sentences as hits show them, replacing any earlier version in one transaction; True if it replaced one."""
        with self.db.transaction() as conn:
            rows = conn.execute(
                "INSERT INTO smls_documents (doc_id, texts, pages, digest, sentences) VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT (doc_id) DO UPDATE SET texts = excluded.texts, pages = excluded.pages, digest = excluded.digest, "
                "sentences = excluded.sentences, updated = now() RETURNING (xmax <> 0)",
                (doc.doc_id, doc.texts, doc.pages, doc.digest, doc.sentences),
            ).fetchall()
            _replace_shown(conn, doc.doc_id, doc.shown)
        return bool(rows[0][0])  # xmax is set on a row that was updated, not inserted

    def add_shown(self, doc_id: str, digest: str, shown: tuple[bytes, ...]) -> bool:
        """Store the sentences as hits show them of a document stored without them (before smls kept them), if that version is the stored one; whether they were written."""
        with self.db.transaction() as conn:
            # (locked: a new version being stored waits, and replaces these rows after)
            if not conn.execute("SELECT 1 FROM smls_documents WHERE doc_id = %s AND digest = %s FOR UPDATE", (doc_id, digest)).fetchall():
                return False
            if conn.execute("SELECT 1 FROM smls_sentences WHERE doc_id = %s LIMIT 1", (doc_id,)).fetchall():
                return False
            _replace_shown(conn, doc_id, shown)
        return True

    def delete(self, doc_id: str) -> bool:
        """Remove a document; False if there was none."""
        return bool(self.db.run("DELETE FROM smls_documents WHERE doc_id = %s RETURNING 1", (doc_id,)))

    def listing(self) -> dict[str, tuple[str, int]]:
        """Every stored id with its (digest, sentence count)."""
        return {row[0]: (row[1], row[2]) for row in self.db.run("SELECT doc_id, digest, sentences FROM smls_documents ORDER BY doc_id")}

    def generation(self) -> int:
        """A number that differs whenever a document has changed since it was last read."""
        return self.db.generation()

    def shown(self, wanted: list[tuple[str, str, int]]) -> dict[tuple[str, int], bytes]:
        """Sentences as search hits show them, by (doc_id, index), for each wanted (doc_id, digest, index) whose version is the stored one."""
        if not wanted:
            return {}
        doc_ids, digests, indexes = (list(column) for column in zip(*wanted, strict=True))
        rows = self.db.run(
            "SELECT s.doc_id, s.idx, s.shown FROM unnest(%s::text[], %s::text[], %s::int[]) AS w(doc_id, digest, idx) "
            "JOIN smls_documents d ON d.doc_id = w.doc_id AND d.digest = w.digest JOIN smls_sentences s ON s.doc_id = w.doc_id AND s.idx = w.idx",
            (doc_ids, digests, indexes),
        )
        return {(doc_id, index): bytes(shown) for doc_id, index, shown in rows}


class PostgresVectors:
    """Document vectors and the published versions in PostgreSQL, shared by every instance (smls.store.VectorStore).

    A model served with pgvector (use_pgvector) also has its published versions' vectors in
    a table of its own, kept in step with smls_published in the same transactions.
    """

    def __init__(self, dsn: str) -> None:
        self.db = Database(dsn)
        self._tables: dict[str, str] = {}  # model -> its pgvector table (smls.store.pgvector)
        self._pgvector: str | None = None  # why pgvector cannot be used ("" once it can; None: not yet asked)

    def use_pgvector(self, model: str, dimension: int) -> str | None:
        """Serve `model`'s search from pgvector; None if it is, else why not (the extension is missing and cannot be made)."""
        from smls.store import pgvector

        if self._pgvector is None:
            with self.db._errors():
                self._pgvector = pgvector.enable(self.db.connection()) or ""
            if not self._pgvector:
                from pgvector.psycopg import register_vector

                self.db.on_connect.append(register_vector)
        if self._pgvector:
            return self._pgvector
        with self.db._errors():
            self._tables[model] = pgvector.create_table(self.db.connection(), model, dimension)
        return None

    def begin(self, key: str, doc_id: str, model: str, count: int, dimension: int) -> None:
        """Record an entry about to be filled, and drop older versions of the same document and model."""
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO smls_entries (key, doc_id, model, count, dimension) VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT (key) DO UPDATE SET updated = now()",
                (key, doc_id, model, count, dimension),
            )
            conn.execute("DELETE FROM smls_chunks WHERE key IN (SELECT key FROM smls_entries WHERE doc_id = %s AND model = %s AND key <> %s)", (doc_id, model, key))
            conn.execute("DELETE FROM smls_entries WHERE doc_id = %s AND model = %s AND key <> %s", (doc_id, model, key))

    def is_complete(self, key: str) -> bool:
        """Whether every chunk of this entry is stored."""
        rows = self.db.run("SELECT complete FROM smls_entries WHERE key = %s", (key,))
        return bool(rows and rows[0][0])

    def get(self, key: str, chunk: int, dimension: int) -> np.ndarray | None:
        """Chunk `chunk` of `key`, or None if it is not stored."""
        rows = self.db.run("SELECT rows, data FROM smls_chunks WHERE key = %s AND chunk = %s", (key, chunk))
        return _vectors(rows[0], dimension) if rows else None

    def stored(self, key: str) -> set[int]:
        """The numbers of the chunks of `key` that are stored."""
        return {row[0] for row in self.db.run("SELECT chunk FROM smls_chunks WHERE key = %s", (key,))}

    def put(self, key: str, chunk: int, vectors: np.ndarray) -> None:
        """Store one chunk (replacing any earlier copy)."""
        data = np.ascontiguousarray(vectors, dtype=np.float32).tobytes()
        self.db.run(
            "INSERT INTO smls_chunks (key, chunk, rows, data) VALUES (%s, %s, %s, %s) ON CONFLICT (key, chunk) DO UPDATE SET rows = excluded.rows, data = excluded.data",
            (key, chunk, len(vectors), data),
        )

    def finish(self, key: str) -> None:
        """Mark an entry complete."""
        self.db.run("UPDATE smls_entries SET complete = true, updated = now() WHERE key = %s", (key,))

    def vectors(self, key: str, dimension: int) -> Iterator[np.ndarray]:
        """Every stored chunk of `key`, in order (fetched one at a time: memory stays at one chunk)."""
        for (number,) in self.db.run("SELECT chunk FROM smls_chunks WHERE key = %s ORDER BY chunk", (key,)):
            chunk = self.get(key, number, dimension)
            if chunk is not None:
                yield chunk

    def publish(self, model: str, doc_id: str, key: str) -> None:
        """Record that the search index of `model` should hold entry `key` as doc_id; a new version gets a new id.

        With pgvector, the new version's vectors enter the model's table, and the old one's
        leave it, in the same transaction.
        """
        with self.db.transaction() as conn:
            before = conn.execute("SELECT id FROM smls_published WHERE model = %s AND doc_id = %s", (model, doc_id)).fetchall()
            changed = conn.execute(
                "INSERT INTO smls_published (model, doc_id, key, count) SELECT %s, %s, key, count FROM smls_entries WHERE key = %s "
                "ON CONFLICT (model, doc_id) DO UPDATE SET id = nextval('smls_versions'), key = excluded.key, count = excluded.count "
                "WHERE smls_published.key <> excluded.key RETURNING id",
                (model, doc_id, key),
            ).fetchall()
            if changed:
                if model in self._tables:
                    self._swap_vectors(conn, model, [row[0] for row in before], changed[0][0], key)
                conn.execute(f"NOTIFY {CHANNEL}")

    def _swap_vectors(self, conn: psycopg.Connection, model: str, old: list[int], new: int, key: str) -> None:
        """In the publishing transaction: the old versions' vectors out of the model's pgvector table, the new one's in."""
        from smls.store import pgvector

        pgvector.forget(conn, self._tables, [(model, version) for version in old])
        dimension = conn.execute("SELECT dimension FROM smls_entries WHERE key = %s", (key,)).fetchall()[0][0]
        pgvector.ingest(conn, model, self._tables[model], new, self._chunks(conn, key, dimension))

    def _chunks(self, conn: psycopg.Connection, key: str, dimension: int) -> Iterator[np.ndarray]:
        """An entry's chunks, in order, one at a time, read on this connection (inside its transaction)."""
        for (number,) in conn.execute("SELECT chunk FROM smls_chunks WHERE key = %s ORDER BY chunk", (key,)).fetchall():
            rows = conn.execute("SELECT rows, data FROM smls_chunks WHERE key = %s AND chunk = %s", (key, number)).fetchall()
            vectors = _vectors(rows[0], dimension) if rows else None
            if vectors is not None:
                yield vectors

    def backfill(self, model: str) -> int:
        """Copy into the model's pgvector table the published versions it lacks (published before it existed); how many."""
        if model not in self._tables:
            return 0
        missing = self.db.run(
            "SELECT p.id, p.key FROM smls_published p LEFT JOIN smls_vec_held h ON h.model = p.model AND h.version = p.id "
            "WHERE p.model = %s AND h.version IS NULL",
            (model,),
        )
        for version, key in missing:
            with self.db.transaction() as conn:
                # (locked: another worker may be filling the same version; the second finds it held)
                if conn.execute("SELECT 1 FROM smls_published WHERE id = %s FOR UPDATE", (version,)).fetchall() and not conn.execute(
                    "SELECT 1 FROM smls_vec_held WHERE model = %s AND version = %s", (model, version)
                ).fetchall():
                    self._swap_vectors(conn, model, [], version, key)
        return len(missing)

    def nearest(self, model: str, query: np.ndarray, k: int, versions: list[int] | None) -> list[Neighbour]:
        """The k nearest sentences to a unit query in the model's pgvector table, best first (over `versions` alone, if given)."""
        from pgvector import HalfVector

        table, q = self._tables[model], HalfVector(query)
        with self.db.transaction() as conn:
            conn.execute(f"SET LOCAL hnsw.ef_search = {EF_SEARCH}")
            if versions is None:
                rows = conn.execute(f"SELECT version, idx, embedding <=> %s FROM {table} ORDER BY embedding <=> %s LIMIT %s", (q, q, k)).fetchall()
            else:
                # pgvector 0.8's iterative scan goes on through the graph until k rows pass the filter.
                conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
                rows = conn.execute(
                    f"SELECT version, idx, embedding <=> %s FROM {table} WHERE version = ANY(%s) ORDER BY embedding <=> %s LIMIT %s",
                    (q, versions, q, k),
                ).fetchall()
        ranked = sorted(rows, key=lambda row: (row[2], row[0], row[1]))  # (relaxed order: sorted here)
        return [Neighbour(int(version), int(idx), 1.0 - float(distance)) for version, idx, distance in ranked]

    def generation(self) -> int:
        """A number that differs whenever a published version has changed since it was last read."""
        return self.db.generation()

    def published(self, model: str) -> dict[int, tuple[str, str, int]]:
        """What the search index of `model` should hold: version id -> (doc_id, key, count)."""
        return {row[0]: (row[1], row[2], row[3]) for row in self.db.run("SELECT id, doc_id, key, count FROM smls_published WHERE model = %s", (model,))}

    def unpublish(self, model: str, doc_id: str) -> None:
        """Take doc_id out of the search index of `model` (its vectors stay)."""
        with self.db.transaction() as conn:
            gone = conn.execute("DELETE FROM smls_published WHERE model = %s AND doc_id = %s RETURNING model, id", (model, doc_id)).fetchall()
            if gone:
                self._forget(conn, gone)
                conn.execute(f"NOTIFY {CHANNEL}")

    def _forget(self, conn: psycopg.Connection, versions: list[tuple[Any, ...]]) -> None:
        """(model, version) pairs no longer published: out of their pgvector tables, if any table is served."""
        if self._tables or conn.execute("SELECT to_regclass('smls_vec_held') IS NOT NULL").fetchall()[0][0]:
            from smls.store import pgvector

            tables = {**self._tables, **{model: pgvector.table_name(model) for model, _ in versions if _exists(conn, pgvector.table_name(model))}}
            pgvector.forget(conn, tables, [(model, version) for model, version in versions])

    def drop(self, doc_id: str) -> None:
        """Forget every vector of doc_id, for every model, and take it out of every search index."""
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM smls_chunks WHERE key IN (SELECT key FROM smls_entries WHERE doc_id = %s)", (doc_id,))
            conn.execute("DELETE FROM smls_entries WHERE doc_id = %s", (doc_id,))
            gone = conn.execute("DELETE FROM smls_published WHERE doc_id = %s RETURNING model, id", (doc_id,)).fetchall()
            self._forget(conn, gone)
            conn.execute(f"NOTIFY {CHANNEL}")


class PostgresKeywords:
    """Every document's sentences in PostgreSQL full-text search (smls.store.KeywordIndex), shared by every instance."""

    def __init__(self, dsn: str) -> None:
        self.db = Database(dsn)

    def digests(self) -> dict[str, str]:
        """Every document held, with the digest of the version held."""
        return {row[0]: row[1] for row in self.db.run("SELECT doc_id, digest FROM smls_keyword_docs")}

    def put(self, doc_id: str, digest: str, texts: list[str]) -> None:
        """Hold this version of doc_id's sentences in place of any other (a no-op if another instance just did it)."""
        with self.db.transaction() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (doc_id,))  # one writer per document
            held = conn.execute("SELECT digest FROM smls_keyword_docs WHERE doc_id = %s", (doc_id,)).fetchone()
            if held is not None and held[0] == digest:
                return
            conn.execute("DELETE FROM smls_keyword_docs WHERE doc_id = %s", (doc_id,))  # and its sentences (cascade)
            conn.execute("INSERT INTO smls_keyword_docs (doc_id, digest) VALUES (%s, %s)", (doc_id, digest))
            with conn.cursor() as cursor, cursor.copy("COPY smls_keywords (doc_id, idx, text) FROM STDIN") as copy:
                for i, text in enumerate(texts):
                    copy.write_row((doc_id, i, text))

    def drop(self, doc_id: str) -> None:
        """Forget doc_id's sentences."""
        self.db.run("DELETE FROM smls_keyword_docs WHERE doc_id = %s", (doc_id,))

    def search(self, words: list[str], k: int, doc_ids: list[str] | None = None) -> list[KeywordHit]:
        """The k sentences that best match any of `words` (ts_rank_cd, best first), over every document or those named."""
        if not words:
            return []
        # websearch_to_tsquery never fails on odd input; "or" between the words makes any one match.
        query = " or ".join('"' + w.replace('"', " ") + '"' for w in words)
        scope, args = ("", (query,)) if doc_ids is None else (" AND k.doc_id = ANY(%s)", (query, doc_ids))
        rows = self.db.run(
            "SELECT k.doc_id, d.digest, k.idx, ts_rank_cd(k.words, q) AS score "
            "FROM smls_keywords k JOIN smls_keyword_docs d USING (doc_id), websearch_to_tsquery('simple', %s) q "
            f"WHERE k.words @@ q{scope} ORDER BY score DESC, k.doc_id, k.idx LIMIT %s",
            (*args, k),
        )
        return [KeywordHit(doc_id, digest, int(idx), float(score)) for doc_id, digest, idx, score in rows]


def _replace_shown(conn: psycopg.Connection, doc_id: str, shown: tuple[bytes, ...]) -> None:
    """In a storing transaction: a document's sentences as hits show them, in place of any before."""
    conn.execute("DELETE FROM smls_sentences WHERE doc_id = %s", (doc_id,))
    with conn.cursor() as cursor, cursor.copy("COPY smls_sentences (doc_id, idx, shown) FROM STDIN") as copy:
        copy.set_types(["text", "int4", "bytea"])
        for index, sentence in enumerate(shown):
            copy.write_row((doc_id, index, sentence))


def _exists(conn: psycopg.Connection, table: str) -> bool:
    """Whether a table of this name exists (another instance may serve a model with pgvector that this one does not)."""
    return bool(conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchall()[0][0])


def _vectors(row: tuple[Any, ...], dimension: int) -> np.ndarray | None:
    n, data = row
    if len(data) != n * dimension * 4:  # a torn or foreign row: recompute rather than trust it
        return None
    return np.frombuffer(bytes(data), dtype=np.float32).reshape(n, dimension)


def listen(dsn: str, on_change: Callable[[], None]) -> threading.Thread:
    """A daemon thread that calls on_change whenever another process changes what the search indexes hold (and on each reconnect)."""

    def loop() -> None:
        while True:
            try:
                with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    on_change()  # whatever changed while not listening
                    for _ in conn.notifies():
                        on_change()
            except Exception as exc:  # noqa: BLE001 - the database went away: try again shortly, never die
                log.warning("listening for index changes failed (%s); again in 2 s", _first_line(exc))
            time.sleep(2)

    thread = threading.Thread(target=loop, name="smls-index-listen", daemon=True)
    thread.start()
    return thread
