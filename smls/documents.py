"""Documents: load, validate and join texts_<id>.json with pages_<id>.csv. Pure functions, no web imports.

A document is two files in the data folder:
  texts_<id>.json  a JSON list of {"text": str, "pages": [page id, ...], ...own metadata}
  pages_<id>.csv   a header row, then: page id, page number (an integer), ...page metadata
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from smls import spill
from smls.errors import DocumentNotFound, InvalidDocId, InvalidDocument
from smls.parsing import type_name

# ASCII letters, digits, '_', '-', '.'; starts with a letter or digit; never '..'.
DOC_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}"  # also in the OpenAPI description
_DOC_ID = re.compile(DOC_ID_PATTERN, re.ASCII)
_TEXTS = re.compile(r"texts_(.+)\.json", re.ASCII)


@dataclass(frozen=True)
class Page:
    """One row of pages_<id>.csv."""

    id: str
    number: int
    metadata: dict[str, str]

    def as_json(self) -> dict[str, Any]:
        """The page as clients see it."""
        return {"id": self.id, "number": self.number, "metadata": self.metadata}


@dataclass(frozen=True)
class Sentence:
    """One item of texts_<id>.json, its pages resolved."""

    text: str
    pages: tuple[Page, ...]
    metadata: dict[str, Any]


@dataclass(frozen=True)
class Document:
    """A validated, joined document and the digest of both its files."""

    doc_id: str
    sentences: Sequence[Sentence]  # a list, or for a big file its sentences on disk (smls.spill)
    digest: str = field(repr=False)


def check_doc_id(doc_id: str) -> str:
    """Return doc_id if it is a plain name, else raise InvalidDocId."""
    if not _DOC_ID.fullmatch(doc_id) or ".." in doc_id:
        raise InvalidDocId(
            "a document id is 1-100 ASCII letters, digits, '_', '-' or '.', starting with a letter or digit"
        )
    return doc_id


def document_paths(data_dir: Path, doc_id: str) -> tuple[Path, Path]:
    """The texts and pages files of doc_id, guaranteed to lie inside data_dir."""
    check_doc_id(doc_id)
    root = data_dir.resolve()
    paths = (root / f"texts_{doc_id}.json", root / f"pages_{doc_id}.csv")
    for path in paths:
        # The id check already forbids separators; this also catches symlinks that lead out.
        if path.resolve().parent != root:
            raise DocumentNotFound(f"no document {doc_id!r} in the data folder")
    return paths


def list_documents(data_dir: Path) -> list[str]:
    """Ids of the documents in data_dir that have both files, sorted."""
    if not data_dir.is_dir():
        return []
    ids = []
    for path in data_dir.glob("texts_*.json"):
        match = _TEXTS.fullmatch(path.name)
        if match and _DOC_ID.fullmatch(match[1]) and ".." not in match[1] and (data_dir / f"pages_{match[1]}.csv").is_file():
            ids.append(match[1])
    return sorted(ids)


_counts: dict[str, tuple[tuple[int, int], int | None]] = {}


def count_sentences(data_dir: Path, doc_id: str) -> int | None:
    """How many sentences texts_<id>.json holds (None if it is not a JSON list); memoised by file stat."""
    texts_path, _ = document_paths(data_dir, doc_id)
    stat = texts_path.stat()
    stamp = (stat.st_mtime_ns, stat.st_size)
    memo = _counts.get(str(texts_path))
    if memo and memo[0] == stamp:
        return memo[1]
    if stat.st_size > spill.STREAM_ABOVE:
        count = spill.count_items(texts_path)
    else:
        try:
            items = orjson.loads(texts_path.read_bytes())
            count = len(items) if isinstance(items, list) else None
        except (orjson.JSONDecodeError, OSError):
            count = None
    _counts[str(texts_path)] = (stamp, count)
    return count


def load_document(data_dir: Path, doc_id: str) -> Document:
    """Read, validate and join one document from the data folder; DocumentNotFound or InvalidDocument on failure.

    A texts file over spill.STREAM_ABOVE bytes is read as a stream (smls.spill): the same
    checks and messages, the same digest, and memory that does not grow with the file.
    """
    texts_path, pages_path = document_paths(data_dir, doc_id)
    pages = _read(pages_path, doc_id)
    try:
        big = texts_path.stat().st_size > spill.STREAM_ABOVE
    except FileNotFoundError:
        big = False  # _read says so in the usual words
    if not big:
        return parse_document(doc_id, _read(texts_path, doc_id), pages)
    by_id = parse_pages(pages, pages_path.name)
    hashed = hashlib.sha256()
    _add_part(hashed, b"texts")
    sentences = spill.spill(texts_path, texts_path.name, hashed, lambda i, item: _check_item(texts_path.name, i, item, by_id), lambda row: _sentence(row, by_id))
    for part in (b"pages", pages):
        _add_part(hashed, part)
    return Document(doc_id, sentences, hashed.hexdigest())


def parse_document(doc_id: str, texts: bytes, pages: bytes) -> Document:
    """Validate and join a document's two files, however they came (the data folder or an upload); InvalidDocument names the file."""
    by_id = parse_pages(pages, f"pages_{doc_id}.csv")
    return Document(doc_id, parse_texts(texts, f"texts_{doc_id}.json", by_id), digest(texts, pages))


