"""What `smls embed` reads: JSONL files, Parquet files and smls documents, cut into blocks of rows.

A block is the unit of work, of output and of a re-run: a range of one input (lines of a
JSONL file, rows of a Parquet file, or one document), named from the input's position on
the command line and its first row, so the same inputs always make the same blocks.
Planning a block reads only what it must (a JSONL file's line offsets, a Parquet file's
metadata, a document's sentence count); the rows themselves are read where the block
is embedded, so that on Ray the files are read by the nodes, not sent by the driver.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

from smls.documents import check_doc_id
from smls.errors import InvalidDocId, SmlsError

Kind = Literal["jsonl", "parquet", "document"]
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
DOCUMENTS = "documents"  # the input that names the documents of SMLS_DATA_DIR and the store


class CorpusError(SmlsError):
    """An input `smls embed` cannot use: missing, of an unknown kind, or a bad row when bad rows stop the run."""

    code = "invalid_input"


@dataclass(frozen=True)
class Fields:
    """Which of an input's fields are the id and the text, and which others go to the output as they are."""

    id: str = "id"
    text: str = "text"
    keep: tuple[str, ...] = ()


@dataclass(frozen=True)
class Block:
    """Rows [start, stop) of one input: lines of a JSONL file (from byte `offset`), rows of a Parquet file, or sentences of a document."""

    kind: Kind
    source: str  # the file's path, or the document's id
    number: int  # the input's position on the command line: part of the name, so two files of one name do not collide
    start: int
    stop: int
    offset: int = 0  # JSONL: the byte where line `start` begins

    @property
    def name(self) -> str:
        """The output file's name (without its suffix): input number, the source's stem, first row."""
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(self.source).stem if self.kind != "document" else self.source)[:60]
        return f"part-{self.number:04d}-{stem}-{self.start:012d}"

    def as_dict(self) -> dict[str, Any]:
        """The block as a plain row (Ray Data passes rows between processes)."""
        return {"kind": self.kind, "source": self.source, "number": self.number, "start": self.start, "stop": self.stop, "offset": self.offset}


@dataclass
class BadRow:
    """A row that could not be embedded, where it is (file and line, or document and sentence), and why."""

    source: str
    line: int  # 1-based: a JSONL file's line, a Parquet file's row, a document's sentence
    reason: str

    def __str__(self) -> str:
        what = "row" if self.source.endswith(".parquet") else "line"
        return f"{self.source}: {what} {self.line}: {self.reason}"


@dataclass
class Rows:
    """A block's good rows (their ids, texts and kept columns, in input order) and its bad ones."""

    ids: list[Any] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    kept: dict[str, list[Any]] = field(default_factory=dict)
    bad: list[BadRow] = field(default_factory=list)
    extra: dict[str, list[Any]] = field(default_factory=dict)  # a document's own columns: doc_id, index, pages


def plan(inputs: Sequence[str], block_rows: int, documents: Sequence[tuple[str, int]] = ()) -> list[Block]:
    """Every block of `inputs`, in order; `documents` is (id, sentence count) for each document the input `documents` names."""
    blocks: list[Block] = []
    for number, source in enumerate(inputs):
        if source == DOCUMENTS or source.startswith(DOCUMENTS + "/"):
            wanted = {d for d, _ in documents} if source == DOCUMENTS else {source.split("/", 1)[1]}
            for doc_id, count in documents:
                if doc_id in wanted:
                    blocks.extend(Block("document", doc_id, number, start, min(start + block_rows, count)) for start in range(0, count, block_rows))
            continue
        path = Path(source)
        if path.is_dir():
            files = sorted(path.glob("*.parquet")) or sorted(p for s in JSONL_SUFFIXES for p in path.glob("*" + s))
            if not files:
                raise CorpusError(f"{source}: a folder with no .parquet or .jsonl files")
            for file in files:
                blocks.extend(_file_blocks(file, number, block_rows))
            continue
        if not path.is_file():
            raise CorpusError(f"{source}: no such file (an input is a .jsonl or .parquet file, a folder of them, 'documents' or 'documents/<id>')")
        blocks.extend(_file_blocks(path, number, block_rows))
    return blocks


def document_ids(inputs: Sequence[str]) -> list[str] | None:
    """The document ids the inputs name (None for 'documents', all of them; [] when no input is a document)."""
    ids: list[str] = []
    for source in inputs:
        if source == DOCUMENTS:
            return None
        if source.startswith(DOCUMENTS + "/"):
            doc_id = source.split("/", 1)[1]
            try:
                ids.append(check_doc_id(doc_id))
            except InvalidDocId as exc:
                raise CorpusError(f"{source}: {doc_id!r} is not a document id ({exc.message})") from None
    return ids


