"""pgvector: each model's sentence vectors in a PostgreSQL table with an HNSW index, searched by one SQL query.

With SMLS_STORE=postgresql://... on a server that has the vector extension (or lets smls
CREATE EXTENSION vector), no worker holds a search index: a document's vectors are copied
into its model's table in the transaction that publishes the document (smls.store.postgres),
the version they replace leaves in the same transaction, and /search asks the database.
So every instance sees a change the moment it commits, and a worker's memory does not
grow with the corpus. Without the extension, smls says so in one line at start-up and
each worker keeps its own index (smls.index), as with SQLite.

A model's table: smls_vec_<16 hex digits of its name> (version, idx, embedding halfvec(d)),
with an HNSW index on the cosine distance (halfvec: half the memory of vector, for the same
recall on these vectors; bench/ann.py measures it) and a b-tree on version for searches
restricted to some documents, which pgvector 0.8's iterative scans keep returning k results.
smls_vec_held says which published versions each table holds.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from typing import Protocol

import numpy as np
import psycopg

from smls.store.base import Neighbour, VectorStore

log = logging.getLogger("smls")

# Candidates per query: as smls.index's EXPANSION_SEARCH for hnswlib (recall@10 0.98 on text unlike the indexed).
EF_SEARCH = 256
# Candidates per insert: pgvector's own default. Every publish inserts into the index, and at
# 100,000 vectors 64 wrote 688 vectors/s where 128 (hnswlib's setting here) wrote 461, recall@10
# 0.993 against 0.996 (0.974 against 0.987 on text unlike the indexed): docs/benchmarks.org.
EF_CONSTRUCTION = 64
_HELD = "CREATE TABLE IF NOT EXISTS smls_vec_held (model TEXT NOT NULL, version BIGINT NOT NULL, PRIMARY KEY (model, version))"


def table_name(model: str) -> str:
    """The table of one model's vectors (a model's name may hold any character; a table's may not)."""
    return f"smls_vec_{hashlib.sha256(model.encode()).hexdigest()[:16]}"


def enable(conn: psycopg.Connection) -> str | None:
    """Make the vector extension ready in this database; None once it is, else why not (in one line)."""
    try:
        with conn.transaction():
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    except psycopg.Error as exc:
        present = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchall()
        if not present:
            return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    from pgvector.psycopg import register_vector

    register_vector(conn)
    return None


def create_table(conn: psycopg.Connection, model: str, dimension: int) -> str:
    """The model's table and its indexes, made if missing; its name."""
    table = table_name(model)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(72711)")  # one process at a time makes tables
        conn.execute(_HELD)
        conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (version BIGINT NOT NULL, idx INTEGER NOT NULL, embedding halfvec({dimension}) NOT NULL)")
        conn.execute(f"CREATE INDEX IF NOT EXISTS {table}_hnsw ON {table} USING hnsw (embedding halfvec_cosine_ops) WITH (m = 16, ef_construction = {EF_CONSTRUCTION})")
        conn.execute(f"CREATE INDEX IF NOT EXISTS {table}_version ON {table} (version)")
    return table


def ingest(conn: psycopg.Connection, model: str, table: str, version: int, chunks: Iterable[np.ndarray]) -> int:
    """Copy a published version's vectors into the model's table (one binary COPY a chunk: `chunks` may read the connection between them); the rows written."""
    from pgvector import HalfVector

    written = 0
    for vectors in chunks:
        with conn.cursor() as cursor, cursor.copy(f"COPY {table} (version, idx, embedding) FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types(["int8", "int4", "halfvec"])
            for row in vectors:
                copy.write_row((version, written, HalfVector(row)))
                written += 1
    conn.execute("INSERT INTO smls_vec_held (model, version) VALUES (%s, %s) ON CONFLICT DO NOTHING", (model, version))
    return written


def forget(conn: psycopg.Connection, tables: dict[str, str], versions: Iterable[tuple[str, int]]) -> None:
    """Remove these (model, version) pairs' vectors from their models' tables."""
    for model, version in versions:
        table = tables.get(model)
        if table is not None:
            conn.execute(f"DELETE FROM {table} WHERE version = %s", (version,))
        conn.execute("DELETE FROM smls_vec_held WHERE model = %s AND version = %s", (model, version))


class PgvectorStore(VectorStore, Protocol):
    """A vector store that keeps models' vectors in pgvector tables (smls.store.postgres.PostgresVectors)."""

    def backfill(self, model: str) -> int:
        """Copy into the model's table the published versions it lacks; how many."""
        ...

    def nearest(self, model: str, query: np.ndarray, k: int, versions: list[int] | None) -> list[Neighbour]:
        """The k nearest sentences to a unit query in the model's table, best first (over `versions` alone, if given)."""
        ...


class PgvectorIndex:
    """One model's search in its pgvector table: what smls.search.CrossSearch asks of a search index."""

    def __init__(self, cache: PgvectorStore, model: str, dimension: int) -> None:
        self.cache, self.model, self.dimension = cache, model, dimension

    def load(self) -> None:
        """Nothing to read: the database holds the index."""

    def sync(self, wanted: dict[int, tuple[str, str, int]] | None = None) -> int:
        """Copy in any published version the table lacks (published before this model's table existed); how many."""
        return self.cache.backfill(self.model)

    def nearest(self, query: np.ndarray, k: int, scope: dict[int, int] | None = None) -> list[Neighbour]:
        """The k nearest sentences, best first: over every published version, or (scope) over those alone."""
        return self.cache.nearest(self.model, np.asarray(query, dtype=np.float32), k, None if scope is None else list(scope))

