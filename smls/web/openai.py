"""The OpenAI embeddings API: POST /v1/embeddings and GET /v1/models (shapes in smls.openai_api)."""

from __future__ import annotations

from flask import Blueprint, Response

from smls import openai_api
from smls.web.embed import json_body
from smls.web.endpoints import register
from smls.web.responses import json_response, state, time_left
from smls.web.state import EmbeddingModel

blueprint = Blueprint("openai", __name__)


def openai_embeddings() -> Response:
    """Unit-length embeddings in OpenAI's response shape."""
    app = state()
    req = openai_api.parse_request(json_body(), dimension_of=lambda name: _model(name).encoder.dimension, max_messages=app.settings.max_messages)
    model = _model(req.model)
    result = model.batcher.encode(req.texts, timeout=time_left())
    return json_response(openai_api.response(result, req.options, model.name))


def _model(name: str | None) -> EmbeddingModel:
    return state().embedding(name, listed_at="GET /v1/models")


def openai_models() -> Response:
    """Every served model, as OpenAI lists models."""
    return json_response(openai_api.models_list([m.info() for m in state().models.values()]))


register(blueprint, {"openai_embeddings": openai_embeddings, "openai_models": openai_models})
