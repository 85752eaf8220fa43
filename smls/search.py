"""Search across documents: bring every document in scope into the index, then find the k best sentences.

Before a search, each document in scope is checked against what the index holds, by
digest (cheap: the store keeps it, and a data-folder file's is memoised by size and
time): a new or changed document is computed first, through the model's bulk lane, as
its first GET would; one whose vectors are cached is only published. So an upload is
searchable at once, however it was made, and nothing a search returns is out of date:
each hit is checked against the document's current version before it is shown.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from smls import documents, hybrid
from smls.doc_vectors import DocumentEmbedder
from smls.documents import Document
from smls.errors import InvalidOption, SmlsError
from smls.library import Library
from smls.store.base import KeywordIndex, Neighbour, VectorStore


class VectorIndex(Protocol):
    """What a search asks of one model's index: in each worker's memory (smls.index) or in PostgreSQL (smls.store.pgvector)."""

    @property
    def model(self) -> str:
        """The model as the vector store names it (name and fingerprint)."""
        ...

    @property
    def cache(self) -> VectorStore:
        """The vector store whose published versions the index holds."""
        ...

    def load(self) -> None:
        """Read a saved index, if there is one (in the gunicorn master: the workers share its pages)."""
        ...

    def sync(self, wanted: dict[int, tuple[str, str, int]] | None = None) -> int:
        """Catch up with the published versions; how many were added or removed."""
        ...

    def nearest(self, query: np.ndarray, k: int, scope: dict[int, int] | None = None) -> list[Neighbour]:
        """The k nearest sentences, best first: over every published version, or (scope: version -> sentences) over those alone."""
        ...


class ChosenIndex:
    """An index chosen when first needed (a PostgreSQL store's: pgvector, if the database has it, once it answers); then that one."""

    def __init__(self, choose: Callable[[], VectorIndex]) -> None:
        self._choose = choose
        self._index: VectorIndex | None = None
        self._lock = threading.Lock()

    def chosen(self) -> VectorIndex:
        """The index, choosing it first if need be (StoreUnavailable while the database cannot be reached)."""
        if self._index is None:
            with self._lock:
                if self._index is None:
                    self._index = self._choose()
        return self._index

    @property
    def model(self) -> str:
        """The chosen index's model."""
        return self.chosen().model

    @property
    def cache(self) -> VectorStore:
        """The chosen index's vector store."""
        return self.chosen().cache

    def load(self) -> None:
        """Load the chosen index, if it is chosen by now (else it reads what it needs when first used)."""
        if self._index is not None:
            self._index.load()

    def sync(self, wanted: dict[int, tuple[str, str, int]] | None = None) -> int:
        """The chosen index's catch-up."""
        return self.chosen().sync(wanted)

    def nearest(self, query: np.ndarray, k: int, scope: dict[int, int] | None = None) -> list[Neighbour]:
        """The chosen index's search."""
        return self.chosen().nearest(query, k, scope)


@dataclass
class Found:
    """A search's results, best first, and the documents it could not search (their errors)."""

    hits: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)


