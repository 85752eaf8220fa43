"""POST /rerank's request and response shapes, and the cosine scorer; pure functions, no web imports.

The request speaks the dialects clients already send: Cohere v1 and Infinity
(`query`, `documents`, `top_n`, `return_documents`; documents as strings or
{"text": ...} objects) and text-embeddings-inference (`texts`, `raw_scores`,
`truncate`, `return_text`; smls adds `truncation_direction`). The response is Cohere's and Infinity's object
(`results` best first, each with `index` and `relevance_score`), not TEI's bare array.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from smls import fields, parsing
from smls.encoders import Encoded, Encoder
from smls.encoders.cross import PairScorer, Scores
from smls.errors import ConflictingOption, InvalidInput, InvalidOption
from smls.truncation import Cut, Direction, parse_direction
from smls.vectors import unit_rows

REQUEST_KEYS = frozenset({"query", "documents", "texts", "top_n", "model", "return_documents", "return_text", "raw_scores", "truncate", "truncation_direction"})
EXAMPLE = '{"query": "text", "documents": ["text", ...]}'
COSINE, CROSS = "cosine", "cross-encoder"


@dataclass(frozen=True)
class RerankRequest:
    """A checked /rerank request."""

    query: str
    texts: list[str]
    originals: list[Any]  # each document as sent: a string, or an object with "text"
    field: str  # "documents" or "texts": the client's word, for messages
    top_n: int | None
    model: str | None
    return_documents: bool
    raw_scores: bool
    truncate: bool
    direction: Direction | None  # None: the model's


def parse_request(body: bytes, max_documents: int) -> RerankRequest:
    """Check a /rerank JSON body; null means "not given", unknown fields are refused."""
    doc = parsing.json_object(parsing.parse_json_body(body), EXAMPLE)
    fields.check_names("JSON body", doc.items(), REQUEST_KEYS)
    query = doc.get("query")
    if query is None:
        raise InvalidInput(f"'query' is {'null' if 'query' in doc else 'missing'}; send {EXAMPLE}", code="missing_query")
    if not isinstance(query, str):
        raise InvalidInput(f"'query' is {parsing.type_name(query)}; it must be a string", code="missing_query")
    parsing.check_messages([query], 1, "query")
    if doc.get("documents") is not None and doc.get("texts") is not None:
        raise ConflictingOption("both 'documents' and 'texts' are given; they are two names for the same list, send one")
    field = "texts" if doc.get("texts") is not None else "documents"
    raw = doc.get(field)
    if raw is None:
        raise InvalidInput(f"'documents' is {'null' if field in doc else 'missing'}; send {EXAMPLE}", code="missing_documents")
    if not isinstance(raw, list):
        raise InvalidInput(f"'{field}' is {parsing.type_name(raw)}; it must be a list of texts", code="missing_documents")
    texts = parsing.check_messages([_text_of(item, field, i) for i, item in enumerate(raw)], max_documents, field)
    top_n = doc.get("top_n")
    if isinstance(top_n, float) and top_n.is_integer():
        top_n = int(top_n)  # 3.0 is JSON's 3 (JSON Schema agrees); 3.5 is refused below
    if top_n is not None and (not isinstance(top_n, int) or isinstance(top_n, bool) or top_n < 1):
        raise InvalidOption(f"'top_n' must be a whole number of at least 1, got {fields.show(top_n)}")
    model = None if doc.get("model") is None else fields.model_name(doc["model"])  # the rule /embed's model follows
    return_documents, return_text = _flag(doc, "return_documents", None), _flag(doc, "return_text", None)
    if return_documents is not None and return_text is not None and return_documents != return_text:
        raise ConflictingOption("'return_documents' and 'return_text' disagree; they are two names for the same option, send one")
    return RerankRequest(
        query=query,
        texts=texts,
        originals=list(raw),
        field=field,
        top_n=top_n,
        model=model,
        return_documents=bool(return_documents or return_text),
        raw_scores=bool(_flag(doc, "raw_scores", False)),
        truncate=bool(_flag(doc, "truncate", True)),
        direction=None if doc.get("truncation_direction") is None else parse_direction(doc["truncation_direction"]),
    )


def _text_of(item: Any, field: str, index: int) -> Any:
    """A document's text: the string itself, or the "text" of a {"text": ...} object (Cohere v1)."""
    if isinstance(item, dict):
        if "text" not in item:
            raise InvalidInput(f'{field} item {index} is an object without "text"; send a string or {{"text": "..."}}')
        return item["text"]
    return item


