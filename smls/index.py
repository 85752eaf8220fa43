"""A nearest-neighbour index over every published document's vectors, per model: hnswlib's HNSW, kept on disk.

What the index should hold is the cache's `published` table (smls.store.sqlite_vectors): one row per
document version, whose id gives its sentences their labels (id << 32 | sentence index).
Each process holds its own copy in memory and catches up with the table before it
searches (adding versions it lacks from the cached vectors, removing the ones gone), so
a document computed, replaced or deleted by any worker is found, or no longer found,
by all of them. After a change the copy is saved (at most once a second, the index
file written beside the cache, then a small manifest naming it, each by rename), so a
restart loads it instead of rebuilding it.

Why hnswlib (bench/ann.py measures it against usearch, docs/benchmarks.org has the numbers): the
best recall and the fastest queries of those measured, removal of single vectors with
their places reused (faiss's HNSW cannot remove), and save/load in one call. usearch
holds half the memory (vectors in f16), but importing it before onnxruntime crashed the
process (usearch 2.26.6 with onnxruntime 1.31.1: a segmentation fault on import).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from pathlib import Path

import hnswlib
import numpy as np
import orjson

from smls.store.base import Neighbour, VectorStore
from smls.vectors import unit_rows

log = logging.getLogger("smls")

SHIFT = 32  # a label is version id << SHIFT | sentence index: 4 billion sentences per document
# HNSW settings: 16 links per node and 128 candidates while building are the usual
# defaults. 256 candidates per query: with 128, recall@10 was 0.94 for queries unlike the
# indexed text (the demo document's sentences against the stdlib corpus), 0.98 with 256,
# at about 1 ms a query (bench/ann.py).
CONNECTIVITY, EXPANSION_ADD, EXPANSION_SEARCH = 16, 128, 256
# A search restricted to at most this many sentences compares the query with each of them
# (exact, a few ms per 100,000); above it, the index is asked for more and filtered.
EXACT_LIMIT = 200_000


def labels(version: int, count: int) -> np.ndarray:
    """The labels of a version's sentences."""
    return (np.uint64(version) << np.uint64(SHIFT)) | np.arange(count, dtype=np.uint64)


def split(label: int) -> tuple[int, int]:
    """(version id, sentence index) of a label."""
    return label >> SHIFT, label & ((1 << SHIFT) - 1)


