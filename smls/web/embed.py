"""POST /embed: texts from a form or a JSON body, output options from the body or the query string."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request

from smls import fields, forms, outputs, parsing
from smls.errors import MissingMessage, UnsupportedMediaType
from smls.serving.models import EmbeddingModel, TextOptions, text_parsers
from smls.web.endpoints import MODEL_OPTIONS, PROMPTS, TRUNCATION, register
from smls.web.responses import json_response, state, time_left
from smls.web.state import State

blueprint = Blueprint("embed", __name__)
# The fields of an /embed JSON body or form.
BODY_FIELDS = frozenset({"message", *MODEL_OPTIONS, *TRUNCATION, *PROMPTS})
# What the query string of /embed may hold.
QUERY_FIELDS = MODEL_OPTIONS | TRUNCATION | PROMPTS


def embed() -> Response:
    """The embeddings of the request's texts by the model it names, shaped as its options ask."""
    model, texts, options, text = read_embed_request()
    return json_response(embeddings(model, texts, options, text, time_left()))


def embeddings(model: EmbeddingModel, texts: list[str], options: outputs.OutputOptions, text: TextOptions, timeout: float) -> dict[str, Any]:
    """The answer of /embed: the model's vectors for `texts` (prompted and cut as `text` says), shaped as `options` ask (Overloaded after `timeout` seconds)."""
    result, cuts = model.encode(texts, text, "message", timeout)
    return {
        "model": model.name,
        **outputs.describe(options, model.encoder.dimension),
        **model.dimensions_note(options.dimensions),
        "truncated": len(cuts),
        "truncations": [cut.json() for cut in cuts],
        "embeddings": outputs.render(result.vectors, options, model.calibration),
    }


def read_embed_request() -> tuple[EmbeddingModel, list[str], outputs.OutputOptions, TextOptions]:
    """The model, the texts and the output options from a form or JSON body (model and options may also be in the query)."""
    app = state()
    settings = app.settings
    # Bodies over SMLS_MAX_BODY_BYTES never get here: werkzeug refuses them (MAX_CONTENT_LENGTH,
    # chunked ones via smls.body) and the error handler answers body_too_large.
    check_charset()
    mimetype = request.mimetype
    query = list(request.args.items(multi=True))
    body: fields.Source
    if mimetype == "application/json" or mimetype.endswith("+json"):
        texts, body = json_texts(request.get_data(cache=False), settings.max_messages)
    elif mimetype == "application/x-www-form-urlencoded":
        body_fields = forms.parse_urlencoded(request.get_data(cache=False), settings.max_messages + 16)
        body = ("form", body_fields, BODY_FIELDS)
        fields.check_names(*body)
        texts = parsing.messages_from_form([v for k, v in body_fields if k == "message"], settings.max_messages)
    elif mimetype == "multipart/form-data":
        parts = forms.parse_multipart(request.get_data(cache=False), request.mimetype_params.get("boundary", ""), settings.max_messages + 16)
        body = ("form", [(part.name, part.text()) for part in parts if part.name != "message"], BODY_FIELDS)
        fields.check_names(*body)
        texts = parsing.messages_from_parts(parts, settings.max_messages)
    elif not mimetype and not request.content_length:
        raise MissingMessage('empty request; send message=... as a form or {"message": ...} as JSON')
    else:
        raise UnsupportedMediaType(
            f"content type {mimetype or 'none'!r} is not supported; send application/json, application/x-www-form-urlencoded or multipart/form-data"
        )
    model, options, text = chosen(app, body, query)
    return model, texts, options, text


def answer_json(app: State, data: bytes, timeout: float, request_id: str) -> dict[str, Any]:
    """The answer of /embed to a JSON body with no query string (the event loop's lane, smls.web.lane)."""
    texts, body = json_texts(data, app.settings.max_messages)
    model, options, text = chosen(app, body, [])
    return embeddings(model, texts, options, text, timeout)


def json_texts(data: bytes, max_messages: int) -> tuple[list[str], fields.Source]:
    """The texts of a JSON /embed body, and its fields as a source of options (names checked)."""
    doc = parsing.json_object(parsing.parse_json_body(data), '{"message": ["text"]}')
    body: fields.Source = ("JSON body", list(doc.items()), BODY_FIELDS)
    fields.check_names(*body)
    return parsing.messages_from_json(doc, max_messages), body


def chosen(app: State, body: fields.Source, query: list[tuple[str, str]]) -> tuple[EmbeddingModel, outputs.OutputOptions, TextOptions]:
    """The model, the output options and the prompt and truncation a request asks for, in its body or its query string."""
    sources: list[fields.Source] = [body, ("query string", query, QUERY_FIELDS)]
    model = app.embedding(fields.collect(sources, {"model": fields.model_name}).get("model"))
    options = outputs.OutputOptions(**fields.collect(sources, outputs.OutputOptions.parsers(model.encoder.dimension)))
    return model, options, model.text_options(fields.collect(sources, text_parsers()))


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


register(blueprint, {"embed": embed}, fast={"embed": answer_json})
