"""The OpenAPI 3.1 description of the server (GET /openapi.json) and the docs page (GET /docs).

The routes, their summaries and operationIds come from the endpoint table
(smls.web.endpoints); their parameters, bodies and responses are described here, and
building the document fails if the two disagree. Tests check that real responses match
its schemas.
The docs page is Swagger UI, vendored under smls/static/swagger-ui (no internet needed).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from smls import hybrid, outputs, truncation
from smls.config import Settings
from smls.documents import DOC_ID_PATTERN
from smls.serving.models import EmbeddingModel, Served
from smls.version import __version__
from smls.web.endpoints import ENDPOINTS

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["status", "code", "message"],
            "properties": {"status": {"type": "integer"}, "code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}
_OPENAI_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
_VECTOR = {
    "oneOf": [
        {"type": "array", "items": {"type": "number"}, "description": "numbers (float32) or integer codes (int8, uint8, binary, ubinary)"},
        {"type": "string", "description": "base64 of the little-endian bytes (float32, int8 or uint8)"},
    ]
}
# A text must hold something other than whitespace (a blank one is refused like an empty one).
_SOME_TEXT = "\\S"
_MESSAGE: dict[str, Any] = {
    "oneOf": [
        {"type": "string", "minLength": 1, "pattern": _SOME_TEXT},
        {"type": "array", "items": {"type": "string", "minLength": 1, "pattern": _SOME_TEXT}, "minItems": 1},
    ],
    "description": "a text, or a list of texts",
}
_OPTIONS: dict[str, dict[str, Any]] = {
    "normalize": {"type": "boolean", "default": False, "description": "scale each vector to unit length (after `dimensions`)"},
    "dimensions": {"type": "integer", "minimum": 1, "description": "keep only the first n dimensions (Matryoshka-style); absent: all"},
    "precision": {"type": "string", "enum": list(outputs.PRECISIONS), "default": "float32"},
    "encoding": {"type": "string", "enum": list(outputs.ENCODINGS), "default": "json"},
}
# What a request says of its texts before the model reads them (smls.truncation, smls.prompts), in a body or the query string.
_TRUNCATION: dict[str, dict[str, Any]] = {
    "truncate": {"type": "boolean", "default": True, "description": "false: refuse a text longer than the model takes (400 input_too_long) instead of cutting it"},
    "truncation_direction": {
        "type": "string",
        "enum": list(truncation.DIRECTIONS),
        "description": "which end of a long text is cut: right keeps the start, left keeps the end; absent: the model's (GET /models)",
    },
}
_TRUNCATIONS = {
    "type": "array",
    "description": "each text the model did not read whole: the field and index it was sent in, its tokens, how many were dropped",
    "items": {
        "type": "object",
        "required": ["field", "index", "tokens", "dropped"],
        "properties": {
            "field": {"type": "string"},
            "index": {"type": "integer"},
            "tokens": {"type": ["integer", "null"], "description": "special tokens included (null: the model has no fast tokenizer to count with)"},
            "dropped": {"type": ["integer", "null"]},
        },
    },
}
_DIMENSIONS_TRAINED = {"const": False, "description": "present when dimensions shortened the vectors of a model not trained for it (GET /models)"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """The same schema, also allowing JSON null (which means "not given": the default)."""
    out = {**schema, "type": [schema["type"], "null"]}
    if "enum" in out:
        out["enum"] = [*out["enum"], None]
    return out


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int, openai: bool = False) -> dict[str, Any]:
    schema = _ref("OpenAIError" if openai else "Error")
    texts = {
        400: "invalid input, an unknown field or conflicting option values, or a body cut short",
        401: "missing or wrong API key",
        404: "not found",
        405: "method not allowed",
        408: "the body did not arrive within SMLS_CLIENT_TIMEOUT",
        413: "body or message count over the limit",
        415: "unsupported content type or charset",
        409: "the document is a pair of files in the data folder (change it there)",
        422: "the document's files are malformed",
        503: "overloaded or past the deadline; retry after Retry-After seconds",
    }
    return {str(s): _json(schema, texts[s]) for s in statuses}


def _prompts(names: list[str]) -> dict[str, dict[str, Any]]:
    """The prompt fields: prompt_name one of the served models' prompts (left out where none has any), or a literal prompt."""
    chosen = {"prompt_name": {"type": "string", "enum": names, "description": "one of the model's prompts (GET /models), put in front of every text; absent: its default"}}
    return {**(chosen if names else {}), "prompt": {"type": "string", "description": "a prefix put in front of every text, in place of prompt_name"}}


