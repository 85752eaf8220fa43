"""Where documents and their vectors live: the interfaces, and the stores SMLS_STORE names.

A document uploaded over HTTP (PUT /documents/<id>) is kept as the two files it was sent
as, byte for byte, with their digest and sentence count, and replaced in one transaction:
a reader sees the old version or the new one, never half of either. SQLite is the
embedded default (a file in the data folder); PostgreSQL is for several servers sharing
their documents, their vectors and their search.
"""

from __future__ import annotations

from pathlib import Path

from smls.store.base import DocumentStore, KeywordIndex, StoredDocument, VectorStore

__all__ = ["DocumentStore", "KeywordIndex", "StoredDocument", "VectorStore", "is_postgres", "open_keywords", "open_store", "open_vectors"]


def is_postgres(location: str | None) -> bool:
    """Whether SMLS_STORE names a PostgreSQL database."""
    return location is not None and location.startswith(("postgresql://", "postgres://"))


def open_store(location: str | None, data_dir: Path) -> DocumentStore:
    """The store SMLS_STORE names: postgresql://..., else an SQLite file (a path or sqlite:///path; default <data_dir>/documents.sqlite3)."""
    if is_postgres(location):
        from smls.store.postgres import PostgresStore

        return PostgresStore(str(location))
    from smls.store.sqlite import SqliteStore

    if location is None:
        return SqliteStore(data_dir / "documents.sqlite3")
    return SqliteStore(Path(location.removeprefix("sqlite://")))


def open_vectors(location: str | None, cache_dir: Path) -> VectorStore:
    """Where document vectors are kept: PostgreSQL when SMLS_STORE names it (shared by every instance), else SQLite in SMLS_CACHE_DIR."""
    if is_postgres(location):
        from smls.store.postgres import PostgresVectors

        return PostgresVectors(str(location))
    from smls.store.sqlite_vectors import VectorCache

    return VectorCache(cache_dir / "documents.sqlite3")


def open_keywords(location: str | None, cache_dir: Path) -> KeywordIndex:
    """Where keyword search keeps the documents' sentences: PostgreSQL when SMLS_STORE names it (tsvector, GIN), else SQLite FTS5 in SMLS_CACHE_DIR."""
    if is_postgres(location):
        from smls.store.postgres import PostgresKeywords

        return PostgresKeywords(str(location))
    from smls.store.sqlite_keywords import SqliteKeywords

    return SqliteKeywords(cache_dir / "keywords.sqlite3")
