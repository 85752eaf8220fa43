"""A disk cache of document embeddings in SQLite: no server, safe across processes.

Vectors are stored in numbered chunks under a key (document digest + model + options),
so a computation interrupted half-way resumes where it stopped, and a document is
"complete" only once every chunk is in. WAL mode lets gunicorn workers read while
one writes; writes are single-row upserts, so racing workers cannot corrupt an entry.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from smls.store.sqlite import SqliteFile, generation_schema

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY, doc_id TEXT NOT NULL, model TEXT NOT NULL,
    count INTEGER NOT NULL, dimension INTEGER NOT NULL, complete INTEGER NOT NULL DEFAULT 0, updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    key TEXT NOT NULL, chunk INTEGER NOT NULL, rows INTEGER NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (key, chunk)
);
-- The version of each document the search index holds, per model: a new id for every
-- version, so an index's labels (id << 32 | sentence) never name two sentences.
CREATE TABLE IF NOT EXISTS published (
    id INTEGER PRIMARY KEY AUTOINCREMENT, model TEXT NOT NULL, doc_id TEXT NOT NULL,
    key TEXT NOT NULL, count INTEGER NOT NULL, UNIQUE (model, doc_id)
);
""" + generation_schema("published")


class VectorCache:
    """Chunks of float32 vectors by (key, chunk number) in one SQLite file, and which entries the search index holds."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = SqliteFile(path, _SCHEMA, rebuild=True)
        self._run = self.db.run

    def begin(self, key: str, doc_id: str, model: str, count: int, dimension: int) -> None:
        """Record an entry about to be filled, and drop older versions of the same document and model."""
        self._run(
            "INSERT INTO entries (key, doc_id, model, count, dimension, complete, updated) VALUES (?, ?, ?, ?, ?, 0, ?) "
            "ON CONFLICT(key) DO UPDATE SET updated = excluded.updated",
            (key, doc_id, model, count, dimension, time.time()),
        )
        stale = self._run("SELECT key FROM entries WHERE doc_id = ? AND model = ? AND key != ?", (doc_id, model, key))
        for (old,) in stale:
            self._run("DELETE FROM chunks WHERE key = ?", (old,))
            self._run("DELETE FROM entries WHERE key = ?", (old,))

    def is_complete(self, key: str) -> bool:
        """Whether every chunk of this entry is stored."""
        rows = self._run("SELECT complete FROM entries WHERE key = ?", (key,))
        return bool(rows and rows[0][0])

    def get(self, key: str, chunk: int, dimension: int) -> np.ndarray | None:
        """Chunk `chunk` of `key`, or None if it is not stored."""
        rows = self._run("SELECT rows, data FROM chunks WHERE key = ? AND chunk = ?", (key, chunk))
        if not rows:
            return None
        n, data = rows[0]
        if len(data) != n * dimension * 4:  # a torn or foreign row: recompute rather than trust it
            return None
        return np.frombuffer(data, dtype=np.float32).reshape(n, dimension)

    def stored(self, key: str) -> set[int]:
        """The numbers of the chunks of `key` that are stored."""
        return {row[0] for row in self._run("SELECT chunk FROM chunks WHERE key = ?", (key,))}

    def put(self, key: str, chunk: int, vectors: np.ndarray) -> None:
        """Store one chunk (replacing any earlier copy)."""
        data = np.ascontiguousarray(vectors, dtype=np.float32).tobytes()
        self._run("INSERT OR REPLACE INTO chunks (key, chunk, rows, data) VALUES (?, ?, ?, ?)", (key, chunk, len(vectors), data))

    def finish(self, key: str) -> None:
        """Mark an entry complete."""
        self._run("UPDATE entries SET complete = 1, updated = ? WHERE key = ?", (time.time(), key))

    def vectors(self, key: str, dimension: int) -> Iterator[np.ndarray]:
        """Every stored chunk of `key`, in order."""
        for (number,) in self._run("SELECT chunk FROM chunks WHERE key = ? ORDER BY chunk", (key,)):
            chunk = self.get(key, number, dimension)
            if chunk is not None:
                yield chunk

    def publish(self, model: str, doc_id: str, key: str) -> None:
        """Record that the search index of `model` should hold entry `key` as doc_id (replacing an older version)."""
        with self.db.transaction() as conn:
            row = conn.execute("SELECT key FROM published WHERE model = ? AND doc_id = ?", (model, doc_id)).fetchone()
            if row and row[0] == key:
                return
            conn.execute("DELETE FROM published WHERE model = ? AND doc_id = ?", (model, doc_id))
            conn.execute("INSERT INTO published (model, doc_id, key, count) SELECT ?, ?, key, count FROM entries WHERE key = ?", (model, doc_id, key))

    def generation(self) -> int:
        """A number that differs whenever a published version has changed since it was last read."""
        return self.db.generation()

    def published(self, model: str) -> dict[int, tuple[str, str, int]]:
        """What the search index of `model` should hold: id -> (doc_id, key, count)."""
        return {row[0]: (row[1], row[2], row[3]) for row in self._run("SELECT id, doc_id, key, count FROM published WHERE model = ?", (model,))}

    def unpublish(self, model: str, doc_id: str) -> None:
        """Take doc_id out of the search index of `model` (its vectors stay cached)."""
        self._run("DELETE FROM published WHERE model = ? AND doc_id = ?", (model, doc_id))

    def drop(self, doc_id: str) -> None:
        """Forget every vector of doc_id, for every model, and take it out of every search index."""
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM chunks WHERE key IN (SELECT key FROM entries WHERE doc_id = ?)", (doc_id,))
            conn.execute("DELETE FROM entries WHERE doc_id = ?", (doc_id,))
            conn.execute("DELETE FROM published WHERE doc_id = ?", (doc_id,))