def _flag(doc: dict[str, Any], name: str, default: bool | None) -> bool | None:
    value = doc.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidOption(f"'{name}' must be true or false, got {fields.show(value)}")
    return value


def check_length(truncate: bool, truncated: np.ndarray, max_seq_length: int, field: str) -> None:
    """With "truncate": false, refuse a request whose (query, document) pairs do not fit the cross-encoder instead of cutting them.

    (An embedding model's texts are counted before it runs: smls.truncation.frame.)
    """
    if truncate or not truncated.any():
        return
    first = int(np.flatnonzero(truncated)[0])
    what = f"the query with {field} item {first}"
    raise InvalidInput(
        f'{what} is longer than the model\'s {max_seq_length} tokens and "truncate" is false; shorten it or leave truncate out',
        code="input_too_long",
    )


def cosine_scores(result: Encoded) -> Scores:
    """Scores from the embeddings of [query, *documents]: each document's cosine similarity to the query."""
    vectors = unit_rows(result.vectors)
    scores = (vectors[1:] @ vectors[0]).astype(np.float32)
    # The query's tokens count once for the request, as they were run once.
    return Scores(scores, result.truncated_flags[1:], result.token_counts[1:])


def response(req: RerankRequest, scores: Scores, query_tokens: int, cuts: list[Cut], *, model: str, scorer: str, request_id: str) -> dict[str, Any]:
    """The response object: results best first (ties: earlier document first), top_n of them."""
    results = []
    for i, score in ranked(scores.scores, req.top_n):
        item: dict[str, Any] = {"index": i, "relevance_score": score}
        if req.return_documents:
            item["document"] = req.originals[i]  # as sent: a string, or the client's object
        results.append(item)
    tokens = scores.tokens + query_tokens
    return {
        "object": "rerank",
        "id": request_id,
        "model": model,
        "scorer": scorer,
        "results": results,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        "truncations": [cut.json() for cut in cuts],
    }


class _Ranking:
    """What both rerankers share: `rank` orders what their own `score` gives."""

    def score(self, query: str, documents: Sequence[str], *, raw: bool = False) -> Scores:
        """Each document's relevance to the query, in input order."""
        raise NotImplementedError

    def rank(self, query: str, documents: Sequence[str], top_n: int | None = None) -> list[tuple[int, float]]:
        """(index, score) pairs, best first."""
        return ranked(self.score(query, documents).scores, top_n)


class CosineReranker(_Ranking):
    """Reranking by an embedding model: each document's cosine similarity to the query."""

    scorer = COSINE

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder
        self.name = encoder.name
        self.path: Path = encoder.path
        self.max_seq_length = encoder.max_seq_length

    def score(self, query: str, documents: Sequence[str], *, raw: bool = False) -> Scores:
        """Each document's cosine similarity to the query, in input order (`raw` changes nothing: cosines are raw)."""
        return cosine_scores(self.encoder.encode([query, *documents]))


class CrossReranker(_Ranking):
    """Reranking by a cross-encoder, for in-process use (smls.ml_services.get("Reranker", ...))."""

    scorer = CROSS

    def __init__(self, model: PairScorer) -> None:
        self.model = model
        self.name: str = model.name
        self.path: Path = model.path
        self.max_seq_length: int = model.max_seq_length

    def score(self, query: str, documents: Sequence[str], *, raw: bool = False) -> Scores:
        """Each document's relevance to the query, in input order."""
        return self.model.score(query, documents, raw=raw)


def ranked(scores: np.ndarray, top_n: int | None) -> list[tuple[int, float]]:
    """(index, score) pairs best first, ties in input order, the first top_n (None: all)."""
    order = np.lexsort((np.arange(len(scores)), -scores))[: top_n or len(scores)]
    return [(int(i), float(scores[i])) for i in order]
