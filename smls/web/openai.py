"""The OpenAI embeddings API: POST /v1/embeddings and GET /v1/models (shapes in smls.openai_api)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, g

from smls import openai_api
from smls.serving.models import EmbeddingModel
from smls.web.embed import json_body
from smls.web.endpoints import register
from smls.web.responses import json_response, state, time_left
from smls.web.state import State

blueprint = Blueprint("openai", __name__)


def openai_embeddings() -> Response:
    """Unit-length embeddings in OpenAI's response shape."""
    return json_response(answer_json(state(), json_body(), time_left(), g.request_id))


def answer_json(app: State, data: bytes, timeout: float, request_id: str) -> dict[str, Any]:
    """The answer of /v1/embeddings to a JSON body (also the event loop's lane's, smls.web.lane)."""
    req = openai_api.parse_request(data, dimension_of=lambda name: _model(app, name).encoder.dimension, max_messages=app.settings.max_messages)
    model = _model(app, req.model)
    result, cuts = model.encode(req.texts, model.text_options(req.text), "input", timeout)
    return openai_api.response(result, req.options, model.name, cuts, model.dimensions_note(req.options.dimensions))


def _model(app: State, name: str | None) -> EmbeddingModel:
    return app.embedding(name, listed_at="GET /v1/models")


def openai_models() -> Response:
    """Every served model, as OpenAI lists models."""
    return json_response(openai_api.models_list([m.info() for m in state().models.values()]))


register(blueprint, {"openai_embeddings": openai_embeddings, "openai_models": openai_models}, fast={"openai_embeddings": answer_json})