def _query(name: str, schema: dict[str, Any], description: str = "", required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": description}


def spec(models: Sequence[Served], default: str, settings: Settings) -> dict[str, Any]:
    """The OpenAPI document for this server, its models and its limits."""
    version = __version__
    embedders = [m for m in models if isinstance(m, EmbeddingModel)]
    dimension = max(m.encoder.dimension for m in embedders)  # the largest; a smaller model refuses more
    model_about = f"an embedding model's name (GET /models); absent: {default}"
    model_choice: dict[str, Any] = {"type": "string", "enum": [m.name for m in embedders], "description": model_about}
    prompt_names = sorted({name for m in embedders for name in m.prompts.prompts})
    texts_options = {**_TRUNCATION, **_prompts(prompt_names)}
    in_query = {"model": model_choice, **_OPTIONS, "dimensions": {**_OPTIONS["dimensions"], "maximum": dimension}, **texts_options}
    options = {name: _nullable(schema) for name, schema in in_query.items()}  # null: as if absent (JSON only)
    message = {"oneOf": [_MESSAGE["oneOf"][0], {**_MESSAGE["oneOf"][1], "maxItems": settings.max_messages}], "description": _MESSAGE["description"]}
    option_params = [_query(name, schema, schema.get("description", "")) for name, schema in in_query.items()]
    vocabulary = min((m.tokens.vocab_size for m in models if m.tokens is not None), default=1)

    def search(default_k: int) -> list[dict[str, Any]]:
        """The parameters both searches take: q, k (with its default) and model."""
        return [
            _query("q", {"type": "string", "minLength": 1, "pattern": _SOME_TEXT}, "the query text", required=True),
            _query("k", {"type": "integer", "minimum": 1, "maximum": settings.search_max_k, "default": default_k}, "how many results"),
            _query("model", model_choice, model_about),
            *(_query(name, schema, schema["description"]) for name, schema in _TRUNCATION.items()),
        ]

    embed_json = {
        "type": "object",
        "required": ["message"],
        "additionalProperties": False,
        "properties": {"message": message, **options},
    }
    embed_form = {
        "type": "object",
        "required": ["message"],
        "additionalProperties": False,
        "properties": {
            "message": {
                "type": "string",
                "minLength": 1,
                "pattern": _SOME_TEXT,
                "description": "a text, a JSON array or Python list literal of texts; repeat the field for several texts",
            },
            "normalize": {"type": "string", "enum": ["true", "false", "1", "0", "yes", "no", "on", "off"]},
            "model": model_choice,
            "dimensions": {"type": "integer", "minimum": 1, "maximum": dimension},
            "precision": in_query["precision"],
            "encoding": in_query["encoding"],
            "truncate": {"type": "string", "enum": ["true", "false", "1", "0", "yes", "no", "on", "off"]},
            "truncation_direction": _TRUNCATION["truncation_direction"],
            **_prompts(prompt_names),
        },
    }
    schemas = _schemas(message, dimension)
    schemas["OpenAIEmbeddingsRequest"]["properties"].update({name: _nullable(schema) for name, schema in texts_options.items()})
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "smls",
            "version": version,
            "description": "Sentence embeddings and reranking over plain HTTP. Models: "
            + ", ".join(f"{m.name} ({m.kind}{f', {m.encoder.dimension} dimensions' if isinstance(m, EmbeddingModel) else ''})" for m in models)
            + f"; the default is {default}.",
        },
        "paths": _paths({
            "/": {"get": {"responses": {"200": _json({"type": "object"}, "about this server")}}},
            "/health": {
                "get": {
                    "responses": {"200": _json({"type": "object", "properties": {"status": {"const": "ok"}}}, "alive")},
                }
            },
            "/ready": {
                "get": {
                    "responses": {"200": _json({"type": "object", "properties": {"status": {"const": "ready"}}}, "ready"), **_errors(503)},
                }
            },
            "/models": {
                "get": {"responses": {"200": _json(_ref("Models"), "models")}}
            },
            "/embed": {
                "post": {
                    "parameters": option_params,
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": embed_json, "example": {"message": ["Hello world!", "How are you today?"], "normalize": True}},
                            "application/x-www-form-urlencoded": {"schema": embed_form},
                            "multipart/form-data": {"schema": embed_form},
                        },
                    },
                    "responses": {"200": _json(_ref("EmbedResponse"), "the embeddings, in the order of the texts"), **_errors(400, 404, 408, 413, 415, 503)},
                }
            },
            "/v1/embeddings": {
                "post": {
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("OpenAIEmbeddingsRequest"), "example": {"input": ["Hello world!", "How are you today?"]}}},
                    },
                    "responses": {"200": _json(_ref("OpenAIEmbeddingsResponse"), "the embeddings"), **_errors(400, 404, 408, 413, 415, 503, openai=True)},
                }
            },
            "/v1/models": {
                "get": {
                    "responses": {"200": _json(_ref("OpenAIModels"), "models")},
                }
            },
            "/rerank": _rerank(settings.max_messages),
            "/v1/rerank": _rerank(settings.max_messages, openai=True),
            "/v2/rerank": _rerank(settings.max_messages),
            "/tokenize": {
                "post": {
                    "requestBody": {"required": True, "content": {"application/json": {"schema": _tokenize_request(settings.max_messages), "example": {"text": ["Hello world!"]}}}},
                    "responses": {"200": _json(_TOKENIZE_RESPONSE, "each text's tokens"), **_errors(400, 404, 408, 413, 415)},
                }
            },
            "/decode": {
                "post": {
                    "requestBody": {"required": True, "content": {"application/json": {"schema": _decode_request(vocabulary), "example": {"ids": [101, 7592, 2088, 999, 102]}}}},
                    "responses": {"200": _json(_DECODE_RESPONSE, "the text"), **_errors(400, 404, 408, 413, 415)},
                }
            },
            "/documents": {
                "get": {
                    "responses": {"200": _json(_ref("DocumentList"), "documents and their sentence counts")},
                }
            },
            "/documents/{doc_id}": {
                "get": {
                    "parameters": [_doc_id(), *option_params],
                    "responses": {"200": _json(_ref("Document"), "the document"), **_errors(400, 404, 422, 503)},
                },
                "put": {
                    "parameters": [
                        _doc_id(),
                        _query("compute", {"type": "string", "enum": ["true", "false", "1", "0", "yes", "no", "on", "off"], "default": "false"}, "fill the vectors before answering"),
                        _query("model", model_choice, model_about + " (the model compute=true uses)"),
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "multipart/form-data": {"schema": _UPLOAD_FORM},
                            "application/json": {"schema": _UPLOAD_JSON},
                        },
                    },
                    "responses": {
                        "200": _json(_ref("Upload"), "replaced an uploaded document"),
                        "201": _json(_ref("Upload"), "stored a new document"),
                        **_errors(400, 404, 408, 409, 413, 415, 422, 503),
                    },
                },
                "delete": {
                    "parameters": [_doc_id()],
                    "responses": {
                        "200": _json({"type": "object", "required": ["doc_id", "deleted"], "properties": {"doc_id": {"type": "string"}, "deleted": {"const": True}}}, "deleted"),
                        **_errors(400, 404, 409),
                    },
                },
            },
            "/documents/{doc_id}/search": {
                "get": {
                    "parameters": [_doc_id(), *search(5)],
                    "responses": {"200": _json(_ref("SearchResult"), "the best matches, best first"), **_errors(400, 404, 422, 503)},
                }
            },
            "/search": {
                "get": {
                    "parameters": [
                        *search(10),
                        _query("doc", {"type": "string", "pattern": f"^{DOC_ID_PATTERN}(,{DOC_ID_PATTERN})*$"}, "only these documents (ids, comma-separated)"),
                        _query(
                            "mode",
                            {"type": "string", "enum": list(hybrid.MODES), "default": "vector"},
                            "vector: cosine to the query's vector; keyword: the store's full-text ranking of the query's words; "
                            "hybrid: both, fused by reciprocal rank",
                        ),
                        _query(
                            "rerank",
                            {"type": "string", "enum": [m.name for m in models]},
                            f"re-score the best {hybrid.RERANK_CANDIDATES} (at least k) with this model: a cross-encoder, or an embedding model's cosine",
                        ),
                    ],
                    "responses": {"200": _json(_ref("SearchAllResult"), "the best matches over every document, best first"), **_errors(400, 404, 422, 503)},
                }
            },
            "/metrics": {
                "get": {
                    "responses": {"200": {"description": "text exposition format", "content": {"text/plain": {"schema": {"type": "string"}}}}},
                }
            },
            "/openapi.json": {
                "get": {"responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")}}
            },
            "/docs": {
                "get": {
                    "responses": {"200": {"description": "an HTML page", "content": {"text/html": {"schema": {"type": "string"}}}}},
                }
            },
            "/search.html": {
                "get": {
                    "responses": {"200": {"description": "an HTML page", "content": {"text/html": {"schema": {"type": "string"}}}}},
                }
            },
        }),
        "components": {
            "schemas": schemas,
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer", "description": "SMLS_API_KEY, when the server has one"}},
        },
        # Optional: a server without SMLS_API_KEY needs none.
        "security": [{}, {"apiKey": []}],
    }


