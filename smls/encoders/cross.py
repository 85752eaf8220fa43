"""Cross-encoders: a model that reads a query and a document together and scores how well they match (torch).

Slower than comparing embeddings (every pair is a forward pass) and more accurate: the
usual second stage after a vector search. Loaded with sentence-transformers' CrossEncoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from smls.catalog import default_name
from smls.encoders.base import EncodedHook, model_fingerprint
from smls.encoders.slots import Budget, Slots
from smls.encoders.torch import set_torch_threads
from smls.errors import StartupError


@dataclass(frozen=True)
class Scores:
    """One score per document, in input order, with what truncation did to each pair."""

    scores: np.ndarray  # float32, shape (n,)
    truncated_flags: np.ndarray  # bool, shape (n,): the pair (or the text) was cut to max_seq_length
    token_counts: np.ndarray  # int, shape (n,)

    @property
    def tokens(self) -> int:
        """Tokens fed to the model in all."""
        return int(self.token_counts.sum())


class PairScorer(Protocol):
    """What /rerank needs of a cross-encoder."""

    kind: Literal["cross-encoder"]
    name: str
    path: Path
    backend: str
    fingerprint: str
    max_seq_length: int
    on_encoded: EncodedHook | None

    def info(self) -> dict[str, Any]:
        """Name, path, backend, max sequence length, device and fingerprint."""
        ...

    def set_streams(self, n: int, budget: Budget | None = None) -> None:
        """Let up to `n` passes run at once, each also holding a slot of the worker's `budget`."""
        ...

    def score(self, query: str, documents: Sequence[str], *, raw: bool = False, timeout: float | None = None) -> Scores:
        """How well each document answers the query; `raw`: the model's logits, else its activation (0 to 1).

        Overloaded if no inference stream is free within `timeout` seconds.
        """
        ...


class CrossEncoderModel:
    """A sentence-transformers CrossEncoder with one output (a relevance score), on torch."""

    kind: Literal["cross-encoder"] = "cross-encoder"
    backend = "torch"
    parallel_safe = False

    def __init__(self, path: Path, name: str | None = None, batch_size: int = 8, device: str = "cpu", threads: int = 0) -> None:
        from sentence_transformers import CrossEncoder

        set_torch_threads(threads)
        self.path = path
        self.name = name or default_name(path)
        self.batch_size = batch_size
        self.device = device
        self.fingerprint = model_fingerprint(path)
        self._model = CrossEncoder(str(path), device=device, local_files_only=True)
        self._model.eval()
        labels = int(getattr(self._model.config, "num_labels", 1) or 1)
        if labels != 1:
            raise StartupError(f"the cross-encoder at {str(path)!r} has {labels} outputs; a reranker needs a model with one (a relevance score)")
        self.max_seq_length = int(self._model.max_seq_length or 512)
        self._tokenizer = self._model.tokenizer
        self._slots = Slots(1)
        self.sentences_encoded = 0  # pairs scored
        self.on_encoded: EncodedHook | None = None

    def info(self) -> dict[str, Any]:
        """Name, path, backend, max sequence length, device and fingerprint."""
        return {
            "name": self.name,
            "path": str(self.path),
            "backend": self.backend,
            "max_seq_length": self.max_seq_length,
            "device": self.device,
            "fingerprint": self.fingerprint,
        }

    def set_streams(self, n: int, budget: Budget | None = None) -> None:
        """One pass at a time (torch), holding a slot of the worker's budget when there is one."""
        self._slots = Slots(1, budget, self.name)

    def score(self, query: str, documents: Sequence[str], *, raw: bool = False, timeout: float | None = None) -> Scores:
        """How well each document answers the query; `raw`: the model's logits, else its activation (0 to 1)."""
        import torch

        docs = list(documents)
        lengths = np.array([len(ids) for ids in self._tokenizer([query] * len(docs), docs, truncation=False)["input_ids"]], dtype=np.int64)
        activation = torch.nn.Identity() if raw else None  # None: the model's own (sigmoid for one output)
        with self._slots.hold(timeout):
            scores = self._model.predict([(query, d) for d in docs], batch_size=self.batch_size, activation_fn=activation, show_progress_bar=False)
        self.sentences_encoded += len(docs)
        result = Scores(np.asarray(scores, dtype=np.float32).reshape(-1), lengths > self.max_seq_length, np.minimum(lengths, self.max_seq_length))
        if self.on_encoded is not None:
            self.on_encoded(len(docs), result.tokens, int(result.truncated_flags.sum()))
        return result
