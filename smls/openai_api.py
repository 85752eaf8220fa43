"""The OpenAI embeddings API (POST /v1/embeddings, GET /v1/models): request and response shapes.

The convention Infinity, text-embeddings-inference, LangChain and the openai package speak.
Vectors are unit length, as OpenAI's are; `dimensions` keeps the first n and renormalises.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from smls import fields, outputs, parsing, prompts, truncation
from smls.encoders import Encoded
from smls.errors import InvalidInput, InvalidOption
from smls.truncation import Cut

# OpenAI's fields, and smls's truncation and prompt fields (text-embeddings-inference's names).
REQUEST_KEYS = frozenset({"input", "model", "encoding_format", "dimensions", "user", *truncation.FIELDS, *prompts.FIELDS})
ENCODING_FORMATS = {"float": "json", "base64": "base64"}


@dataclass(frozen=True)
class EmbeddingsRequest:
    """A checked /v1/embeddings request."""

    texts: list[str]
    options: outputs.OutputOptions
    model: str | None  # None: the default model
    text: dict[str, Any]  # truncate, truncation_direction, prompt_name and prompt as given (the model's text_options reads them)


def parse_request(body: bytes, *, dimension_of: Callable[[str | None], int], max_messages: int) -> EmbeddingsRequest:
    """Check a /v1/embeddings JSON body: input, model, encoding_format, dimensions, truncation and prompt fields (user is ignored).

    `dimension_of(model)` is the named (None: default) model's dimension; it raises for a
    model not served. As on every route, null means "not given" and an unknown field is refused.
    """
    doc = parsing.json_object(parsing.parse_json_body(body), '{"input": "text"}')
    fields.check_names("JSON body", doc.items(), REQUEST_KEYS)
    model = doc.get("model")
    if model is not None and not isinstance(model, str):
        raise InvalidOption(f"'model' must be a string, got {parsing.type_name(model)}")
    dimension = dimension_of(model)
    raw = doc.get("input")
    if isinstance(raw, list) and raw and (all(isinstance(i, int) and not isinstance(i, bool) for i in raw) or any(isinstance(i, list) for i in raw)):
        raise InvalidInput("token arrays are not supported as 'input'; send the text itself")
    texts = parsing.messages_from_json(doc, max_messages, field="input")
    fmt = doc.get("encoding_format")
    if fmt is not None and (not isinstance(fmt, str) or fmt not in ENCODING_FORMATS):
        raise InvalidOption(f"'encoding_format' must be float or base64, got {fields.show(fmt)}")
    dims = outputs.parse_dimensions(doc.get("dimensions"), dimension)
    user = doc.get("user")
    if user is not None and not isinstance(user, str):
        raise InvalidOption(f"'user' must be a string, got {parsing.type_name(user)}")
    text = fields.collect([("JSON body", list(doc.items()), REQUEST_KEYS)], {**truncation.Truncation.parsers(), **prompts.parsers()})
    return EmbeddingsRequest(texts, outputs.OutputOptions(normalize=True, dimensions=dims, encoding=ENCODING_FORMATS[fmt or "float"]), model, text)


def response(result: Encoded, options: outputs.OutputOptions, model: str, cuts: list[Cut], note: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI response object for one request's vectors (and smls's report of the inputs cut, which OpenAI's clients ignore)."""
    encoded = outputs.render(result.vectors, options)
    tokens = result.tokens
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": vector} for i, vector in enumerate(encoded)],
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        "truncations": [cut.json() for cut in cuts],
        **note,
    }


def models_list(models: list[dict[str, Any]]) -> dict[str, Any]:
    """GET /v1/models: every served model (as GET /models describes them), as OpenAI lists models, with smls's details added."""
    return {"object": "list", "data": [{"id": m["name"], "object": "model", "created": 0, "owned_by": "smls", **_details(m)} for m in models]}


def _details(model: dict[str, Any]) -> dict[str, Any]:
    # Infinity's /models adds such fields too; OpenAI's clients ignore what they do not know.
    return {k: model[k] for k in ("kind", "dimension", "backend", "max_seq_length") if k in model}
