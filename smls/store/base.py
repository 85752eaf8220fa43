"""The interfaces every store keeps: a document as stored, the document store, the vector store.

Kept apart from smls.store (which picks a store from SMLS_STORE) so that the stores import
their contract without importing the module that imports them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
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
    # Each sentence as a search hit shows it (JSON), kept beside the files so that a hit is
    # one row read, not its whole document parsed: written with an upload, never read back here.
    shown: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class Neighbour:
    """One search result: the document version it belongs to, the sentence's index in it, and the cosine similarity."""

    version: int
    index: int
    score: float


@dataclass(frozen=True)
class KeywordHit:
    """One keyword match: the document and the version (digest) its sentence came from, the sentence's index, the store's score (higher is better)."""

    doc_id: str
    digest: str
    index: int
    score: float


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

    def generation(self) -> int:
        """A number that differs whenever a document has changed since it was last read (whoever changed it)."""
        ...

    def add_shown(self, doc_id: str, digest: str, shown: tuple[bytes, ...]) -> bool:
        """Store the sentences as hits show them of a document stored without them (before smls kept them), if that version is the stored one; whether they were written."""
        ...

    def shown(self, wanted: list[tuple[str, str, int]]) -> dict[tuple[str, int], bytes]:
        """Sentences as search hits show them, by (doc_id, index), for each wanted (doc_id, digest, index) whose version is the stored one."""
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

    def generation(self) -> int:
        """A number that differs whenever a published version has changed since it was last read (whoever changed it)."""
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


class KeywordIndex(Protocol):
    """Every document's sentences for keyword search (the store's own full-text engine), one version per document, whatever the model."""

    def digests(self) -> dict[str, str]:
        """Every document held, with the digest of the version held."""
        ...

    def put(self, doc_id: str, digest: str, texts: list[str]) -> None:
        """Hold this version of doc_id's sentences in place of any other."""
        ...

    def drop(self, doc_id: str) -> None:
        """Forget doc_id's sentences."""
        ...

    def search(self, words: list[str], k: int, doc_ids: list[str] | None = None) -> list[KeywordHit]:
        """The k sentences that best match any of `words`, best first, over every document or those named."""
        ...