def _paths(operations: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """The paths object: each endpoint of the table with its summary and operationId, and its description here."""
    paths: dict[str, Any] = {}
    for e in ENDPOINTS:
        operation = operations.get(e.path, {}).get(e.method.lower())
        if operation is None:
            raise RuntimeError(f"{e.method} {e.path} is in the endpoint table but not described in openapi.py")
        paths.setdefault(e.path, {})[e.method.lower()] = {"summary": e.summary, "operationId": e.name, **operation}
    undescribed = {(path, method) for path, ops in operations.items() for method in ops} - {(e.path, e.method.lower()) for e in ENDPOINTS}
    if undescribed:
        raise RuntimeError(f"openapi.py describes operations the endpoint table lacks: {sorted(undescribed)}")
    return paths


_FLAG = {"type": ["boolean", "null"]}


def _tokenize_request(max_texts: int) -> dict[str, Any]:
    text = {"type": "string", "minLength": 1}
    return {
        "type": "object",
        "required": ["text"],
        "additionalProperties": False,
        "properties": {
            "text": {"oneOf": [text, {"type": "array", "items": text, "minItems": 1, "maxItems": max_texts}]},
            "model": {"type": ["string", "null"], "description": "a served model's name (any kind); the default model if left out"},
            "add_special_tokens": {**_FLAG, "description": "count the model's special tokens ([CLS], [SEP]) as it reads them (default true)"},
            "return_tokens": {**_FLAG, "description": "each token's text, offsets and kind, not just the ids (default true)"},
        },
    }


_TOKENIZE_RESPONSE = {
    "type": "object",
    "required": ["model", "max_seq_length", "texts"],
    "properties": {
        "model": {"type": "string"},
        "max_seq_length": {"type": "integer"},
        "texts": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["count", "truncated", "ids"],
                "properties": {
                    "count": {"type": "integer", "description": "tokens the model would be fed before truncation"},
                    "truncated": {"type": "boolean", "description": "whether count is over max_seq_length: the model would cut the text"},
                    "ids": {"type": "array", "items": {"type": "integer"}},
                    "tokens": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["id", "text", "start", "end", "special"],
                            "properties": {
                                "id": {"type": "integer"},
                                "text": {"type": "string"},
                                "start": {"type": "integer", "description": "offset of its first character in the text sent"},
                                "end": {"type": "integer", "description": "offset just past its last character"},
                                "special": {"type": "boolean"},
                            },
                        },
                    },
                },
            },
        },
    },
}


