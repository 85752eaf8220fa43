"""The OpenAI embeddings API (POST /v1/embeddings, GET /v1/models): request and response shapes.

The convention Infinity, text-embeddings-inference, LangChain and the openai package speak.
Vectors are unit length, as OpenAI's are; `dimensions` keeps the first n and renormalises.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from smls import outputs, parsing
from smls.encoders import Encoded
from smls.errors import InvalidInput, InvalidOption, MissingMessage, ModelNotFound

REQUEST_KEYS = frozenset({"input", "model", "encoding_format", "dimensions", "user"})
ENCODING_FORMATS = {"float": "json", "base64": "base64"}


@dataclass(frozen=True)
class EmbeddingsRequest:
    """A checked /v1/embeddings request."""

    texts: list[str]
    options: outputs.OutputOptions


def parse_request(body: bytes, *, model_names: set[str], dimension: int, max_messages: int) -> EmbeddingsRequest:
    """Check a /v1/embeddings JSON body: input, model, encoding_format, dimensions (user is ignored)."""
    doc = parsing.parse_json_body(body)
    if not isinstance(doc, dict):
        raise InvalidInput(f"the JSON body is a {parsing.type_name(doc)}; send an object like {{\"input\": \"text\"}}", code="invalid_json")
    unknown = sorted(set(doc) - REQUEST_KEYS)
    if unknown:
        raise InvalidInput(f"unknown field(s) {', '.join(map(repr, unknown))}; known: {', '.join(sorted(REQUEST_KEYS))}", code="unknown_field")
    if "input" not in doc:
        raise MissingMessage("'input' is required: a string or a list of strings")
    model = doc.get("model")
    if model is not None and not isinstance(model, str):
        raise InvalidOption(f"'model' must be a string, got {parsing.type_name(model)}")
    if model is not None and model not in model_names:
        raise ModelNotFound(f"model {model!r} is not served here; GET /v1/models lists: {', '.join(sorted(model_names))}")
    raw = doc["input"]
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list):
        raise InvalidInput(f"'input' is a {parsing.type_name(raw)}; it must be a string or a list of strings")
    if items and all(isinstance(i, int) and not isinstance(i, bool) for i in items) or any(isinstance(i, list) for i in items):
        raise InvalidInput("token arrays are not supported as 'input'; send the text itself")
    texts = parsing.check_messages(items, max_messages)
    fmt = doc.get("encoding_format", "float")
    if not isinstance(fmt, str) or fmt not in ENCODING_FORMATS:
        raise InvalidOption(f"'encoding_format' must be float or base64, got {fmt!r}")
    dims = outputs.parse_dimensions(doc.get("dimensions"), dimension)
    if "user" in doc and not isinstance(doc["user"], str):
        raise InvalidOption("'user' must be a string")
    return EmbeddingsRequest(texts, outputs.OutputOptions(normalize=True, dimensions=dims, encoding=ENCODING_FORMATS[fmt]))


def response(result: Encoded, options: outputs.OutputOptions, model: str) -> dict[str, Any]:
    """The OpenAI response object for one request's vectors."""
    encoded = outputs.render(result.vectors, options)
    tokens = result.tokens
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": vector} for i, vector in enumerate(encoded)],
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def error_body(status: int, code: str, message: str, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape: {"error": {"message", "type", "param", "code"}}."""
    kind = "invalid_request_error"
    if status == 401:
        kind = "authentication_error"
    elif status == 429:
        kind = "rate_limit_error"
    elif status >= 500:
        kind = "server_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def models_list(model: str) -> dict[str, Any]:
    """GET /v1/models: the one model served, as OpenAI lists models."""
    return {"object": "list", "data": [{"id": model, "object": "model", "created": 0, "owned_by": "smls"}]}
