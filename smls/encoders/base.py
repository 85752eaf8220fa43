"""The contract every encoder keeps (`Encoder`), and the batching all backends share (`SentenceEncoder`).

The server, the batcher and the document embedder speak only to `Encoder`; a backend
subclasses `SentenceEncoder` and turns one batch of texts into vectors (`_encode_batch`).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from smls.catalog import default_name
from smls.encoders.slots import Budget, Slots
from smls.errors import StartupError
from smls.vectors import unit_rows

# (sentences, tokens, truncated) after each encode; the server counts them in its metrics.
EncodedHook = Callable[[int, int, int], Any]
# What a backend returns for one batch: vectors, truncated flags, token counts.
BatchResult = tuple[np.ndarray, Sequence[bool] | np.ndarray, Sequence[int] | np.ndarray]


@dataclass(frozen=True)
class Encoded:
    """Vectors for a list of texts, in input order, with what truncation did to each."""

    vectors: np.ndarray  # float32, shape (n, dimension)
    truncated_flags: np.ndarray  # bool, shape (n,): the text was longer than max_seq_length and cut
    token_counts: np.ndarray  # int, shape (n,): tokens fed to the model, special tokens included

    @property
    def truncated(self) -> int:
        """How many texts were truncated."""
        return int(self.truncated_flags.sum())

    @property
    def tokens(self) -> int:
        """Tokens fed to the model in all."""
        return int(self.token_counts.sum())

    def slice(self, start: int, stop: int) -> Encoded:
        """The part of this result for texts[start:stop]."""
        return Encoded(self.vectors[start:stop], self.truncated_flags[start:stop], self.token_counts[start:stop])

    def normalized(self) -> Encoded:
        """The same result with every vector scaled to unit length (zero vectors stay zero)."""
        return Encoded(unit_rows(self.vectors), self.truncated_flags, self.token_counts)


class Encoder(Protocol):
    """What the server, the batcher and the document embedder need of a sentence encoder."""

    kind: Literal["embedding"]
    name: str
    path: Path
    backend: str
    fingerprint: str
    dimension: int
    max_seq_length: int
    #: Sentences per forward pass when a call carries many.
    batch_size: int
    #: Forward passes of this model allowed at once in this process (set_streams).
    streams: int
    #: Whether forward passes may run in several threads at once (see set_streams).
    parallel_safe: bool
    #: Sentences run through the model so far (tests and metrics see cache hits by it).
    sentences_encoded: int
    on_encoded: EncodedHook | None

    def info(self) -> dict[str, Any]:
        """Name, path, backend, dimension, max sequence length, device and fingerprint."""
        ...

    def set_streams(self, n: int, budget: Budget | None = None) -> None:
        """Let up to `n` forward passes of this model run at once, each also holding a slot of the worker's `budget`."""
        ...

    def prepare(self, texts: Sequence[str]) -> list[Any] | None:
        """Work that may run in the caller's thread before the model's turn (tokenising); None if none."""
        ...

    def encode(self, texts: Sequence[str], *, normalize: bool = False, prepared: list[Any] | None = None) -> Encoded:
        """Vectors for texts, in order, with truncation and token counts."""
        ...

    def run(self, texts: Sequence[str], *, normalize: bool = False) -> np.ndarray:
        """Just the vectors, float32 (len(texts), dimension)."""
        ...