def digest(texts: bytes, pages: bytes) -> str:
    """The digest of a document's two files: any change to either changes it."""
    hashed = hashlib.sha256()
    for part in (b"texts", texts, b"pages", pages):
        _add_part(hashed, part)
    return hashed.hexdigest()


def _add_part(hashed: Any, part: bytes) -> None:
    """One part of a document's digest: its length (8 bytes, big-endian), then its bytes (a streamed part writes the same two itself)."""
    hashed.update(len(part).to_bytes(8, "big"))
    hashed.update(part)


_digests: dict[str, tuple[tuple[int, int, int, int], str]] = {}


def file_digest(data_dir: Path, doc_id: str) -> str:
    """The digest of a document in the data folder, memoised by both files' size and time (DocumentNotFound if one is gone)."""
    texts_path, pages_path = document_paths(data_dir, doc_id)
    try:
        a, b = texts_path.stat(), pages_path.stat()
    except FileNotFoundError:
        raise DocumentNotFound(f"no document {doc_id!r} in the data folder") from None
    stamp = (a.st_mtime_ns, a.st_size, b.st_mtime_ns, b.st_size)
    memo = _digests.get(str(texts_path))
    if memo and memo[0] == stamp:
        return memo[1]
    # digest() of the two files' bytes, read a block at a time: a 1 GB texts file is never held whole.
    hashed = hashlib.sha256()
    for label, path, size in ((b"texts", texts_path, a.st_size), (b"pages", pages_path, b.st_size)):
        _add_part(hashed, label)
        hashed.update(size.to_bytes(8, "big"))
        read = 0
        try:
            with path.open("rb") as f:
                while block := f.read(1 << 20):
                    hashed.update(block)
                    read += len(block)
        except FileNotFoundError:
            raise DocumentNotFound(f"no document {doc_id!r}: {path.name} is missing from the data folder") from None
        if read != size:  # rewritten while read: hash it again, as it is now
            return file_digest(data_dir, doc_id)
    value = hashed.hexdigest()
    _digests[str(texts_path)] = (stamp, value)
    return value


def has_files(data_dir: Path, doc_id: str) -> bool:
    """Whether either file of doc_id is in the data folder."""
    return any(path.exists() for path in document_paths(data_dir, doc_id))