def _file_blocks(path: Path, number: int, block_rows: int) -> Iterator[Block]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            rows = pq.ParquetFile(path).metadata.num_rows
        except Exception as e:  # pyarrow's errors have no common base
            raise CorpusError(f"{path}: not a Parquet file ({e})") from None
        for start in range(0, rows, block_rows):
            yield Block("parquet", str(path), number, start, min(start + block_rows, rows))
        return
    if path.suffix not in JSONL_SUFFIXES:
        raise CorpusError(f"{path}: unknown kind of file; smls embed reads .jsonl (one JSON object per line) and .parquet")
    # One pass over the bytes for the offset of every block_rows-th line: a block is then
    # read from its offset alone, and every bad row is told by its line number.
    with path.open("rb") as f:
        line = offset = start_offset = start = 0
        for raw in f:
            if line - start == block_rows:
                yield Block("jsonl", str(path), number, start, line, start_offset)
                start, start_offset = line, offset
            line += 1
            offset += len(raw)
        if line > start:
            yield Block("jsonl", str(path), number, start, line, start_offset)


def read(block: Block, fields: Fields, load_document: Any = None) -> Rows:
    """A block's rows; `load_document(doc_id)` gives a Document for document blocks."""
    if block.kind == "jsonl":
        return _read_jsonl(block, fields)
    if block.kind == "parquet":
        return _read_parquet(block, fields)
    return _read_document(block, load_document(block.source))


def _check(rows: Rows, source: str, line: int, item: Any, fields: Fields, get: Any) -> None:
    """Add one row to `rows`, or to its bad rows with the reason."""
    ident, text = get(item, fields.id), get(item, fields.text)
    reason = None
    if ident is None:
        reason = f"no {fields.id!r} field (the id)"
    elif not isinstance(ident, (str, int)) or isinstance(ident, bool):
        reason = f"the id {fields.id!r} is not a string or an integer"
    elif text is None:
        reason = f"no {fields.text!r} field (the text)"
    elif not isinstance(text, str):
        reason = f"the text {fields.text!r} is not a string"
    elif not text.strip():
        reason = "the text is empty"
    else:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            reason = "the text holds a lone surrogate (an escape such as \\ud800 that is not half of a pair)"
    if reason is not None:
        rows.bad.append(BadRow(source, line, reason))
        return
    rows.ids.append(str(ident) if isinstance(ident, int) else ident)
    rows.texts.append(text)
    for name in fields.keep:
        rows.kept.setdefault(name, []).append(get(item, name))


def _read_jsonl(block: Block, fields: Fields) -> Rows:
    rows = Rows(kept={name: [] for name in fields.keep})
    with open(block.source, "rb") as f:
        f.seek(block.offset)
        for line in range(block.start + 1, block.stop + 1):
            raw = f.readline()
            if not raw.strip():
                rows.bad.append(BadRow(block.source, line, "an empty line"))
                continue
            try:
                item = orjson.loads(raw)
            except orjson.JSONDecodeError as e:
                # orjson also refuses lone surrogates; the standard library reads them, and _check names them
                import json

                try:
                    item = json.loads(raw)
                except ValueError:
                    rows.bad.append(BadRow(block.source, line, f"not JSON ({e})"))
                    continue
            if not isinstance(item, dict):
                rows.bad.append(BadRow(block.source, line, "not a JSON object"))
                continue
            _check(rows, block.source, line, item, fields, lambda item, name: item.get(name))
    return rows


def _read_parquet(block: Block, fields: Fields) -> Rows:
    import pyarrow.parquet as pq

    wanted = list(dict.fromkeys([fields.id, fields.text, *fields.keep]))
    file = pq.ParquetFile(block.source)
    missing = [name for name in wanted if name not in file.schema_arrow.names]
    if missing:
        raise CorpusError(f"{block.source}: no column {', '.join(map(repr, missing))}; it has {', '.join(file.schema_arrow.names)}")
    rows = Rows(kept={name: [] for name in fields.keep})
    table = _slice(file, block.start, block.stop, wanted)
    columns = {name: table.column(name).to_pylist() for name in wanted}
    for i in range(table.num_rows):
        _check(rows, block.source, block.start + i + 1, i, fields, lambda i, name: columns[name][i])
    return rows


def _slice(file: Any, start: int, stop: int, columns: list[str]) -> Any:
    """Rows [start, stop) of a Parquet file, reading only the row groups that hold them."""
    import pyarrow as pa

    parts, first = [], 0
    for group in range(file.num_row_groups):
        n = file.metadata.row_group(group).num_rows
        if first < stop and first + n > start:
            table = file.read_row_group(group, columns=columns)
            parts.append(table.slice(max(start - first, 0), min(stop, first + n) - max(start, first)))
        first += n
    return pa.concat_tables(parts) if parts else file.schema_arrow.empty_table().select(columns)


def _read_document(block: Block, doc: Any) -> Rows:
    if len(doc.sentences) < block.stop:
        raise CorpusError(f"document {doc.doc_id!r} changed during the run: it has {len(doc.sentences)} sentences, the run planned {block.stop}")
    rows = Rows(extra={"doc_id": [], "index": [], "pages": []})
    for index in range(block.start, block.stop):
        sentence = doc.sentences[index]
        rows.ids.append(f"{doc.doc_id}/{index}")
        rows.texts.append(sentence.text)
        rows.extra["doc_id"].append(doc.doc_id)
        rows.extra["index"].append(index)
        rows.extra["pages"].append([page.number for page in sentence.pages])
    return rows
