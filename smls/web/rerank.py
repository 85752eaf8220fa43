"""POST /rerank: documents ordered by relevance to a query, by a cross-encoder or an embedding model's cosine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from flask import Blueprint, Response, g

from smls import metrics, rerank, turns
from smls.encoders.cross import Scores
from smls.errors import InvalidOption
from smls.serving.models import EmbeddingModel, Served
from smls.tokens import Tokens
from smls.truncation import Cut, Truncation, frame
from smls.web.embed import json_body
from smls.web.endpoints import register
from smls.web.responses import json_response, state, time_left
from smls.web.state import State

blueprint = Blueprint("rerank", __name__)


def rerank_view() -> Response:
    """The documents' relevance scores, best first; the model named, else the first cross-encoder, else the default model."""
    return json_response(answer_json(state(), json_body(), time_left(), g.request_id))


def answer_json(app: State, data: bytes, timeout: float, request_id: str) -> dict[str, Any]:
    """The answer of /rerank to a JSON body (also the event loop's lane's, smls.web.lane)."""
    req = rerank.parse_request(data, app.settings.max_messages)
    model = app.model(req.model if req.model is not None else app.engine.default_reranker())
    direction = req.direction or (model.truncation if isinstance(model, EmbeddingModel) else "right")
    found = relevance(model, req.query, req.texts, req.field, timeout, truncation=Truncation(req.truncate, direction), raw=req.raw_scores)
    return rerank.response(req, found.scores, found.query_tokens, found.cuts, model=model.name, scorer=found.scorer, request_id=request_id)


@dataclass(frozen=True)
class Relevance:
    """Documents scored against a query: the scores, the query's tokens (run once), the texts cut, and which scorer ran."""

    scores: Scores
    query_tokens: int
    cuts: list[Cut]
    scorer: str


def relevance(model: Served, query: str, texts: list[str], field: str, timeout: float, *, truncation: Truncation | None = None, raw: bool = False) -> Relevance:
    """Each text's relevance to the query: by an embedding model's cosine (its query and document prompts given), or by a cross-encoder.

    `field` is the client's word for the texts, for messages and the report of cuts. Also
    what /search?rerank= re-scores its candidates with.
    """
    truncation = truncation or Truncation()
    if isinstance(model, EmbeddingModel):
        limit = model.encoder.max_seq_length
        # The model's query and document prompts, as sentence-transformers' encode_query and encode_document give them.
        asked = frame([query], truncation, model.tokens, "query", limit, prompt=model.prompts.query)
        documents = frame(texts, truncation, model.tokens, field, limit, prompt=model.prompts.document)
        # The query goes through the batch queue with the documents: one shared pass, one budget.
        encoded = model.batcher.encode([*asked.texts, *documents.texts], timeout=timeout)
        flags, fed = encoded.truncated_flags, encoded.token_counts
        return Relevance(rerank.cosine_scores(encoded), int(fed[0]), asked.cuts(flags, fed) + documents.cuts(flags, fed, 1), rerank.COSINE)
    if truncation.direction == "left":
        raise InvalidOption("a cross-encoder cuts a long (query, document) pair on the right; leave truncation_direction out, or rerank with an embedding model")
    judge = model.scorer
    # A pass of its own: on the event loop it waits for its turn instead of holding the loop.
    scores = turns.own_pass(lambda left: judge.score(query, texts, raw=raw, timeout=left), timeout, metrics.SHED.labels("deadline").inc)
    rerank.check_length(truncation.truncate, scores.truncated_flags, judge.max_seq_length, field)
    return Relevance(scores, 0, _pair_cuts(model.tokens, query, texts, field, scores.truncated_flags, scores.token_counts), rerank.CROSS)


def _pair_cuts(tokens: Tokens | None, query: str, texts: list[str], field: str, flags: np.ndarray, fed: np.ndarray) -> list[Cut]:
    """The (query, document) pairs a cross-encoder cut, each named by its document, with the pair's tokens."""
    cut = [int(i) for i in np.flatnonzero(flags)]
    if tokens is None:
        return [Cut(field, i, None, None) for i in cut]
    counts = tokens.pair_counts(query, [texts[i] for i in cut])
    return [Cut(field, i, n, n - int(fed[i])) for i, n in zip(cut, counts, strict=True)]


# Cohere's clients call {base_url}/v1/rerank and /v2/rerank; Infinity's and TEI's call /rerank.
register(
    blueprint,
    {"rerank": rerank_view, "rerank_v1": rerank_view, "rerank_v2": rerank_view},
    fast={"rerank": answer_json, "rerank_v1": answer_json, "rerank_v2": answer_json},
)
