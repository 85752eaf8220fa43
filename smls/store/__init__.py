"""Where documents and their vectors live: the interfaces, and the stores SMLS_STORE names.

A document uploaded over HTTP (PUT /documents/<id>) is kept as the two files it was sent
as, byte for byte, with their digest and sentence count, and replaced in one transaction:
a reader sees the old version or the new one, never half of either. SQLite is the
embedded default (a file in the data folder); PostgreSQL is for several servers sharing
their documents, their vectors and their search.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class StoredDocument:
    """An uploaded document as stored: both files' bytes, their digest, and how many sentences they hold."""

    doc_id: str
    texts: bytes
    pages: bytes
    digest: str
    sentences: int


class DocumentStore(Protocol):
    """Uploaded documents by id; every write replaces a whole document or nothing."""

    def get(self, doc_id: str) -> StoredDocument | None:
        """The stored document, or None."""
        ...

    def summary(self, doc_id: str) -> tuple[str, int] | None:
        """(digest, sentence count) of a stored document without its bytes, or None."""
        ...

    def put(self, doc: StoredDocument) -> bool:
        """Store doc, replacing any earlier version in one transaction; True if it replaced one."""
        ...

    def delete(self, doc_id: str) -> bool:
        """Remove a document; False if there was none."""
        ...

    def listing(self) -> dict[str, tuple[str, int]]:
        """Every stored id with its (digest, sentence count)."""
        ...


class VectorStore(Protocol):
    """Computed document vectors in numbered chunks under a key, and what each model's search index should hold."""

    def begin(self, key: str, doc_id: str, model: str, count: int, dimension: int) -> None:
        """Record an entry about to be filled, and drop older versions of the same document and model."""
        ...

    def is_complete(self, key: str) -> bool:
        """Whether every chunk of this entry is stored."""
        ...

    def get(self, key: str, chunk: int, dimension: int) -> np.ndarray | None:
        """Chunk `chunk` of `key`, or None if it is not stored."""
        ...

    def stored(self, key: str) -> set[int]:
        """The numbers of the chunks of `key` that are stored."""
        ...

    def put(self, key: str, chunk: int, vectors: np.ndarray) -> None:
        """Store one chunk (replacing any earlier copy)."""
        ...

    def finish(self, key: str) -> None:
        """Mark an entry complete."""
        ...

    def vectors(self, key: str, dimension: int) -> Iterator[np.ndarray]:
        """Every stored chunk of `key`, in order."""
        ...

    def publish(self, model: str, doc_id: str, key: str) -> None:
        """Record that the search index of `model` should hold entry `key` (with its sentence count) as doc_id, replacing an older version."""
        ...

    def published(self, model: str) -> dict[int, tuple[str, str, int]]:
        """What the search index of `model` should hold: version id -> (doc_id, key, count)."""
        ...

    def unpublish(self, model: str, doc_id: str) -> None:
        """Take doc_id out of the search index of `model` (its vectors stay)."""
        ...

    def drop(self, doc_id: str) -> None:
        """Forget every vector of doc_id, for every model, and take it out of every search index."""
        ...


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
    from smls.cache import VectorCache

    return VectorCache(cache_dir / "documents.sqlite3")