class AnnIndex:
    """A cosine HNSW index of one dimension (hnswlib): grows as needed, reuses the places of removed vectors."""

    def __init__(self, dimension: int, index: hnswlib.Index | None = None, live: int = 0) -> None:
        self.dimension = dimension
        if index is None:
            index = hnswlib.Index(space="cosine", dim=dimension)
            index.init_index(max_elements=1024, ef_construction=EXPANSION_ADD, M=CONNECTIVITY, allow_replace_deleted=True)
        self.index = index
        self.live = live  # vectors held, not counting removed ones

    def __len__(self) -> int:
        return self.live

    def add(self, keys: np.ndarray, vectors: np.ndarray, returning: bool = False) -> None:
        """Insert vectors under keys (into the places of removed vectors first); `returning`: keys that may have been removed before."""
        if returning:
            keys, vectors = self._take_back(keys, vectors)
            if not len(keys):
                return
        needed = self.live + len(keys)
        if needed > self.index.get_max_elements():
            self.index.resize_index(max(needed, 2 * self.index.get_max_elements()))
        self.index.add_items(np.ascontiguousarray(vectors, dtype=np.float32), keys, num_threads=1, replace_deleted=True)
        self.live += len(keys)

    def _take_back(self, keys: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Revive the keys that still own their old, removed places (their vectors written there); the rest, to add anew.

        Added with replace_deleted, a key that still owns a removed place would get another
        one, and its old place would keep its name: when that place was reused later, hnswlib
        would drop the name, live vector and all, and removing the key would fail with
        "Label not found" (a 500 in the soak, after a search with an older snapshot of the
        published versions put back a version a newer one had taken out).
        """
        back = np.zeros(len(keys), dtype=bool)
        for j, key in enumerate(keys):
            try:
                self.index.unmark_deleted(int(key))
                back[j] = True
            except RuntimeError as exc:  # its place went to another key since, so the key is new; or it is live
                back[j] = "not deleted" in str(exc)
        if back.any():
            self.index.add_items(np.ascontiguousarray(vectors[back], dtype=np.float32), keys[back], num_threads=1)  # in place
            self.live += int(back.sum())
        return keys[~back], vectors[~back]

    def remove(self, keys: np.ndarray) -> None:
        """Take keys out."""
        for key in keys:
            self.index.mark_deleted(int(key))
        self.live -= len(keys)

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(keys, cosine similarities) of the k nearest, best first."""
        k = min(k, self.live)
        if k == 0:
            return np.empty(0, np.uint64), np.empty(0, np.float32)
        self.index.set_ef(max(EXPANSION_SEARCH, k))
        while True:
            try:
                keys, distances = self.index.knn_query(np.asarray(query, dtype=np.float32), k=k)
                return keys[0], 1.0 - distances[0]
            except RuntimeError:  # fewer than k reachable past removed ones: ask for fewer
                if k == 1:
                    return np.empty(0, np.uint64), np.empty(0, np.float32)
                k //= 2

    def vectors(self, keys: np.ndarray) -> np.ndarray:
        """The stored (unit-length) vectors of keys, as float32 rows."""
        return np.asarray(self.index.get_items(keys), dtype=np.float32).reshape(len(keys), self.dimension)

    def save(self, path: Path) -> None:
        """Write the index to path."""
        self.index.save_index(str(path))

    @classmethod
    def load(cls, path: Path, dimension: int, live: int) -> AnnIndex:
        """An index saved by save(), holding `live` vectors."""
        index = hnswlib.Index(space="cosine", dim=dimension)
        index.load_index(str(path), allow_replace_deleted=True)
        return cls(dimension, index, live)


class SearchIndex:
    """One model's index over its published document versions, caught up with the cache before each search and saved after changes."""

    def __init__(self, cache: VectorStore, model: str, dimension: int, folder: Path) -> None:
        self.cache, self.model, self.dimension = cache, model, dimension
        stem = f"index-{uuid.uuid5(uuid.NAMESPACE_URL, model).hex[:16]}"
        self.manifest = folder / f"{stem}.json"
        self.stem = stem
        self.ann = AnnIndex(dimension)
        self.held: dict[int, int] = {}  # version id -> sentence count, what self.ann holds
        # Versions whose vectors were taken out: their keys may still name removed places, so
        # they come back through AnnIndex's take-back (a search holding an older snapshot of
        # the published versions may put back one that a newer snapshot took out).
        self.removed: set[int] = set()
        self._lock = threading.Lock()
        self._loaded = False
        self._save_at: float | None = None
        self._saver: threading.Thread | None = None

    def load(self) -> None:
        """Read the saved index, if there is one that matches its manifest (else start empty: sync rebuilds it)."""
        with self._lock:
            self._load()

    def _load(self) -> None:
        self._loaded = True
        try:
            manifest = orjson.loads(self.manifest.read_bytes())
            held = {int(v): int(n) for v, n in manifest["held"].items()}
            removed = {int(v) for v in manifest.get("removed", [])}
            ann = AnnIndex.load(self.manifest.parent / manifest["file"], self.dimension, sum(held.values()))
        except FileNotFoundError:
            return
        except Exception as exc:  # noqa: BLE001 - a damaged file costs a rebuild from the cache, never a failed search
            log.warning("search index %s is unusable (%s); rebuilding it from the cached vectors", self.manifest, exc)
            return
        if ann.index.element_count < len(ann) or ann.index.dim != self.dimension:
            log.warning("search index %s does not hold the %d vectors its manifest names; rebuilding it", self.manifest, len(ann))
            return
        self.ann, self.held, self.removed = ann, held, removed

    def sync(self, wanted: dict[int, tuple[str, str, int]] | None = None) -> int:
        """Catch up with the published versions (as just read by the caller, else read here); the number of versions added or removed."""
        with self._lock:
            if not self._loaded:
                self._load()
            if wanted is None:
                wanted = self.cache.published(self.model)
            changed = 0
            for version in [v for v in self.held if v not in wanted]:
                self.ann.remove(labels(version, self.held.pop(version)))
                self.removed.add(version)
                changed += 1
            for version, (_doc_id, key, count) in wanted.items():
                if version in self.held:
                    continue
                added = 0
                for chunk in self.cache.vectors(key, self.dimension):
                    self.ann.add(labels(version, len(chunk)) + np.uint64(added), unit_rows(chunk), returning=version in self.removed)
                    added += len(chunk)
                if added != count:  # the vectors went away under us (a newer version began): drop what was added
                    self.ann.remove(labels(version, added))
                    self.removed.add(version)
                    continue
                self.held[version] = count
                self.removed.discard(version)
                changed += 1
            if changed:
                self._save_soon()
            return changed

    def search(self, query: np.ndarray, k: int) -> list[Neighbour]:
        """The k nearest sentences over every held version, best first."""
        with self._lock:
            keys, scores = self.ann.search(query, k)  # (it asks for no more than it holds)
        return [Neighbour(*split(int(key)), float(score)) for key, score in zip(keys, scores, strict=True)]

    def nearest(self, query: np.ndarray, k: int, scope: dict[int, int] | None = None) -> list[Neighbour]:
        """The k nearest sentences, best first: over every held version, or (scope: version -> sentences) over those alone."""
        if scope is None:
            return self.search(query, k)
        if sum(scope.values()) <= EXACT_LIMIT:
            return self.exact(query, list(scope), k)
        want = k * 4  # the index's nearest, asked for more and more until k of them lie in scope
        while True:
            found = [n for n in self.search(query, want) if n.version in scope]
            if len(found) >= k or want >= len(self.ann):
                return found
            want *= 4

    def exact(self, query: np.ndarray, versions: list[int], k: int) -> list[Neighbour]:
        """The k nearest among the given versions only, by exact comparison with their vectors in the index."""
        with self._lock:
            keys = np.concatenate([labels(v, self.held[v]) for v in versions if v in self.held] or [np.empty(0, np.uint64)])
            if not len(keys):
                return []
            scores = unit_rows(self.ann.vectors(keys)) @ np.asarray(query, dtype=np.float32)
        best = np.argsort(-scores, kind="stable")[:k]
        return [Neighbour(*split(int(keys[i])), float(scores[i])) for i in best]

    def _save_soon(self) -> None:
        """Save a second after the last change, from one thread (a burst of changes is saved once)."""
        self._save_at = time.monotonic() + 1.0
        if self._saver is None or not self._saver.is_alive():
            self._saver = threading.Thread(target=self._saving, name="smls-index-save", daemon=True)
            self._saver.start()

    def _saving(self) -> None:
        while self._save_at is not None and (wait := self._save_at - time.monotonic()) > 0:
            time.sleep(wait)
        self.save()

    def save(self) -> None:
        """Write the index, then its manifest (the index file first: a manifest never names a missing or half-written file)."""
        with self._lock:
            self._save_at = None
            folder = self.manifest.parent
            folder.mkdir(parents=True, exist_ok=True)
            name = f"{self.stem}-{uuid.uuid4().hex[:12]}.hnsw"
            self.ann.save(folder / name)
            tmp = self.manifest.with_suffix(f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")  # two saves never share one
            held = {str(v): n for v, n in self.held.items()}
            tmp.write_bytes(orjson.dumps({"model": self.model, "file": name, "held": held, "removed": sorted(self.removed)}))
            os.replace(tmp, self.manifest)
        # Older saves, by this process or another: not the one the manifest names now, and not
        # one another process may be about to name (written in the last minute).
        current = orjson.loads(self.manifest.read_bytes())["file"]
        for old in folder.glob(f"{self.stem}-*.hnsw"):
            try:
                if old.name not in (name, current) and time.time() - old.stat().st_mtime > 60:
                    old.unlink()
            except FileNotFoundError:
                pass