def _decode_request(vocabulary: int) -> dict[str, Any]:
    """/decode's body; ids below `vocabulary` (the smallest served model's: an id past it is refused)."""
    return {
        "type": "object",
        "required": ["ids"],
        "additionalProperties": False,
        "properties": {
            "ids": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": vocabulary - 1}},
            "model": {"type": ["string", "null"]},
            "skip_special_tokens": {**_FLAG, "description": "leave out [CLS], [SEP] and the like (default true)"},
        },
    }


_DECODE_RESPONSE = {"type": "object", "required": ["model", "text"], "properties": {"model": {"type": "string"}, "text": {"type": "string"}}}

_RERANK_EXAMPLE = {
    "query": "Where do lighthouses stand?",
    "documents": ["Bread is baked in an oven.", "Lighthouses stand on rocky coasts."],
    "top_n": 1,
    "return_documents": True,
}


def _rerank(max_documents: int, openai: bool = False) -> dict[str, Any]:
    return {
        "post": {
            "requestBody": {"required": True, "content": {"application/json": {"schema": _rerank_request(max_documents), "example": _RERANK_EXAMPLE}}},
            "responses": {"200": _json(_ref("RerankResponse"), "the documents' scores, best first"), **_errors(400, 404, 408, 413, 415, 503, openai=openai)},
        }
    }


