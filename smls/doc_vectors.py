"""Embeddings of whole documents: computed in chunks, stored in the cache, searched in chunks.

Memory stays bounded by one chunk of vectors whatever the document's size: vectors are
produced, cached and handed on one chunk at a time, and search keeps only the top k.

Why documents reach the model around the batch queue (encoder.run in the request's own
thread) while /embed goes through smls.batching: a chunk is already a full batch, so
there is nothing to gather, and the batch queue is bounded for short requests (a chunk
of 256 sentences there would hold back every small request behind it, or be shed with
503 when the queue is full). The cost is that one document uses one inference stream,
about half of a 2-core machine; putting bulk work on the same scheduler with its own
share is the open speed issue.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from smls.cache import VectorCache
from smls.config import Settings
from smls.documents import Document
from smls.encoders import Encoder
from smls.vectors import unit_rows


@dataclass(frozen=True)
class Hit:
    """One search result: the sentence's index in the document and its cosine score."""

    index: int
    score: float


class DocumentEmbedder:
    """Vectors for documents, from the cache when it has them, else from the encoder."""

    def __init__(self, encoder: Encoder, cache: VectorCache, chunk_size: int = 256) -> None:
        self.encoder = encoder
        self.cache = cache
        self.chunk_size = chunk_size

    @classmethod
    def from_settings(cls, encoder: Encoder, settings: Settings) -> DocumentEmbedder:
        """An embedder over the cache file in SMLS_CACHE_DIR, in SMLS_DOC_BATCH chunks."""
        return cls(encoder, VectorCache(settings.cache_dir / "documents.sqlite3"), settings.doc_batch)

    def _model_key(self, normalize: bool) -> str:
        return f"{self.encoder.name}:{self.encoder.fingerprint}:normalize={int(normalize)}:chunk={self.chunk_size}"

    def key(self, doc: Document, normalize: bool = False) -> str:
        """The cache key: both files' contents, the model and the options."""
        return hashlib.sha256(f"{doc.digest}\0{self._model_key(normalize)}".encode()).hexdigest()

    def is_cached(self, doc: Document, normalize: bool = False) -> bool:
        """Whether every vector of doc is in the cache (a request would run no inference)."""
        return self.cache.is_complete(self.key(doc, normalize))

    def chunks(self, doc: Document, normalize: bool = False) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (first sentence index, vectors) chunk by chunk, computing and caching what is missing."""
        key, dim = self.key(doc, normalize), self.encoder.dimension
        complete = self.cache.is_complete(key)
        if not complete:
            self.cache.begin(key, doc.doc_id, self._model_key(normalize), len(doc.sentences), dim)
        for number, start in enumerate(range(0, len(doc.sentences), self.chunk_size)):
            vectors = self.cache.get(key, number, dim)
            expected = min(self.chunk_size, len(doc.sentences) - start)
            if vectors is None or len(vectors) != expected:
                texts = [s.text for s in doc.sentences[start : start + expected]]
                vectors = self.encoder.run(texts, normalize=normalize)
                self.cache.put(key, number, vectors)
            yield start, vectors
        if not complete:
            self.cache.finish(key)

    def fill(self, doc: Document, normalize: bool = False) -> Iterator[int]:
        """Compute and cache a whole document, yielding how many sentences each step covered."""
        for _, vectors in self.chunks(doc, normalize):
            yield len(vectors)

    def search(self, doc: Document, query: str, k: int) -> list[Hit]:
        """The k sentences most similar to query (cosine), best first."""
        q = self.encoder.run([query], normalize=True)[0]
        best_scores = np.empty(0, dtype=np.float32)
        best_index = np.empty(0, dtype=np.int64)
        for start, vectors in self.chunks(doc):
            scores = unit_rows(vectors) @ q
            best_scores = np.concatenate([best_scores, scores])
            best_index = np.concatenate([best_index, np.arange(start, start + len(vectors))])
            if len(best_scores) > k:
                keep = np.argpartition(-best_scores, k)[:k]
                best_scores, best_index = best_scores[keep], best_index[keep]
        order = np.lexsort((best_index, -best_scores))  # ties: earlier sentence first
        return [Hit(int(best_index[i]), float(best_scores[i])) for i in order[:k]]
