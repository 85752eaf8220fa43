"""A served model and what serving it takes: an embedding model's queue, document vectors, search and int8 ranges; a cross-encoder."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from smls import outputs, prompts, truncation
from smls.batching import MicroBatcher
from smls.doc_vectors import DocumentEmbedder
from smls.encoders import Encoded, Encoder, PairScorer
from smls.prompts import Prompts
from smls.search import CrossSearch
from smls.tokens import Tokens
from smls.truncation import Cut, Direction, Truncation, frame

# The request fields that say what is done to texts before the model reads them.
TEXT_FIELDS = (*truncation.FIELDS, *prompts.FIELDS)


def text_parsers() -> dict[str, Callable[[Any], Any]]:
    """How each of TEXT_FIELDS is read and checked (for fields.collect)."""
    return {**Truncation.parsers(), **prompts.parsers()}


@dataclass(frozen=True)
class TextOptions:
    """What a request asks done to its texts before the model reads them: a prompt in front, and where a long one is cut."""

    truncation: Truncation = Truncation()
    prompt: str = ""


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
    prompts: Prompts = field(default_factory=Prompts)
    matryoshka: bool = False  # trained for shortened dimensions (SMLS_MODELS matryoshka=true)
    kind = "embedding"

    def info(self) -> dict[str, Any]:
        """What GET /models says of it."""
        about = {"truncation": self.truncation, **self.prompts.info(), "dimensions_trained": self.matryoshka}
        return {**self.encoder.info(), "name": self.name, "kind": self.kind, **about}

    def encode(self, texts: Sequence[str], options: TextOptions, field: str, timeout: float) -> tuple[Encoded, list[Cut]]:
        """Vectors for a request's texts (its `field`, for messages), prompted and cut (or refused) as `options` say, and which were cut."""
        framed = frame(texts, options.truncation, self.tokens, field, self.encoder.max_seq_length, prompt=options.prompt)
        result = self.batcher.encode(framed.texts, timeout=timeout)
        return result, framed.cuts(result.truncated_flags, result.token_counts)

    def text_options(self, values: Mapping[str, Any]) -> TextOptions:
        """A request's TextOptions from its TEXT_FIELDS (fields.collect's values); this model's direction and default prompt where it gives none."""
        return TextOptions(Truncation.of(dict(values), self.truncation), self.prompts.choose(values))

    def dimensions_note(self, dimensions: int | None) -> dict[str, Any]:
        """{"dimensions_trained": false} for a response whose vectors were shortened on a model not trained for it; else nothing."""
        return {"dimensions_trained": False} if dimensions is not None and not self.matryoshka else {}


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
