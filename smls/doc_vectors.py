"""Embeddings of whole documents: computed in chunks, stored in the cache, searched in chunks.

Memory stays bounded by a few chunks of vectors whatever the document's size: vectors
are produced, cached and handed on one chunk at a time, and search keeps only the top k.

A chunk goes to the model's scheduler (smls.batching) as bulk work: cut into pieces that
every inference stream of the worker takes, beside short requests and never ahead of
them. The next missing chunk is queued while the current one is stored and sent, so the
streams never wait for the cache or the client.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from smls.batching import BulkJob, MicroBatcher
from smls.documents import Document
from smls.encoders import Encoder
from smls.store import VectorStore
from smls.tokens import Tokens
from smls.truncation import Direction, Truncation, frame
from smls.vectors import unit_rows


@dataclass(frozen=True)
class Hit:
    """One search result: the sentence's index in the document and its cosine score."""

    index: int
    score: float


class DocumentEmbedder:
    """Vectors for documents, from the cache when it has them, else from the encoder."""

    def __init__(
        self,
        batcher: MicroBatcher[Encoder],
        cache: VectorStore,
        chunk_size: int = 256,
        timeout: float = 30.0,
        *,
        truncation: Direction = "right",
        tokens: Tokens | None = None,
        prompt: str = "",
    ) -> None:
        self.batcher = batcher
        self.cache = cache
        self.chunk_size = chunk_size
        self.timeout = timeout  # seconds a query may wait for the model (search)
        # The model's own direction, never a request's: a cached vector always means one thing.
        self.truncation = truncation
        self.tokens = tokens
        self.prompt = prompt  # the model's document prompt: part of the key too

    @property
    def encoder(self) -> Encoder:
        """The model whose scheduler computes the vectors (its name and fingerprint key them in the cache)."""
        return self.batcher.encoder

    def _model_key(self, normalize: bool) -> str:
        # (right, the encoder's own cut, adds nothing: the keys of vectors cached before there was a choice stay valid)
        cut = "" if self.truncation == "right" else f":truncation={self.truncation}"
        prompt = "" if not self.prompt else ":prompt=" + hashlib.sha256(self.prompt.encode()).hexdigest()[:16]
        return f"{self.encoder.name}:{self.encoder.fingerprint}:normalize={int(normalize)}:chunk={self.chunk_size}{cut}{prompt}"

    def key(self, doc: Document, normalize: bool = False) -> str:
        """The cache key: both files' contents, the model and the options."""
        return self.key_for(doc.digest, normalize)

    def key_for(self, digest: str, normalize: bool = False) -> str:
        """The cache key of a document with this digest."""
        return hashlib.sha256(f"{digest}\0{self._model_key(normalize)}".encode()).hexdigest()

    @property
    def index_name(self) -> str:
        """The model as the search index knows it: its vectors, whatever the options they were cached with."""
        return f"{self.encoder.name}:{self.encoder.fingerprint}"

    def is_cached(self, doc: Document, normalize: bool = False) -> bool:
        """Whether every vector of doc is in the cache (a request would run no inference)."""
        return self.cache.is_complete(self.key(doc, normalize))

    def chunks(self, doc: Document, normalize: bool = False) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (first sentence index, vectors) chunk by chunk, computing and caching what is missing."""
        key, dim = self.key(doc, normalize), self.encoder.dimension
        complete = self.cache.is_complete(key)
        starts = list(range(0, len(doc.sentences), self.chunk_size))
        if not complete:
            self.cache.begin(key, doc.doc_id, self._model_key(normalize), len(doc.sentences), dim)
        stored = set() if complete else self.cache.stored(key)
        missing = iter([] if complete else [n for n in range(len(starts)) if n not in stored])
        pending: dict[int, BulkJob] = {}
        try:
            for number, start in enumerate(starts):
                vectors = None if number in pending else self.cache.get(key, number, dim)
                if vectors is None or len(vectors) != len(self._chunk(doc, number)):
                    job = pending.pop(number, None) or self._submit(doc, number)
                    # The next missing chunk waits in the queue while this one is finished,
                    # so the streams do not idle while it is stored and sent.
                    nxt = next((n for n in missing if n > number), None)
                    if nxt is not None:
                        pending[nxt] = self._submit(doc, nxt)
                    vectors = job.wait().vectors
                    if normalize:
                        vectors = unit_rows(vectors)
                    self.cache.put(key, number, vectors)
                yield start, vectors
        finally:
            for job in pending.values():  # the client went away: queued pieces cost nothing
                job.cancel()
        if not complete:
            self.cache.finish(key)
            self.cache.publish(self.index_name, doc.doc_id, key)  # search across documents finds it now

    def _chunk(self, doc: Document, number: int) -> range:
        """The sentence indexes of chunk `number`."""
        return range(number * self.chunk_size, min((number + 1) * self.chunk_size, len(doc.sentences)))

    def _submit(self, doc: Document, number: int) -> BulkJob:
        """Queue chunk `number`'s sentences in the bulk lane."""
        chunk = self._chunk(doc, number)
        return self.batcher.submit_bulk(self.texts([s.text for s in doc.sentences[chunk.start : chunk.stop]]))

    def texts(self, texts: list[str]) -> list[str]:
        """Sentences as the model reads them: after the model's document prompt, cut on the left where it keeps the end of a long text."""
        if self.truncation == "right" and not self.prompt:
            return texts
        return frame(texts, Truncation(True, self.truncation), self.tokens, "sentences", self.encoder.max_seq_length, prompt=self.prompt).texts

    def fill(self, doc: Document, normalize: bool = False) -> Iterator[int]:
        """Compute and cache a whole document, yielding how many sentences each step covered."""
        for _, vectors in self.chunks(doc, normalize):
            yield len(vectors)

    def search(self, doc: Document, query: str, k: int) -> list[Hit]:
        """The k sentences most similar to query (cosine), best first."""
        q = self.batcher.encode([query], normalize=True, timeout=self.timeout).vectors[0]
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
