"""Every document a server knows: uploaded ones (in the store) and files in the data folder, under one id space.

An id names one document from one place. Uploads live in the store and are replaced or
deleted over HTTP; files dropped into the data folder keep working as before and are
changed on disk, so an upload under the id of a file document is refused (409) rather
than shadowing it, and a file document cannot be deleted over HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from smls import documents
from smls.documents import Document
from smls.errors import DocumentConflict, DocumentNotFound
from smls.store import DocumentStore, StoredDocument


@dataclass(frozen=True)
class Entry:
    """One document in a listing: where it lives and how many sentences it has (None: its texts file is not a JSON list)."""

    doc_id: str
    source: str  # "upload" or "files"
    sentences: int | None


class Library:
    """Load, list, upload and delete documents, wherever each one lives."""

    def __init__(self, store: DocumentStore, data_dir: Path) -> None:
        self.store, self.data_dir = store, data_dir

    def load(self, doc_id: str) -> Document:
        """The validated, joined document; DocumentNotFound, InvalidDocId or InvalidDocument."""
        documents.check_doc_id(doc_id)
        stored = self.store.get(doc_id)
        if stored is not None:
            return documents.parse_document(doc_id, stored.texts, stored.pages)
        return documents.load_document(self.data_dir, doc_id)

    def digest(self, doc_id: str) -> str:
        """The current version's digest, cheaply (no parsing); DocumentNotFound if there is none."""
        summary = self.store.summary(doc_id)
        if summary is not None:
            return summary[0]
        return documents.file_digest(self.data_dir, doc_id)

    def digests(self) -> dict[str, str]:
        """Every document's current digest: the uploads' from one query, the files' memoised by size and time."""
        found = {doc_id: digest for doc_id, (digest, _) in self.store.listing().items()}
        for doc_id, digest in self.files().items():
            found.setdefault(doc_id, digest)
        return found

    def files(self) -> dict[str, str]:
        """The data folder's documents with their digests (memoised by size and time), sorted by id."""
        found = {}
        for doc_id in documents.list_documents(self.data_dir):
            try:
                found[doc_id] = documents.file_digest(self.data_dir, doc_id)
            except DocumentNotFound:  # removed since it was listed
                continue
        return found

    def generation(self) -> int:
        """A number that differs whenever an upload has changed since it was last read (the data folder's files are not counted)."""
        return self.store.generation()

    def listing(self) -> list[Entry]:
        """Every document, sorted by id."""
        entries = {i: Entry(i, "upload", n) for i, (_, n) in self.store.listing().items()}
        for doc_id in documents.list_documents(self.data_dir):
            entries.setdefault(doc_id, Entry(doc_id, "files", documents.count_sentences(self.data_dir, doc_id)))
        return [entries[i] for i in sorted(entries)]

    def put(self, doc_id: str, texts: bytes, pages: bytes) -> tuple[Document, bool]:
        """Validate and store an upload exactly as files are validated; (the document, whether it replaced one)."""
        documents.check_doc_id(doc_id)
        doc = documents.parse_document(doc_id, texts, pages)  # a bad upload is told so, whatever its id
        if documents.has_files(self.data_dir, doc_id):
            raise DocumentConflict(
                f"document {doc_id!r} is a pair of files in the data folder; change the files there, or upload under another id"
            )
        replaced = self.store.put(StoredDocument(doc_id, texts, pages, doc.digest, len(doc.sentences), _shown(doc)))
        return doc, replaced

    def keep_shown(self, doc: Document) -> bool:
        """Store an upload's sentences as hits show them where the store holds this version without them (stored before smls kept them); whether it did."""
        summary = self.store.summary(doc.doc_id)  # (a read first: a file document is never written)
        return summary is not None and summary[0] == doc.digest and self.store.add_shown(doc.doc_id, doc.digest, _shown(doc))

    def shown(self, wanted: list[tuple[str, str, int]]) -> dict[tuple[str, int], dict[str, Any]]:
        """Uploaded sentences as search hits show them, by (doc_id, index), for each wanted (doc_id, digest, index) still current; the rest are missing (files, or stored before smls kept them)."""
        return {key: orjson.loads(shown) for key, shown in self.store.shown(wanted).items()}

    def delete(self, doc_id: str) -> None:
        """Remove an uploaded document; DocumentConflict for files in the data folder, DocumentNotFound if there is none."""
        documents.check_doc_id(doc_id)
        if self.store.delete(doc_id):
            return
        if documents.has_files(self.data_dir, doc_id):
            raise DocumentConflict(f"document {doc_id!r} is a pair of files in the data folder; remove the files there to delete it")
        raise DocumentNotFound(f"no document {doc_id!r}")


def _shown(doc: Document) -> tuple[bytes, ...]:
    """Each sentence of a document as a search hit shows it (JSON)."""
    return tuple(orjson.dumps(documents.sentence_json(i, s)) for i, s in enumerate(doc.sentences))