def _read(path: Path, doc_id: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DocumentNotFound(f"no document {doc_id!r}: {path.name} is missing from the data folder") from None
    except IsADirectoryError:
        raise InvalidDocument(f"{path.name} is a directory, not a file") from None
    except PermissionError:
        raise InvalidDocument(f"{path.name} cannot be read (permission denied)") from None


def _decode(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InvalidDocument(f"{name} is not UTF-8: invalid byte at offset {exc.start} (line {line})") from None


def parse_pages(data: bytes, name: str) -> dict[str, Page]:
    """Pages by id from CSV bytes: header row, then id, number, metadata columns."""
    text = _decode(data, name)
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    except csv.Error as exc:
        raise InvalidDocument(f"{name} is not valid CSV: {exc}") from None
    rows_numbered = [(n, row) for n, row in enumerate(rows, start=1) if any(cell.strip() for cell in row)]
    if not rows_numbered:
        raise InvalidDocument(f"{name} is empty; it needs a header row (page id, page number, ...)")
    header_line, header = rows_numbered[0]
    if len(header) < 2:
        raise InvalidDocument(f"{name} line {header_line}: the header has {len(header)} column(s); it needs at least page id and page number")
    meta_names = [h.strip() for h in header[2:]]
    pages: dict[str, Page] = {}
    line_of_number: dict[int, int] = {}
    line_of_id: dict[str, int] = {}
    for line, row in rows_numbered[1:]:
        if len(row) != len(header):
            raise InvalidDocument(f"{name} line {line}: {len(row)} columns, but the header has {len(header)}")
        page_id, raw_number = row[0].strip(), row[1].strip()
        if not page_id:
            raise InvalidDocument(f"{name} line {line}: the page id (column 1) is empty")
        try:
            number = int(raw_number)
        except ValueError:
            raise InvalidDocument(f"{name} line {line}: page number {raw_number!r} is not an integer") from None
        if page_id in line_of_id:
            raise InvalidDocument(f"{name} line {line}: page id {page_id!r} repeats line {line_of_id[page_id]}")
        if number in line_of_number:
            raise InvalidDocument(f"{name} line {line}: page number {number} repeats line {line_of_number[number]}")
        line_of_id[page_id], line_of_number[number] = line, line
        pages[page_id] = Page(page_id, number, dict(zip(meta_names, row[2:], strict=False)))
    return pages


def parse_texts(data: bytes, name: str, pages: dict[str, Page]) -> list[Sentence]:
    """Sentences from JSON bytes, each joined with its pages."""
    _decode(data, name)  # a clear message for bad UTF-8 before orjson's
    try:
        items = orjson.loads(data.removeprefix(b"\xef\xbb\xbf"))
    except orjson.JSONDecodeError as exc:
        raise InvalidDocument(f"{name} is not valid JSON: {exc}") from None
    if not isinstance(items, list):
        raise InvalidDocument(f"{name} must hold a JSON list of sentence objects, not {type_name(items)}")
    return [_sentence(_check_item(name, i, item, pages), pages) for i, item in enumerate(items)]


def _check_item(name: str, i: int, item: Any, pages: dict[str, Page]) -> tuple[str, list[str], dict[str, Any]]:
    """One item of a texts file, validated: (text, page ids, its own metadata); InvalidDocument names the file and the item."""
    if not isinstance(item, dict):
        raise InvalidDocument(f"{name} item {i}: a sentence must be an object with \"text\" and \"pages\"")
    text = item.get("text")
    if "text" not in item:
        raise InvalidDocument(f"{name} item {i}: \"text\" is missing")
    if not isinstance(text, str) or not text.strip():
        raise InvalidDocument(f"{name} item {i}: \"text\" must be a string with some text (not empty or only whitespace)")
    page_ids = item.get("pages", [])
    if not isinstance(page_ids, list) or not all(isinstance(p, str) for p in page_ids):
        raise InvalidDocument(f"{name} item {i}: \"pages\" must be a list of page id strings")
    for page_id in page_ids:
        if page_id not in pages:
            raise InvalidDocument(f"{name} item {i}: page id {page_id!r} is not in the pages file")
    return text, page_ids, {k: v for k, v in item.items() if k not in ("text", "pages")}


def _sentence(row: tuple[str, list[str], dict[str, Any]] | list[Any], pages: dict[str, Page]) -> Sentence:
    """A checked (text, page ids, metadata) as a Sentence, its pages resolved."""
    text, page_ids, metadata = row
    return Sentence(text, tuple(pages[p] for p in page_ids), metadata)


def sentence_json(index: int, sentence: Sentence, embedding: Any = None) -> dict[str, Any]:
    """A joined sentence as clients see it (embedding last, so the rest reads first)."""
    out: dict[str, Any] = {
        "index": index,
        "text": sentence.text,
        "metadata": sentence.metadata,
        "pages": [p.as_json() for p in sentence.pages],
    }
    if embedding is not None:
        out["embedding"] = embedding
    return out
