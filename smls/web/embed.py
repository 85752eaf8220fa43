"""POST /embed: texts from a form or a JSON body, output options from the body or the query string."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request

from smls import fields, forms, outputs, parsing
from smls.errors import MissingMessage, UnsupportedMediaType
from smls.web.endpoints import MODEL_OPTIONS, register
from smls.web.responses import json_response, state, time_left
from smls.web.state import EmbeddingModel

blueprint = Blueprint("embed", __name__)
# The fields of an /embed JSON body or form.
BODY_FIELDS = frozenset({"message", *MODEL_OPTIONS})


def embed() -> Response:
    """The embeddings of the request's texts by the model it names, shaped as its options ask."""
    model, texts, options = read_embed_request()
    result = model.batcher.encode(texts, timeout=time_left())
    return json_response(
        {
            "model": model.name,
            **outputs.describe(options, model.encoder.dimension),
            "truncated": result.truncated,
            "embeddings": outputs.render(result.vectors, options, model.calibration),
        }
    )


def read_embed_request() -> tuple[EmbeddingModel, list[str], outputs.OutputOptions]:
    """The model, the texts and the output options from a form or JSON body (model and options may also be in the query)."""
    app = state()
    settings = app.settings
    # Bodies over SMLS_MAX_BODY_BYTES never get here: werkzeug refuses them (MAX_CONTENT_LENGTH,
    # chunked ones via smls.body) and the error handler answers body_too_large.
    check_charset()
    mimetype = request.mimetype
    body_fields: list[tuple[str, Any]]
    if mimetype == "application/json" or mimetype.endswith("+json"):
        doc = parsing.json_object(parsing.parse_json_body(request.get_data(cache=False)), '{"message": ["text"]}')
        where, body_fields = "JSON body", list(doc.items())
        fields.check_names(where, body_fields, BODY_FIELDS)
        texts = parsing.messages_from_json(doc, settings.max_messages)
    elif mimetype == "application/x-www-form-urlencoded":
        where, body_fields = "form", forms.parse_urlencoded(request.get_data(cache=False), settings.max_messages + 16)
        fields.check_names(where, body_fields, BODY_FIELDS)
        texts = parsing.messages_from_form([v for k, v in body_fields if k == "message"], settings.max_messages)
    elif mimetype == "multipart/form-data":
        parts = forms.parse_multipart(request.get_data(cache=False), request.mimetype_params.get("boundary", ""), settings.max_messages + 16)
        where, body_fields = "form", [(part.name, part.text()) for part in parts if part.name != "message"]
        fields.check_names(where, body_fields, BODY_FIELDS)
        texts = parsing.messages_from_parts(parts, settings.max_messages)
    elif not mimetype and not request.content_length:
        raise MissingMessage("empty request; send message=... as a form or {\"message\": ...} as JSON")
    else:
        raise UnsupportedMediaType(
            f"content type {mimetype or 'none'!r} is not supported; send application/json, "
            "application/x-www-form-urlencoded or multipart/form-data"
        )
    sources: list[fields.Source] = [(where, body_fields, BODY_FIELDS), ("query string", list(request.args.items(multi=True)), MODEL_OPTIONS)]
    model = app.embedding(fields.collect(sources, {"model": fields.model_name}).get("model"))
    chosen = fields.collect(sources, outputs.OutputOptions.parsers(model.encoder.dimension))
    return model, texts, outputs.OutputOptions(**chosen)


def json_body() -> bytes:
    """The body of a route that takes JSON only (its content type and charset checked)."""
    check_charset()
    if request.mimetype != "application/json":
        raise UnsupportedMediaType(f"content type {request.mimetype or 'none'!r} is not supported here; send application/json")
    return request.get_data(cache=False)


def check_charset() -> None:
    """UnsupportedMediaType unless the body is declared UTF-8 (or not declared at all)."""
    charset = request.mimetype_params.get("charset", "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise UnsupportedMediaType(f"charset {charset!r} is not supported; send UTF-8")


register(blueprint, {"embed": embed})
