"""Big texts files, read with a streaming JSON parser: memory stays small whatever the file's size.

A texts file over STREAM_ABOVE bytes is never held whole. One pass reads it in blocks:
each block is hashed (the document's digest) and checked as UTF-8 (the same messages,
with the offset and line of a bad byte), and ijson hands over one sentence at a time,
which is validated exactly as smls.documents validates a small file and written, as
one compact JSON line, to a temporary spill file. The document's sentences are then a
read-only sequence over that file: a slice (a chunk to embed or stream) reads only its
own lines, and only one block of sentences is kept in memory at a time.
"""

from __future__ import annotations

import codecs
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, overload

import ijson
import orjson

from smls.errors import InvalidDocument

STREAM_ABOVE = 32 * 1024 * 1024  # bytes: smaller texts files are read whole (faster), bigger ones streamed
_BLOCK = 256  # sentences per entry of the offset table, and per block kept in memory
_READ = 1 << 20  # bytes read from the file at a time
_BOM = b"\xef\xbb\xbf"
_STARTS = {ord("{"): "an object", ord('"'): "a string", ord("t"): "a boolean", ord("f"): "a boolean", ord("n"): "null"}


class _CheckedReader:
    """The texts file for ijson: checked as UTF-8 (and hashed, given a hash) as it is read, its BOM left out."""

    def __init__(self, file: IO[bytes], name: str, hashed: Any = None) -> None:
        self.file, self.name, self.hashed = file, name, hashed
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.offset, self.lines, self.first = 0, 1, True

    def read(self, size: int = -1) -> bytes:
        """Up to `size` bytes; InvalidDocument at the first byte that is not UTF-8."""
        data = self.file.read(_READ if size < 0 else size)
        if self.hashed is not None:
            self.hashed.update(data)
        try:
            self.decoder.decode(data, final=not data)
        except UnicodeDecodeError as exc:
            line = self.lines + data[: exc.start].count(b"\n")
            raise InvalidDocument(f"{self.name} is not UTF-8: invalid byte at offset {self.offset + exc.start} (line {line})") from None
        self.offset += len(data)
        self.lines += data.count(b"\n")
        if self.first and data:
            self.first = False
            data = data.removeprefix(_BOM)
        return data


class SpilledSentences(Sequence[Any]):
    """A document's sentences, kept in a temporary file and read back a block at a time."""

    def __init__(self, file: IO[bytes], offsets: list[int], count: int, make: Callable[[list[Any]], Any]) -> None:
        self.file, self.offsets, self.length, self.make = file, offsets, count, make
        self._lock = threading.Lock()
        self._cached: tuple[int, list[Any]] | None = None

    def __len__(self) -> int:
        return self.length

    @overload
    def __getitem__(self, index: int) -> Any: ...
    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...
    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            start, stop, step = index.indices(self.length)
            return [self[i] for i in range(start, stop, step)]
        if index < 0:
            index += self.length
        if not 0 <= index < self.length:
            raise IndexError(index)
        return self._block(index // _BLOCK)[index % _BLOCK]

    def _block(self, number: int) -> list[Any]:
        with self._lock:
            if self._cached is None or self._cached[0] != number:
                self.file.seek(self.offsets[number])
                lines = [self.file.readline() for _ in range(min(_BLOCK, self.length - number * _BLOCK))]
                self._cached = (number, [self.make(orjson.loads(line)) for line in lines])
            return self._cached[1]


def first_value_kind(path: Path) -> str | None:
    """What the file's top-level JSON value starts as, in the client's words; None for a list (or nothing readable)."""
    with path.open("rb") as f:
        head = f.read(4096).removeprefix(_BOM).lstrip()
    if not head or head[:1] == b"[":
        return None
    return _STARTS.get(head[0], "a number")


def spill(path: Path, name: str, hashed: Any, check: Callable[[int, Any], tuple[str, list[str], dict[str, Any]]], make: Callable[[list[Any]], Any]) -> SpilledSentences:
    """Validate a big texts file item by item into a spill file, its bytes added to `hashed`; its sentences.

    `check(i, item)` validates one item (raising InvalidDocument) and returns (text, page ids,
    metadata); `make` turns that triple, read back, into a Sentence.
    """
    kind = first_value_kind(path)
    if kind is not None:
        raise InvalidDocument(f"{name} must hold a JSON list of sentence objects, not {kind}")
    size = path.stat().st_size
    hashed.update(size.to_bytes(8, "big"))
    out = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the document's sentences
    offsets: list[int] = []
    count = 0
    try:
        with path.open("rb") as f:
            reader = _CheckedReader(f, name, hashed)
            for item in ijson.items(reader, "item", use_float=True):
                if count % _BLOCK == 0:
                    offsets.append(out.tell())
                try:
                    line = orjson.dumps(check(count, item))
                except orjson.JSONEncodeError:
                    raise InvalidDocument(f"{name} item {count}: holds text that is not valid Unicode (a lone surrogate)") from None
                out.write(line + b"\n")
                count += 1
            while reader.read():  # the rest (whitespace after the list) still counts for the digest
                pass
        if reader.offset != size:
            raise InvalidDocument(f"{name} changed while it was being read; try again")
    except ijson.JSONError as exc:
        out.close()
        raise InvalidDocument(f"{name} is not valid JSON: {exc}") from None
    except BaseException:
        out.close()
        raise
    out.flush()
    return SpilledSentences(out, offsets, count, make)


def count_items(path: Path) -> int | None:
    """How many items the file's top-level list holds, read as a stream; None if it is not a JSON list."""
    if first_value_kind(path) is not None:
        return None
    depth, count = 0, 0
    try:
        with path.open("rb") as f:
            for event, _ in ijson.basic_parse(_CheckedReader(f, path.name), use_float=True):
                if event in ("start_map", "start_array"):
                    if depth == 1:
                        count += 1
                    depth += 1
                elif event in ("end_map", "end_array"):
                    depth -= 1
                elif depth == 1:
                    count += 1
    except (ijson.JSONError, InvalidDocument):
        return None
    return count
