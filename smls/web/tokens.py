"""POST /tokenize and /decode: a model's tokens for texts (counted, with their offsets), and ids back to text."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, g

from smls import fields, parsing
from smls.errors import InvalidInput
from smls.serving.models import Served
from smls.tokens import DECODE_FIELDS, FIELDS, Tokens
from smls.web.embed import json_body
from smls.web.endpoints import register
from smls.web.responses import json_response, state, time_left
from smls.web.state import State

blueprint = Blueprint("tokens", __name__)


def tokenize() -> Response:
    """Each text's token ids, count and whether the model would cut it; each token's text and offsets unless asked not to."""
    return json_response(answer_tokenize(state(), json_body(), time_left(), g.request_id))


def decode() -> Response:
    """The text a list of token ids spells."""
    return json_response(answer_decode(state(), json_body(), time_left(), g.request_id))


def answer_tokenize(app: State, data: bytes, timeout: float, request_id: str) -> dict[str, Any]:
    """The answer of /tokenize to a JSON body (also the event loop's lane's, smls.web.lane)."""
    doc = _body(data, FIELDS, '{"text": ["Hello world!"]}')
    model, tokens = _tokens(app, doc)
    texts = parsing.messages_from_json(doc, app.settings.max_messages, "text")
    options = fields.collect([("JSON body", list(doc.items()), FIELDS)], {"add_special_tokens": _flag("add_special_tokens"), "return_tokens": _flag("return_tokens")})
    found = tokens.tokenize(texts, add_special_tokens=options.get("add_special_tokens", True), return_tokens=options.get("return_tokens", True))
    return {"model": model.name, "max_seq_length": tokens.max_seq_length, "texts": found}


def answer_decode(app: State, data: bytes, timeout: float, request_id: str) -> dict[str, Any]:
    """The answer of /decode to a JSON body (also the lane's)."""
    doc = _body(data, DECODE_FIELDS, '{"ids": [101, 7592, 102]}')
    model, tokens = _tokens(app, doc)
    if doc.get("ids") is None:
        raise InvalidInput("'ids' is missing from the JSON body; send {\"ids\": [101, 7592, 102]}", code="invalid_token_ids")
    ids = tokens.check_ids(doc["ids"])
    skip = fields.collect([("JSON body", list(doc.items()), DECODE_FIELDS)], {"skip_special_tokens": _flag("skip_special_tokens")})
    return {"model": model.name, "text": tokens.decode(ids, skip_special_tokens=skip.get("skip_special_tokens", True))}


def _body(data: bytes, known: frozenset[str], example: str) -> dict[str, Any]:
    """The JSON body as an object whose field names this route knows."""
    doc = parsing.json_object(parsing.parse_json_body(data), example)
    fields.check_names("JSON body", list(doc.items()), known)
    return doc


def _tokens(app: State, doc: dict[str, Any]) -> tuple[Served, Tokens]:
    """The model the body names (any kind: a cross-encoder has a tokenizer too) and its tokenizer."""
    name = fields.collect([("JSON body", list(doc.items()), frozenset(doc))], {"model": fields.model_name}).get("model")
    model = app.model(name)
    if model.tokens is None:
        raise InvalidInput(f"model {model.name!r} has no fast tokenizer (tokenizer.json in its folder): it cannot show its tokens", code="invalid_option")
    return model, model.tokens


def _flag(name: str) -> Any:
    """A parser of one boolean field."""
    return lambda value: parsing.parse_bool(name, value)


register(blueprint, {"tokenize": tokenize, "decode": decode}, fast={"tokenize": answer_tokenize, "decode": answer_decode})
