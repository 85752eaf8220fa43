"""POST /rerank: documents ordered by relevance to a query, by a cross-encoder or an embedding model's cosine."""

from __future__ import annotations

from typing import Any

import numpy as np
from flask import Blueprint, Response, g

from smls import metrics, rerank, turns
from smls.errors import InvalidOption
from smls.serving.models import EmbeddingModel
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
    if isinstance(model, EmbeddingModel):
        truncation, limit = Truncation(req.truncate, req.direction or model.truncation), model.encoder.max_seq_length
        query, documents = (
            # The model's query and document prompts, as sentence-transformers' encode_query and encode_document give them.
            frame([req.query], truncation, model.tokens, "query", limit, prompt=model.prompts.query),
            frame(req.texts, truncation, model.tokens, req.field, limit, prompt=model.prompts.document),
        )
        # The query goes through the batch queue with the documents: one shared pass, one budget.
        encoded = model.batcher.encode([*query.texts, *documents.texts], timeout=timeout)
        flags, fed = encoded.truncated_flags, encoded.token_counts
        scores, query_tokens, cuts = rerank.cosine_scores(encoded), int(fed[0]), query.cuts(flags, fed) + documents.cuts(flags, fed, 1)
        scorer = rerank.COSINE
    else:
        if req.direction == "left":
            raise InvalidOption(
                "a cross-encoder cuts a long (query, document) pair on the right; leave truncation_direction out, or rerank with an embedding model"
            )
        judge = model.scorer
        # A pass of its own: on the event loop it waits for its turn instead of holding the loop.
        scores = turns.own_pass(lambda left: judge.score(req.query, req.texts, raw=req.raw_scores, timeout=left), timeout, metrics.SHED.labels("deadline").inc)
        query_tokens, limit = 0, judge.max_seq_length
        rerank.check_length(req, scores.truncated_flags, limit)
        cuts = _pair_cuts(model.tokens, req, scores.truncated_flags, scores.token_counts)
        scorer = rerank.CROSS
    return rerank.response(req, scores, query_tokens, cuts, model=model.name, scorer=scorer, request_id=request_id)


def _pair_cuts(tokens: Tokens | None, req: rerank.RerankRequest, flags: np.ndarray, fed: np.ndarray) -> list[Cut]:
    """The (query, document) pairs a cross-encoder cut, each named by its document, with the pair's tokens."""
    cut = [int(i) for i in np.flatnonzero(flags)]
    if tokens is None:
        return [Cut(req.field, i, None, None) for i in cut]
    counts = tokens.pair_counts(req.query, [req.texts[i] for i in cut])
    return [Cut(req.field, i, n, n - int(fed[i])) for i, n in zip(cut, counts, strict=True)]


# Cohere's clients call {base_url}/v1/rerank and /v2/rerank; Infinity's and TEI's call /rerank.
register(
    blueprint,
    {"rerank": rerank_view, "rerank_v1": rerank_view, "rerank_v2": rerank_view},
    fast={"rerank": answer_json, "rerank_v1": answer_json, "rerank_v2": answer_json},
)