class CrossSearch:
    """Search over every document (or some): by one model's vector index, by keywords, or both fused."""

    def __init__(
        self, library: Library, embedder: DocumentEmbedder, index: VectorIndex, timeout: float, *, shared: bool = False, keywords: KeywordIndex | None = None
    ) -> None:
        self.library, self.embedder, self.index, self.timeout = library, embedder, index, timeout
        self.keywords = keywords  # every model's searches share it: keywords do not depend on the model
        # A shared store (PostgreSQL) also holds other instances' data-folder documents, which
        # this one cannot see: they are left in the index and kept out of this one's results.
        self.shared = shared
        self._docs: OrderedDict[tuple[str, str], Document] = OrderedDict()  # recently shown documents
        self._lock = threading.Lock()
        # The last search of every document: (the stamp it was made under, published versions, scope): see _up_to_date.
        self._fresh: tuple[tuple[Any, ...], dict[int, tuple[str, str, int]], dict[str, str]] | None = None

    def search(self, query: str, k: int, doc_ids: list[str] | None = None, *, mode: str = "vector", words: Sequence[str] = ()) -> Found:
        """The k best sentences over doc_ids (None: every document), best first.

        mode "vector": by cosine to the query's vector (`query` as the model reads it: its
        prompt, its cut); "keyword": by the store's full-text score for any of `words`;
        "hybrid": both rankings (CANDIDATES each) fused by reciprocal rank, each hit with
        its rank in each.
        """
        if mode == "vector":
            return self._vector_search(query, k, doc_ids)
        found = Found()
        n = k if mode == "keyword" else max(k, hybrid.CANDIDATES)
        rankings: list[list[tuple[str, str, int]]] = []
        if mode == "hybrid":
            vectors = self._vector_search(query, n, doc_ids, shown=False)
            found.skipped += vectors.skipped
            rankings.append([(h["doc_id"], h["digest"], h["index"]) for h in vectors.hits])
        keyword = self._keyword_search(list(words), n, doc_ids, found)
        found.skipped = list({s["doc_id"]: s for s in found.skipped}.values())  # a document both searches skipped, once
        if mode == "keyword":
            found.hits = [hit for hit in self._show(keyword) if hit is not None]
            return found
        rankings.append([(doc_id, digest, index) for doc_id, digest, index, _ in keyword])
        fused = hybrid.fuse(rankings, k)
        shown = self._show([(doc_id, digest, index, score) for (doc_id, digest, index), score, _ in fused], digits=8)
        for hit, (_, _, where) in zip(shown, fused, strict=True):
            if hit is not None:
                hit["ranks"] = {"vector": where[0], "keyword": where[1]}
                found.hits.append(hit)
        return found

    def _keyword_search(self, words: list[str], n: int, doc_ids: list[str] | None, found: Found) -> list[tuple[str, str, int, float]]:
        """The n best keyword matches over the current versions in scope: (doc_id, digest, index, score), best first."""
        if self.keywords is None:
            raise InvalidOption("keyword search needs a store with a full-text engine; this server has none")
        keywords = self.keywords
        held = keywords.digests()
        current: dict[str, str] = {}

        def update(doc_id: str, digest: str) -> None:
            if held.get(doc_id) != digest:
                doc = self.library.load(doc_id)
                keywords.put(doc_id, doc.digest, [s.text for s in doc.sentences])
                digest = doc.digest
            current[doc_id] = digest

        self._in_scope(doc_ids, held, keywords.drop, update, found)
        # A few more than n: a version replaced since it was read is left out below.
        hits = self.keywords.search(words, n + 8, doc_ids)
        return [(h.doc_id, h.digest, h.index, h.score) for h in hits if current.get(h.doc_id) == h.digest][:n]

    def _show(self, ranked: list[tuple[str, str, int, float]], digits: int = 6) -> list[dict[str, Any] | None]:
        """Ranked (doc_id, digest, index, score) as clients see them, in order; None for one whose version was replaced or removed since it was ranked.

        An uploaded sentence is read from the store as hits show it, all of them in one
        query; a file document's (or one stored before smls kept its sentences) is parsed.
        """
        stored = self.library.shown([(doc_id, digest, index) for doc_id, digest, index, _ in ranked])
        shown: list[dict[str, Any] | None] = []
        for doc_id, digest, index, score in ranked:
            sentence = stored.get((doc_id, index))
            if sentence is None:
                shown.append(self._shown(doc_id, digest, index, score, digits))
            else:
                shown.append({"doc_id": doc_id, "score": round(score, digits), **sentence})
        return shown

    def _shown(self, doc_id: str, digest: str, index: int, score: float, digits: int = 6) -> dict[str, Any] | None:
        """A sentence of a document's version as clients see it, with its score, from the parsed document; None if that version was replaced or removed since it was ranked."""
        try:
            doc = self._document(doc_id, digest)
        except SmlsError:
            return None
        if doc.digest != digest or index >= len(doc.sentences):  # (_document reads the current version)
            return None
        return {"doc_id": doc_id, "score": round(score, digits), **documents.sentence_json(index, doc.sentences[index])}

    def _vector_search(self, query: str, k: int, doc_ids: list[str] | None, *, shown: bool = True) -> Found:
        """The k sentences most similar to query over doc_ids (None: every document), best first (shown: as clients see them, else with their digest)."""
        found = Found()
        published, scope = self._up_to_date(doc_ids, found)
        vector = self.embedder.batcher.encode([query], normalize=True, timeout=self.timeout).vectors[0]
        mine = {v: row for v, row in published.items() if row[0] in scope}
        neighbours = self.index.nearest(vector, k, None if len(mine) == len(published) else {v: row[2] for v, row in mine.items()})
        ranked = []
        for hit in neighbours:
            row = mine.get(hit.version)
            # (the version indexed must still be the document's version in scope: else it changed since)
            if row is not None and row[1] in self._keys(scope[row[0]]):
                ranked.append((row[0], scope[row[0]], hit.index, hit.score))
        if not shown:
            found.hits = [{"doc_id": doc_id, "digest": digest, "index": index, "score": score} for doc_id, digest, index, score in ranked[:k]]
            return found
        found.hits = [hit for hit in self._show(ranked) if hit is not None][:k]
        return found

    def _up_to_date(self, doc_ids: list[str] | None, found: Found) -> tuple[dict[int, tuple[str, str, int]], dict[str, str]]:
        """The model's published versions, and the documents in scope with their digests, every one of them in the index.

        Bringing every document up to date reads every document's digest and every published
        version: a search's cost would grow with the number of documents. Where the store's
        generation numbers and the data folder's files are what they were at the last such
        search here, nothing can have changed, and its answer is used again.
        """
        stamp = None
        if doc_ids is None:
            stamp = (self.library.generation(), self.index.cache.generation(), tuple(self.library.files().items()))
            fresh = self._fresh
            if fresh is not None and fresh[0] == stamp:
                return fresh[1], fresh[2]
        published = self.index.cache.published(self.index.model)
        scope, changed = self._bring_up_to_date(doc_ids, published, found)
        if changed:
            published = self.index.cache.published(self.index.model)
        self.index.sync(published)
        if stamp is not None and not changed and not found.skipped:  # (a change made here moved the numbers: the next search keeps it)
            self._fresh = (stamp, published, scope)
        return published, scope

    def _bring_up_to_date(self, doc_ids: list[str] | None, published: dict[int, tuple[str, str, int]], found: Found) -> tuple[dict[str, str], bool]:
        """Compute or publish each document in scope that the index lacks; (each id in scope with its digest, whether anything was published or unpublished)."""
        cache, model = self.index.cache, self.index.model
        held = {row[0]: row[1] for row in published.values()}
        changed = False

        def drop(gone: str) -> None:
            nonlocal changed
            cache.unpublish(model, gone)
            changed = True

        def update(doc_id: str, digest: str) -> None:
            nonlocal changed
            keys = self._keys(digest)
            if held.get(doc_id) in keys:
                return
            complete = next((key for key in keys if cache.is_complete(key)), None)
            if complete is None:
                for _ in self.embedder.fill(self.library.load(doc_id)):  # publishes once complete
                    pass
            else:
                cache.publish(model, doc_id, complete)
            changed = True

        scope = self._in_scope(doc_ids, held, drop, update, found)
        return scope, changed

    def _in_scope(
        self, doc_ids: list[str] | None, held: Mapping[str, str], drop: Callable[[str], None], update: Callable[[str, str], None], found: Found
    ) -> dict[str, str]:
        """The ids in scope (None: every document) with their digests, `update(doc_id, digest)` called for each; the ids `held` no longer in scope dropped first.

        A document that fails is listed in `found.skipped` with its error (and left out of
        scope), unless it was asked for by name: then its error is the answer. A shared store also holds other
        instances' data-folder documents, which this one cannot see: nothing is dropped there.
        """
        # Every document's digest at once (one query for the uploads), or those of the few asked for.
        digests = self.library.digests() if doc_ids is None else None
        scope = doc_ids if doc_ids is not None else list(digests or {})
        if digests is not None and not self.shared:
            for gone in set(held) - set(scope):  # uploads deleted, files taken away
                drop(gone)
        current = {}
        for doc_id in scope:
            try:
                digest = digests[doc_id] if digests is not None else self.library.digest(doc_id)
                update(doc_id, digest)
            except SmlsError as exc:
                if digests is None:
                    raise
                found.skipped.append({"doc_id": doc_id, "code": exc.code, "message": exc.message})
                continue
            current[doc_id] = digest
        return current

    def _keys(self, digest: str) -> tuple[str, str]:
        """The cache keys a document with this digest may be indexed under: its raw vectors, or its unit-length ones."""
        return self.embedder.key_for(digest, False), self.embedder.key_for(digest, True)

    def _document(self, doc_id: str, digest: str) -> Document:
        """The parsed document, kept for the next few searches (results cluster in few documents)."""
        with self._lock:
            doc = self._docs.get((doc_id, digest))
            if doc is not None:
                self._docs.move_to_end((doc_id, digest))
                return doc
        doc = self.library.load(doc_id)
        # An upload stored before smls kept its sentences as shown: kept now, so its next hits are one row read each.
        self.library.keep_shown(doc)
        with self._lock:
            self._docs[(doc_id, doc.digest)] = doc
            while len(self._docs) > 8:
                self._docs.popitem(last=False)
        return doc