def _rerank_request(max_documents: int) -> dict[str, Any]:
    text = {"type": "string", "minLength": 1, "pattern": _SOME_TEXT}
    documents = {
        "type": ["array", "null"],
        "minItems": 1,
        "maxItems": max_documents,
        "items": {"oneOf": [text, {"type": "object", "required": ["text"], "properties": {"text": text}}]},
        "description": "texts, or objects with a \"text\" (Cohere v1)",
    }
    flag = {"type": ["boolean", "null"]}
    return {
        "type": "object",
        "required": ["query"],
        "additionalProperties": False,
        "properties": {
            "query": text,
            "documents": documents,
            "texts": {**documents, "description": "the same as documents (text-embeddings-inference's name); send one of the two"},
            "top_n": {"type": ["integer", "null"], "minimum": 1, "description": "return only the best n"},
            "model": {"type": ["string", "null"], "description": "a served model (GET /models); absent: the first cross-encoder, else the default model"},
            "return_documents": {**flag, "default": False, "description": "include each document as sent"},
            "return_text": {**flag, "description": "the same as return_documents (text-embeddings-inference's name)"},
            "raw_scores": {**flag, "default": False, "description": "a cross-encoder's logits instead of 0..1 scores"},
            "truncate": {**flag, "default": True, "description": "false: refuse texts longer than the model takes instead of cutting them"},
            "truncation_direction": {
                **_nullable(_TRUNCATION["truncation_direction"]),
                "description": "an embedding model's: right keeps the start of a long text, left its end (a cross-encoder cuts a pair on the right)",
            },
        },
        # Exactly one of the two names holds the list (the other absent or null).
        "oneOf": [
            {"required": ["documents"], "properties": {"documents": {"type": "array"}}},
            {"required": ["texts"], "properties": {"texts": {"type": "array"}}},
        ],
    }


_UPLOAD_FORM = {
    "type": "object",
    "required": ["texts", "pages"],
    "additionalProperties": False,
    "properties": {
        "texts": {"type": "string", "format": "binary", "description": "the texts file: a JSON list of {\"text\", \"pages\": [page id, ...]}"},
        "pages": {"type": "string", "format": "binary", "description": "the pages file: CSV, a header row, then page id, page number, metadata"},
    },
}
_UPLOAD_JSON = {
    "type": "object",
    "required": ["texts", "pages"],
    "additionalProperties": False,
    "properties": {
        "texts": {"type": "array", "items": {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}, "pages": {"type": "array", "items": {"type": "string"}}}}},
        "pages": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "page_number"],
                "properties": {"id": {"type": "string"}, "page_number": {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1}},
                "additionalProperties": {"type": ["string", "number", "null"]},
            },
        },
    },
}


def _doc_id() -> dict[str, Any]:
    return {
        "name": "doc_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": f"^{DOC_ID_PATTERN}$"},
        "description": "an uploaded document's id, or the <id> of data/texts_<id>.json and data/pages_<id>.csv",
    }


def _search_result(hit: dict[str, Any], **more: dict[str, Any]) -> dict[str, Any]:
    """A search's answer: the model, the query, k and the hits, with the fields one kind of search adds."""
    properties = {
        "model": {"type": "string"},
        "query": {"type": "string"},
        "k": {"type": "integer"},
        "results": {"type": "array", "items": hit},
        "truncations": _TRUNCATIONS,
        **more,
    }
    return {"type": "object", "required": list(properties), "properties": properties}