class SentenceEncoder:
    """A sentence embedding model loaded once; thread-safe. Sorts by length, batches, restores order."""

    kind: Literal["embedding"] = "embedding"
    backend = "abstract"
    parallel_safe = False

    def __init__(self, path: Path, name: str | None, batch_size: int) -> None:
        self.path = path
        self.name = name or default_name(path)
        self.batch_size = batch_size
        self.fingerprint = model_fingerprint(path)
        self.dimension = 0
        self.max_seq_length = 0
        self.device = "cpu"
        # Forward passes allowed at once in this process (see set_streams). One by default:
        # concurrent passes on the same cores only fight over them.
        self.streams = 1
        # Padded tokens one pass may hold besides batch_size sentences; None: no such limit.
        self.pass_tokens: int | None = None
        # Sentences one pass may hold, below batch_size (the size of the scheduler's pieces); None: batch_size.
        self.pass_sentences: int | None = None
        self._slots = Slots(1)
        self._count_lock = threading.Lock()
        self.sentences_encoded = 0
        self.on_encoded: EncodedHook | None = None

    def set_streams(self, n: int, budget: Budget | None = None) -> None:
        """Let up to `n` forward passes run at once in this process (each on its own inference threads).

        With a `budget` shared by several models, each pass also holds one of its slots, so
        all models together never run more passes than the worker has streams.
        """
        if n > 1 and not self.parallel_safe:
            raise StartupError(f"the {self.backend} backend runs one forward pass at a time; SMLS_INFERENCE_STREAMS must be 1")
        self.streams = n
        self._slots = Slots(n, budget, self.name)

    def info(self) -> dict[str, Any]:
        """Model name, path, backend, dimension, max sequence length, device and fingerprint."""
        return {
            "name": self.name,
            "path": str(self.path),
            "backend": self.backend,
            "dimension": self.dimension,
            "max_seq_length": self.max_seq_length,
            "device": self.device,
            "fingerprint": self.fingerprint,
        }

    def run(self, texts: Sequence[str], *, normalize: bool = False) -> np.ndarray:
        """Embed `texts`; return a float32 array of shape (len(texts), dimension)."""
        return self.encode(texts, normalize=normalize).vectors

    def prepare(self, texts: Sequence[str]) -> list[Any] | None:
        """Work that may run outside the model lock, in the caller's thread (e.g. tokenising); None if none."""
        return None

    def encode(self, texts: Sequence[str], *, normalize: bool = False, prepared: list[Any] | None = None) -> Encoded:
        """Embed `texts` in batches, longest first, and report truncation and token counts.

        `prepared` is what prepare(texts) returned, if the caller did that part already.
        """
        texts = list(texts)
        if any(not isinstance(t, str) for t in texts):
            raise TypeError("SentenceEncoder.encode takes a list of strings")
        if prepared is None:
            prepared = self.prepare(texts)
        started = self._slots.acquire()
        try:
            if len(texts) == 1:
                # One sentence, as most requests are: its pass's own arrays, without the sort
                # and the copies into place, which cost about 0.1 ms right after a pass, its
                # caches cold (docs/benchmarks.org, "Around the pass").
                vectors, flags, counts = self._encode_batch(texts, prepared)
                out = np.asarray(vectors, dtype=np.float32).reshape(1, self.dimension)
                truncated, tokens = np.asarray(flags, dtype=bool).reshape(1), np.asarray(counts, dtype=np.int64).reshape(1)
            else:
                out = np.empty((len(texts), self.dimension), dtype=np.float32)
                truncated = np.zeros(len(texts), dtype=bool)
                tokens = np.zeros(len(texts), dtype=np.int64)
                size = min(self.batch_size, self.pass_sentences or self.batch_size)
                for idx in batches_by_length(self._lengths(texts, prepared), size, self.pass_tokens):
                    part = None if prepared is None else [prepared[i] for i in idx]
                    out[idx], truncated[idx], tokens[idx] = self._encode_batch([texts[i] for i in idx], part)
            with self._count_lock:  # (once all passed: nothing reads it as a document's progress)
                self.sentences_encoded += len(texts)
        finally:
            self._slots.release(started)
        result = Encoded(out, truncated, tokens)
        if self.on_encoded is not None:
            self.on_encoded(len(texts), int(tokens.sum()), int(truncated.sum()))
        return result.normalized() if normalize else result

    def _lengths(self, texts: list[str], prepared: list[Any] | None) -> list[int]:
        """What sorts texts into passes: characters here; tokens where the encoder tokenises first."""
        return [len(t) for t in texts]

    def _encode_batch(self, texts: list[str], prepared: list[Any] | None) -> BatchResult:
        """Vectors, truncated flags and token counts for one batch (called holding one of the streams)."""
        raise NotImplementedError


def batches_by_length(lengths: Sequence[int], size: int, tokens: int | None = None) -> list[list[int]]:
    """Indexes by `lengths`, longest first, in groups of at most `size` and (given) `tokens` padded tokens.

    Like SentenceTransformer.encode: similar lengths share a pass, so padding is small. A
    group's padded size is its count times its first (longest) length; one text alone may
    exceed `tokens`.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    for i in order:
        group = groups[-1] if groups else None
        if group is None or len(group) >= size or (tokens is not None and (len(group) + 1) * lengths[group[0]] > tokens):
            groups.append([i])
        else:
            group.append(i)
    return groups


def model_fingerprint(path: Path) -> str:
    """A short digest of the model folder (file names, sizes, mtimes): changes when the weights change."""
    digest = hashlib.sha256(str(path).encode())
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        stat = file.stat()
        digest.update(f"{file.relative_to(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]
