"""Keyword search over every document's sentences in SQLite FTS5 (BM25), beside the vector cache in SMLS_CACHE_DIR.

Each document's current version is held once, whatever the model: its sentences in the
FTS5 table under explicit row ids (a contiguous run per document, so replacing one
deletes a range, not a scan), and its digest in a side table, so a search sees at a
glance which documents are missing or stale.
"""

from __future__ import annotations

from pathlib import Path

from smls.store.base import KeywordHit
from smls.store.sqlite import SqliteFile

_SCHEMA = """
CREATE VIRTUAL TABLE IF NOT EXISTS keywords USING fts5(text, doc_id UNINDEXED, idx UNINDEXED, tokenize = 'unicode61 remove_diacritics 2');
CREATE TABLE IF NOT EXISTS keyword_docs (doc_id TEXT PRIMARY KEY, digest TEXT NOT NULL, first INTEGER NOT NULL, count INTEGER NOT NULL);
"""


class SqliteKeywords:
    """Every document's sentences in an FTS5 table (one SQLite file), searched by BM25."""

    def __init__(self, path: Path) -> None:
        self.db = SqliteFile(path, _SCHEMA, rebuild=True)

    def digests(self) -> dict[str, str]:
        """Every document held, with the digest of the version held."""
        return dict(self.db.run("SELECT doc_id, digest FROM keyword_docs"))

    def put(self, doc_id: str, digest: str, texts: list[str]) -> None:
        """Hold this version of doc_id's sentences, in place of any other (a no-op if another process just did it)."""
        with self.db.transaction() as conn:
            held = conn.execute("SELECT digest, first, count FROM keyword_docs WHERE doc_id = ?", (doc_id,)).fetchone()
            if held is not None and held[0] == digest:
                return
            if held is not None:
                conn.execute("DELETE FROM keywords WHERE rowid BETWEEN ? AND ?", (held[1], held[1] + held[2] - 1))
            first = conn.execute("SELECT COALESCE(MAX(rowid), 0) + 1 FROM keywords").fetchone()[0]
            conn.executemany("INSERT INTO keywords (rowid, text, doc_id, idx) VALUES (?, ?, ?, ?)", ((first + i, t, doc_id, i) for i, t in enumerate(texts)))
            conn.execute("INSERT OR REPLACE INTO keyword_docs (doc_id, digest, first, count) VALUES (?, ?, ?, ?)", (doc_id, digest, first, len(texts)))

    def drop(self, doc_id: str) -> None:
        """Forget doc_id's sentences."""
        with self.db.transaction() as conn:
            held = conn.execute("SELECT first, count FROM keyword_docs WHERE doc_id = ?", (doc_id,)).fetchone()
            if held is not None:
                conn.execute("DELETE FROM keywords WHERE rowid BETWEEN ? AND ?", (held[0], held[0] + held[1] - 1))
                conn.execute("DELETE FROM keyword_docs WHERE doc_id = ?", (doc_id,))

    def search(self, words: list[str], k: int, doc_ids: list[str] | None = None) -> list[KeywordHit]:
        """The k sentences that best match any of `words` (BM25, best first), over every document or those named."""
        if not words:
            return []
        # Each word a quoted phrase: nothing a client sends is read as FTS5 syntax.
        match = " OR ".join('"' + w.replace('"', '""') + '"' for w in words)
        where, args = "", [match]
        if doc_ids is not None:
            where = f" AND keywords.doc_id IN ({', '.join('?' * len(doc_ids))})"
            args += doc_ids
        rows = self.db.run(
            "SELECT keywords.doc_id, d.digest, keywords.idx, -bm25(keywords) FROM keywords JOIN keyword_docs d ON d.doc_id = keywords.doc_id "
            f"WHERE keywords MATCH ?{where} ORDER BY bm25(keywords), keywords.rowid LIMIT ?",
            (*args, k),
        )
        return [KeywordHit(doc_id, digest, int(idx), float(score)) for doc_id, digest, idx, score in rows]
