"""POST /rerank: documents ordered by relevance to a query, by a cross-encoder or an embedding model's cosine."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, g

from smls import metrics, rerank, turns
from smls.serving.models import EmbeddingModel
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
        # The query goes through the batch queue with the documents: one shared pass, one budget.
        encoded = model.batcher.encode([req.query, *req.texts], timeout=timeout)
        scores, query_tokens, limit = rerank.cosine_scores(encoded), int(encoded.token_counts[0]), model.encoder.max_seq_length
        rerank.check_length(req, encoded.truncated_flags, limit, rerank.COSINE)
        scorer = rerank.COSINE
    else:
        judge = model.scorer
        # A pass of its own: on the event loop it waits for its turn instead of holding the loop.
        scores = turns.own_pass(
            lambda left: judge.score(req.query, req.texts, raw=req.raw_scores, timeout=left), timeout, metrics.SHED.labels("deadline").inc
        )
        query_tokens, limit = 0, judge.max_seq_length
        rerank.check_length(req, scores.truncated_flags, limit, rerank.CROSS)
        scorer = rerank.CROSS
    return rerank.response(req, scores, query_tokens, model=model.name, scorer=scorer, request_id=request_id)


# Cohere's clients call {base_url}/v1/rerank and /v2/rerank; Infinity's and TEI's call /rerank.
register(
    blueprint,
    {"rerank": rerank_view, "rerank_v1": rerank_view, "rerank_v2": rerank_view},
    fast={"rerank": answer_json, "rerank_v1": answer_json, "rerank_v2": answer_json},
)
