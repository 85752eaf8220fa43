"""A disk cache of document embeddings in SQLite: no server, safe across processes.

Vectors are stored in numbered chunks under a key (document digest + model + options),
so a computation interrupted half-way resumes where it stopped, and a document is
"complete" only once every chunk is in. WAL mode lets gunicorn workers read while
one writes; writes are single-row upserts, so racing workers cannot corrupt an entry.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("smls")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY, doc_id TEXT NOT NULL, model TEXT NOT NULL,
    count INTEGER NOT NULL, dimension INTEGER NOT NULL, complete INTEGER NOT NULL DEFAULT 0, updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    key TEXT NOT NULL, chunk INTEGER NOT NULL, rows INTEGER NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (key, chunk)
);
"""


class VectorCache:
    """Chunks of float32 vectors by (key, chunk number) in one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()

    def _db(self) -> sqlite3.Connection:
        # One connection per thread and per process: never reuse one across a fork.
        conn = getattr(self._local, "conn", None)
        if conn is not None and not self.path.exists():  # deleted under us: start a fresh file
            conn.close()
            conn = None
        if conn is None or self._local.pid != os.getpid():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def _run(self, sql: str, args: tuple = ()) -> list[tuple]:
        """Execute one statement; a corrupt or vanished file is moved aside and rebuilt once."""
        for attempt in (1, 2):
            try:
                return self._db().execute(sql, args).fetchall()
            except sqlite3.DatabaseError as exc:
                if attempt == 2 or isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                    raise
                log.warning("document cache %s is unusable (%s); starting a new one", self.path, exc)
                self._reset()
        raise AssertionError("unreachable")

    def _reset(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
        self._local.conn = None
        for suffix in ("", "-wal", "-shm"):
            try:
                Path(f"{self.path}{suffix}").rename(f"{self.path}{suffix}.broken-{os.getpid()}-{int(time.time())}")
            except FileNotFoundError:
                pass

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

    def count(self, doc_id: str) -> int | None:
        """Sentence count of the newest complete entry for doc_id, if any (cheap, for listings)."""
        rows = self._run("SELECT count FROM entries WHERE doc_id = ? AND complete = 1 ORDER BY updated DESC LIMIT 1", (doc_id,))
        return rows[0][0] if rows else None