def _schemas(message: dict[str, Any], dimension: int) -> dict[str, Any]:
    page = {
        "type": "object",
        "required": ["id", "number", "metadata"],
        "properties": {"id": {"type": "string"}, "number": {"type": "integer"}, "metadata": {"type": "object"}},
    }
    sentence: dict[str, Any] = {
        "type": "object",
        "required": ["index", "text", "metadata", "pages"],
        "properties": {
            "index": {"type": "integer"},
            "text": {"type": "string"},
            "metadata": {"type": "object"},
            "pages": {"type": "array", "items": page},
            "embedding": _VECTOR,
        },
    }
    hit = {**sentence, "required": ["score", *sentence["required"]], "properties": {"score": {"type": "number"}, **sentence["properties"]}}
    schemas: dict[str, Any] = {
        "Error": _ERROR,
        "OpenAIError": _OPENAI_ERROR,
        "EmbedResponse": {
            "type": "object",
            "required": ["model", "dimension", "normalized", "precision", "encoding", "truncated", "embeddings"],
            "properties": {
                "model": {"type": "string"},
                "dimension": {"type": "integer", "description": "dimensions per vector (before bit packing for binary precisions)"},
                "normalized": {"type": "boolean"},
                "precision": {"type": "string", "enum": list(outputs.PRECISIONS)},
                "encoding": {"type": "string", "enum": list(outputs.ENCODINGS)},
                "truncated": {"type": "integer", "description": "how many texts were cut to the model's maximum length"},
                "truncations": _TRUNCATIONS,
                "dimensions_trained": _DIMENSIONS_TRAINED,
                "embeddings": {"type": "array", "items": _VECTOR},
            },
        },
        "OpenAIEmbeddingsRequest": {
            "type": "object",
            "required": ["input"],
            "additionalProperties": False,
            "properties": {
                "input": message,
                "model": {"type": ["string", "null"], "description": "an embedding model's name (GET /v1/models); null or absent: the default"},
                "encoding_format": {"type": ["string", "null"], "enum": ["float", "base64", None], "default": "float"},
                "dimensions": {"type": ["integer", "null"], "minimum": 1, "maximum": dimension},
                "user": {"type": ["string", "null"]},
            },
        },
        "OpenAIEmbeddingsResponse": {
            "type": "object",
            "required": ["object", "data", "model", "usage"],
            "properties": {
                "object": {"const": "list"},
                "data": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["object", "index", "embedding"],
                        "properties": {"object": {"const": "embedding"}, "index": {"type": "integer"}, "embedding": _VECTOR},
                    },
                },
                "model": {"type": "string"},
                "usage": {
                    "type": "object",
                    "required": ["prompt_tokens", "total_tokens"],
                    "properties": {"prompt_tokens": {"type": "integer"}, "total_tokens": {"type": "integer"}},
                },
                "truncations": _TRUNCATIONS,
                "dimensions_trained": _DIMENSIONS_TRAINED,
            },
        },
        "OpenAIModels": {
            "type": "object",
            "required": ["object", "data"],
            "properties": {
                "object": {"const": "list"},
                "data": {
                    "type": "array",
                    "items": {"type": "object", "required": ["id", "object"], "properties": {"id": {"type": "string"}, "object": {"const": "model"}}},
                },
            },
        },
        "Models": {
            "type": "object",
            "required": ["default", "models", "services"],
            "properties": {
                "default": {"type": "string", "description": "the model a request that names none gets"},
                "models": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "kind", "backend", "dimension", "max_seq_length", "default", "service", "routes"],
                        "properties": {
                            "name": {"type": "string"},
                            "kind": {"type": "string", "enum": ["embedding", "cross-encoder"]},
                            "backend": {"type": "string"},
                            "dimension": {"type": "integer", "description": "0 for a cross-encoder (it makes no vectors)"},
                            "max_seq_length": {"type": "integer"},
                            "default": {"type": "boolean"},
                            "service": {"type": "string", "description": "its service in smls.ml_services"},
                            "routes": {"type": "array", "items": {"type": "string"}},
                            "precisions": {"type": "array", "items": {"type": "string"}},
                            "encodings": {"type": "array", "items": {"type": "string"}},
                            "truncation": {"type": "string", "enum": list(truncation.DIRECTIONS), "description": "which end of a long text it keeps by default"},
                            "prompts": {"type": "object", "additionalProperties": {"type": "string"}, "description": "its prompts by name"},
                            "default_prompt_name": {"type": ["string", "null"]},
                            "dimensions_trained": {"type": "boolean", "description": "trained for shortened dimensions (Matryoshka)"},
                        },
                    },
                },
                "services": {"type": "array", "items": {"type": "string"}},
            },
        },
        "RerankResponse": {
            "type": "object",
            "required": ["object", "id", "model", "scorer", "results", "usage"],
            "properties": {
                "object": {"const": "rerank"},
                "id": {"type": "string", "description": "the request id (X-Request-Id)"},
                "model": {"type": "string"},
                "scorer": {"type": "string", "enum": ["cross-encoder", "cosine"]},
                "results": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["index", "relevance_score"],
                        "properties": {
                            "index": {"type": "integer"},
                            "relevance_score": {"type": "number"},
                            "document": {"description": "the document as sent (with return_documents)"},
                        },
                    },
                },
                "usage": {
                    "type": "object",
                    "required": ["prompt_tokens", "total_tokens"],
                    "properties": {"prompt_tokens": {"type": "integer"}, "total_tokens": {"type": "integer"}},
                },
                "truncations": _TRUNCATIONS,
            },
        },
        "DocumentList": {
            "type": "object",
            "required": ["documents"],
            "properties": {
                "documents": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["id", "source", "sentences"],
                        "properties": {"id": {"type": "string"}, "source": {"enum": ["upload", "files"]}, "sentences": {"type": ["integer", "null"]}},
                    },
                }
            },
        },
        "Document": {
            "type": "object",
            "required": ["doc_id", "model", "dimension", "normalized", "precision", "encoding", "count", "cached", "sentences"],
            "properties": {
                "doc_id": {"type": "string"},
                "model": {"type": "string"},
                "dimension": {"type": "integer", "description": "dimensions per vector (before bit packing for binary precisions)"},
                "normalized": {"type": "boolean"},
                "precision": {"type": "string", "enum": list(outputs.PRECISIONS)},
                "encoding": {"type": "string", "enum": list(outputs.ENCODINGS)},
                "count": {"type": "integer"},
                "cached": {"type": "boolean"},
                "sentences": {"type": "array", "items": {**sentence, "required": [*sentence["required"], "embedding"]}},
            },
        },
        "Upload": {
            "type": "object",
            "required": ["doc_id", "source", "sentences", "pages", "digest", "replaced", "computed", "model"],
            "properties": {
                "doc_id": {"type": "string"},
                "source": {"const": "upload"},
                "sentences": {"type": "integer"},
                "pages": {"type": "integer", "description": "distinct pages the sentences name"},
                "digest": {"type": "string", "description": "SHA-256 over both files"},
                "replaced": {"type": "boolean"},
                "computed": {"type": "boolean", "description": "whether its vectors (by model) are cached"},
                "model": {"type": "string"},
            },
        },
        "SearchAllResult": _search_result(
            {**hit, "required": ["doc_id", *hit["required"]], "properties": {"doc_id": {"type": "string"}, **hit["properties"]}},
            skipped={
                "type": "array",
                "description": "documents that could not be searched (malformed files), with the error each one gives",
                "items": {"type": "object", "required": ["doc_id", "code", "message"], "properties": {"doc_id": {"type": "string"}, "code": {"type": "string"}, "message": {"type": "string"}}},
            },
        ),
        "SearchResult": _search_result(hit, doc_id={"type": "string"}),
    }
    # What /search adds: its mode, each hybrid hit's ranks, and what a rerank did.
    every = schemas["SearchAllResult"]
    every["required"].append("mode")
    every["properties"]["mode"] = {"type": "string", "enum": list(hybrid.MODES)}
    every["properties"]["reranked_by"] = {"type": "string", "description": "the model that re-scored the results (rerank=)"}
    every["properties"]["results"]["items"]["properties"].update(
        ranks={
            "type": "object",
            "description": "mode=hybrid: the hit's rank by vector and by keyword (null: not among that ranking's candidates)",
            "properties": {"vector": {"type": ["integer", "null"]}, "keyword": {"type": ["integer", "null"]}},
        },
        retrieval_score={"type": "number", "description": "with rerank=: the score before re-scoring"},
    )
    return schemas


DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>smls API</title>
  <link rel="icon" href="/docs/static/favicon-32x32.png">
  <link rel="stylesheet" href="/docs/static/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/static/swagger-ui-bundle.js"></script>
  <script src="/docs/static/init.js"></script>
</body>
</html>
"""

# In a file of its own rather than inline, so the page works under a strict Content-Security-Policy.
DOCS_INIT = """// With SMLS_API_KEY set, /openapi.json and every call need the key: ask once, keep it for this tab.
function smlsKey() { return sessionStorage.getItem("smls-api-key") || ""; }
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  requestInterceptor: (req) => { if (smlsKey()) { req.headers["Authorization"] = "Bearer " + smlsKey(); } return req; },
  responseInterceptor: (res) => {
    if (res.status === 401 && res.url.endsWith("/openapi.json")) {
      const key = window.prompt("This smls server needs an API key:");
      if (key) { sessionStorage.setItem("smls-api-key", key); window.location.reload(); }
    }
    return res;
  },
});
"""
