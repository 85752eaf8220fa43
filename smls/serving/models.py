"""A served model and what serving it takes: an embedding model's queue, document vectors, search and int8 ranges; a cross-encoder."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from smls import outputs
from smls.batching import MicroBatcher
from smls.doc_vectors import DocumentEmbedder
from smls.encoders import Encoder, PairScorer
from smls.search import CrossSearch
from smls.tokens import Tokens


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
    kind = "embedding"

    def info(self) -> dict[str, Any]:
        """What GET /models says of it."""
        return {**self.encoder.info(), "name": self.name, "kind": self.kind}


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
