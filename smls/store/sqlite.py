"""SQLite: one connection per thread and per process over a WAL file; the embedded document store."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from smls.store.base import StoredDocument

log = logging.getLogger("smls")


BUSY_TIMEOUT = 30.0  # seconds a statement waits for another connection's lock


def _setting_up(conn: sqlite3.Connection, schema: str) -> None:
    """WAL mode and the schema on a new connection, waiting for other processes that set up the same file at once.

    Switching to WAL answers "database is locked" at once, without waiting out the busy
    timeout, while another connection is setting up a new file: two processes that open
    a fresh cache together (a server and `precompute`) would see one of them fail.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(schema)
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def generation_schema(table: str) -> str:
    """SQL that keeps a number (SqliteFile.generation) moving whenever a row of `table` changes, in the writing transaction.

    It starts at random, so a file made afresh (a broken cache moved aside) never repeats
    an old number.
    """
    bump = "BEGIN UPDATE generation SET n = n + 1 WHERE id = 1; END"
    return (
        "CREATE TABLE IF NOT EXISTS generation (id INTEGER PRIMARY KEY, n INTEGER NOT NULL);\n"
        "INSERT OR IGNORE INTO generation VALUES (1, abs(random() % 1000000000000000));\n"
        + "".join(f"CREATE TRIGGER IF NOT EXISTS {table}_{event.lower()} AFTER {event} ON {table} {bump};\n" for event in ("INSERT", "UPDATE", "DELETE"))
    )


class SqliteFile:
    """An SQLite file with its schema, shared safely by threads and forked processes."""

    def __init__(self, path: Path, schema: str, *, rebuild: bool = False) -> None:
        self.path, self.schema = path, schema
        self.rebuild = rebuild  # a disposable file (a cache): a corrupt one is moved aside and started afresh
        self._local = threading.local()

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (a new one after a fork, or when the file was deleted under us)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and not self.path.exists():
            conn.close()
            conn = None
        if conn is None or self._local.pid != os.getpid():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
            _setting_up(conn, self.schema)
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def generation(self) -> int:
        """The number generation_schema keeps moving: it differs whenever its table has changed since it was last read."""
        return int(self.run("SELECT n FROM generation WHERE id = 1")[0][0])

    def run(self, sql: str, args: tuple = ()) -> list[tuple]:
        """Execute one statement and fetch its rows."""
        for attempt in (1, 2):
            try:
                return self.connection().execute(sql, args).fetchall()
            except sqlite3.DatabaseError as exc:
                if not self.rebuild or attempt == 2 or isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                    raise
                log.warning("%s is unusable (%s); starting a new one", self.path, exc)
                self._reset()
        raise AssertionError("unreachable")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: every statement in it lands, or none does."""
        conn = self.connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

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


_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    doc_id TEXT PRIMARY KEY, texts BLOB NOT NULL, pages BLOB NOT NULL,
    digest TEXT NOT NULL, sentences INTEGER NOT NULL, updated REAL NOT NULL
);
-- Each uploaded sentence as a search hit shows it: a hit reads its row, not its whole document parsed.
CREATE TABLE IF NOT EXISTS sentences (doc_id TEXT NOT NULL, idx INTEGER NOT NULL, shown BLOB NOT NULL, PRIMARY KEY (doc_id, idx));
""" + generation_schema("documents")


def _replace_shown(conn: sqlite3.Connection, doc_id: str, shown: tuple[bytes, ...]) -> None:
    """In a storing transaction: a document's sentences as hits show them, in place of any before."""
    conn.execute("DELETE FROM sentences WHERE doc_id = ?", (doc_id,))
    conn.executemany("INSERT INTO sentences (doc_id, idx, shown) VALUES (?, ?, ?)", ((doc_id, i, sentence) for i, sentence in enumerate(shown)))


class SqliteStore:
    """Uploaded documents in one SQLite file (the embedded default)."""

    def __init__(self, path: Path) -> None:
        self.db = SqliteFile(path, _SCHEMA)

    def get(self, doc_id: str) -> StoredDocument | None:
        """The stored document, or None."""
        rows = self.db.run("SELECT texts, pages, digest, sentences FROM documents WHERE doc_id = ?", (doc_id,))
        return StoredDocument(doc_id, bytes(rows[0][0]), bytes(rows[0][1]), rows[0][2], rows[0][3]) if rows else None

    def summary(self, doc_id: str) -> tuple[str, int] | None:
        """(digest, sentence count) of a stored document without its bytes, or None."""
        rows = self.db.run("SELECT digest, sentences FROM documents WHERE doc_id = ?", (doc_id,))
        return (rows[0][0], rows[0][1]) if rows else None

    def put(self, doc: StoredDocument) -> bool:
        """Store doc and its sentences as hits show them, replacing any earlier version in one transaction; True if it replaced one."""
        with self.db.transaction() as conn:
            existed = conn.execute("SELECT 1 FROM documents WHERE doc_id = ?", (doc.doc_id,)).fetchone() is not None
            conn.execute(
                "INSERT OR REPLACE INTO documents (doc_id, texts, pages, digest, sentences, updated) VALUES (?, ?, ?, ?, ?, ?)",
                (doc.doc_id, doc.texts, doc.pages, doc.digest, doc.sentences, time.time()),
            )
            _replace_shown(conn, doc.doc_id, doc.shown)
        return existed

    def add_shown(self, doc_id: str, digest: str, shown: tuple[bytes, ...]) -> bool:
        """Store the sentences as hits show them of a document stored without them (before smls kept them), if that version is the stored one; whether they were written."""
        with self.db.transaction() as conn:
            if conn.execute("SELECT 1 FROM documents WHERE doc_id = ? AND digest = ?", (doc_id, digest)).fetchone() is None:
                return False
            if conn.execute("SELECT 1 FROM sentences WHERE doc_id = ? LIMIT 1", (doc_id,)).fetchone() is not None:
                return False
            _replace_shown(conn, doc_id, shown)
        return True

    def delete(self, doc_id: str) -> bool:
        """Remove a document; False if there was none."""
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM sentences WHERE doc_id = ?", (doc_id,))
            return conn.execute("DELETE FROM documents WHERE doc_id = ?", (doc_id,)).rowcount > 0

    def listing(self) -> dict[str, tuple[str, int]]:
        """Every stored id with its (digest, sentence count)."""
        return {row[0]: (row[1], row[2]) for row in self.db.run("SELECT doc_id, digest, sentences FROM documents ORDER BY doc_id")}

    def generation(self) -> int:
        """A number that differs whenever a document has changed since it was last read."""
        return self.db.generation()

    def shown(self, wanted: list[tuple[str, str, int]]) -> dict[tuple[str, int], bytes]:
        """Sentences as search hits show them, by (doc_id, index), for each wanted (doc_id, digest, index) whose version is the stored one."""
        found = {}
        for doc_id, digest, index in wanted:  # (in process: a statement each costs microseconds)
            rows = self.db.run(
                "SELECT s.shown FROM sentences s JOIN documents d ON d.doc_id = s.doc_id WHERE s.doc_id = ? AND s.idx = ? AND d.digest = ?", (doc_id, index, digest)
            )
            if rows:
                found[(doc_id, index)] = bytes(rows[0][0])
        return found
