"""A served model and what serving it takes: an embedding model's queue, document vectors, search and int8 ranges; a cross-encoder."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from smls import outputs
from smls.batching import MicroBatcher
from smls.doc_vectors import DocumentEmbedder
from smls.encoders import Encoded, Encoder, PairScorer
from smls.search import CrossSearch
from smls.tokens import Tokens
from smls.truncation import Cut, Direction, Truncation, frame


@dataclass(frozen=True)
class EmbeddingModel:
    """An embedding model as served: its encoder, its own batch queue, its document vectors, its search index and int8 ranges."""

    name: str
    encoder: Encoder
    batcher: MicroBatcher[Encoder]
    documents: DocumentEmbedder
    search: CrossSearch
    calibration: outputs.Calibration
    tokens: Tokens | None  # its tokenizer for /tokenize and /decode (None: the folder has no tokenizer.json)
    truncation: Direction = "right"  # which end of a long text it keeps unless a request says otherwise
    kind = "embedding"

    def info(self) -> dict[str, Any]:
        """What GET /models says of it."""
        return {**self.encoder.info(), "name": self.name, "kind": self.kind, "truncation": self.truncation}

    def encode(self, texts: Sequence[str], truncation: Truncation, field: str, timeout: float) -> tuple[Encoded, list[Cut]]:
        """Vectors for a request's texts (its `field`, for messages) cut or refused as `truncation` says, and which were cut."""
        framed = frame(texts, truncation, self.tokens, field, self.encoder.max_seq_length)
        result = self.batcher.encode(framed.texts, timeout=timeout)
        return result, framed.cuts(result.truncated_flags, result.token_counts)

    def truncation_of(self, values: dict[str, Any]) -> Truncation:
        """A request's truncation from its truncate and truncation_direction fields (fields.collect's values); this model's direction by default."""
        return Truncation.of(values, self.truncation)


@dataclass(frozen=True)
class ScoringModel:
    """A cross-encoder as served: it scores (query, document) pairs for /rerank."""

    name: str
    scorer: PairScorer
    tokens: Tokens | None
    kind = "cross-encoder"

    def info(self) -> dict[str, Any]:
        """What GET /models says of it (a cross-encoder makes no vectors: dimension 0)."""
        return {**self.scorer.info(), "name": self.name, "kind": self.kind, "dimension": 0}


Served = EmbeddingModel | ScoringModel
