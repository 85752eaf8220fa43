"""Where uploaded documents live: the DocumentStore interface and the store SMLS_STORE names.

A document uploaded over HTTP (PUT /documents/<id>) is kept as the two files it was sent
as, byte for byte, with their digest and sentence count, and replaced in one transaction:
a reader sees the old version or the new one, never half of either. SQLite is the
embedded default (a file in the data folder); PostgreSQL is for several servers sharing
their documents.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


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

    def listing(self) -> dict[str, int]:
        """Every stored id with its sentence count."""
        ...


def open_store(location: str | None, data_dir: Path) -> DocumentStore:
    """The store SMLS_STORE names: unset, a path or sqlite:///path is an SQLite file (default <data_dir>/documents.sqlite3)."""
    from smls.store.sqlite import SqliteStore

    if location is None:
        return SqliteStore(data_dir / "documents.sqlite3")
    return SqliteStore(Path(location.removeprefix("sqlite://")))
