"""The one table of endpoints: route registration, the index page, the OpenAPI description, the hooks and the worker read it.

Each area of the API is a Flask blueprint (embed, openai, documents, ops) whose views are
registered from this table by `register`, so a route, its summary, its query parameters
and its description cannot drift apart. A route marked `fast` also gives `register` its
answer to a JSON body outside Flask: gunicorn's worker answers such a route's small whole
requests on its event loop (smls.worker.loop reads the paths from the app), and the lane
(smls.web.lane) answers them with that function, after the same hooks as Flask's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flask import Blueprint
from flask.typing import RouteCallable

from smls import outputs, prompts, truncation

if TYPE_CHECKING:  # (web.state imports nothing of this module; the name is for the type only)
    from smls.web.state import State

OPTIONS = frozenset(outputs.OPTION_NAMES)
# The output options and the model's name: what /embed and /documents/<id> take.
MODEL_OPTIONS = OPTIONS | {"model"}
# What a request may say of its long texts: cut them from either end, or refuse them.
TRUNCATION = frozenset(truncation.FIELDS)
# ... and of its texts' prompt (by name, or the prefix itself).
PROMPTS = frozenset(prompts.FIELDS)


@dataclass(frozen=True)
class Endpoint:
    """One route: who serves it, what it is, which query parameters it takes, whether it runs the model."""

    method: str
    rule: str  # Flask's spelling: /documents/<doc_id>
    area: str  # the blueprint
    name: str  # the view (and the OpenAPI operationId)
    summary: str
    query: frozenset[str] = frozenset()  # any other query parameter is refused
    model: bool = False  # runs the model: shed first when requests queue up
    public: bool = False  # answered without an API key
    upload: bool = False  # takes a document: its body may reach SMLS_MAX_UPLOAD_BYTES, not SMLS_MAX_BODY_BYTES
    transfer: bool = False  # holds its thread for a whole document (streamed out or read in): capped per worker
    fast: bool = False  # a small whole JSON POST is answered on the worker's event loop, without Flask (smls.web.lane)

    @property
    def endpoint(self) -> str:
        """Flask's endpoint name: blueprint.view."""
        return f"{self.area}.{self.name}"

    @property
    def path(self) -> str:
        """OpenAPI's spelling of the rule: /documents/{doc_id}."""
        return self.rule.replace("<", "{").replace(">", "}")


ENDPOINTS = (
    Endpoint("GET", "/", "ops", "index", "version, model, limits and endpoints"),
    Endpoint("GET", "/health", "ops", "health", "liveness: 200 while the worker answers", public=True),
    Endpoint("GET", "/ready", "ops", "ready", "readiness: 200 once this worker's model is loaded and warmed, else 503", public=True),
    Endpoint("GET", "/models", "ops", "models", "the served models: name, kind, dimension, backend, max sequence length"),
    Endpoint("POST", "/embed", "embed", "embed", "embeddings for message=... (form) or {\"message\": ...} (JSON); options model, normalize, dimensions, precision, encoding, truncate, truncation_direction, prompt_name, prompt", query=MODEL_OPTIONS | TRUNCATION | PROMPTS, model=True, fast=True),
    Endpoint("POST", "/v1/embeddings", "openai", "openai_embeddings", "OpenAI-compatible embeddings (unit-length vectors)", model=True, fast=True),
    Endpoint("GET", "/v1/models", "openai", "openai_models", "OpenAI-compatible model list"),
    Endpoint("POST", "/rerank", "rerank", "rerank", "documents ordered by relevance to a query (a cross-encoder, or an embedding model's cosine)", model=True, fast=True),
    Endpoint("POST", "/v1/rerank", "rerank", "rerank_v1", "the same as /rerank, where Cohere's v1 clients (and Jina's) call it; errors in OpenAI's shape", model=True, fast=True),
    Endpoint("POST", "/v2/rerank", "rerank", "rerank_v2", "the same as /rerank, where Cohere's v2 clients call it", model=True, fast=True),
    Endpoint("POST", "/tokenize", "tokens", "tokenize", "a model's tokens for texts: ids, count, whether it would cut them, each token's text and offsets", fast=True),
    Endpoint("POST", "/decode", "tokens", "decode", "the text a list of token ids spells", fast=True),
    Endpoint("GET", "/documents", "documents", "list_documents", "the documents: uploaded ones and files in the data folder"),
    Endpoint("GET", "/documents/<doc_id>", "documents", "get_document", "every sentence of a document with its pages and embedding (streamed)", query=MODEL_OPTIONS, model=True, transfer=True),
    Endpoint("PUT", "/documents/<doc_id>", "documents", "put_document", "upload a document (multipart texts + pages files, or JSON); ?compute=true fills its vectors first", query=frozenset({"compute", "model"}), model=True, upload=True, transfer=True),
    Endpoint("DELETE", "/documents/<doc_id>", "documents", "delete_document", "remove an uploaded document and its vectors"),
    Endpoint("GET", "/documents/<doc_id>/search", "documents", "search_document", "the k sentences of a document most similar to q", query=frozenset({"q", "k", "model"}) | TRUNCATION, model=True),
    Endpoint("GET", "/search", "documents", "search_all", "the k sentences most similar to q across every document (or those named by doc)", query=frozenset({"q", "k", "doc", "model", "mode", "rerank"}) | TRUNCATION, model=True),
    Endpoint("GET", "/metrics", "ops", "metrics_page", "Prometheus metrics, summed over all workers"),
    Endpoint("GET", "/openapi.json", "ops", "openapi_json", "the OpenAPI 3.1 description"),
    Endpoint("GET", "/docs", "ops", "docs", "API docs in the browser (Swagger UI, served locally)", public=True),
    Endpoint("GET", "/search.html", "ops", "search_page", "a page that searches the documents and uploads new ones (asks for the API key, if any)", public=True),
)
# Swagger UI's own files: served, but not an API operation (not in the index or the description).
DOCS_STATIC = Endpoint("GET", "/docs/static/<name>", "ops", "docs_static", "Swagger UI's files", public=True)
BY_ENDPOINT = {e.endpoint: e for e in (*ENDPOINTS, DOCS_STATIC)}


# A fast route's answer to a whole JSON body, outside Flask: (app, body, seconds left of SMLS_REQUEST_TIMEOUT,
# request id) -> the response's JSON. Errors are raised, as in a view; the view calls it too.
FastAnswer = Callable[["State", bytes, float, str], dict[str, Any]]

_FAST: dict[str, FastAnswer] = {}  # rule -> answer, filled by register


def register(blueprint: Blueprint, views: dict[str, RouteCallable], fast: Mapping[str, FastAnswer] | None = None) -> None:
    """Add the blueprint's routes from the table; every endpoint of its area needs exactly one view, and a fast one its answer outside Flask."""
    fast = fast or {}
    mine = [e for e in (*ENDPOINTS, DOCS_STATIC) if e.area == blueprint.name]
    missing = {e.name for e in mine} - set(views)
    extra = set(views) - {e.name for e in mine}
    if missing or extra:
        raise RuntimeError(f"blueprint {blueprint.name}: views missing {sorted(missing)}, not in the table {sorted(extra)}")
    declared = {e.name for e in mine if e.fast}
    if set(fast) != declared:
        raise RuntimeError(f"blueprint {blueprint.name}: fast answers for {sorted(fast)}, but the table marks {sorted(declared)} fast")
    for e in mine:
        blueprint.add_url_rule(e.rule, e.name, views[e.name], methods=[e.method])
        if e.fast:
            _FAST[e.rule] = fast[e.name]


def fast_answers() -> dict[str, tuple[Endpoint, FastAnswer]]:
    """Every fast route (rule -> its endpoint and answer), once its blueprint is registered; a POST each."""
    return {e.rule: (e, _FAST[e.rule]) for e in ENDPOINTS if e.fast and e.rule in _FAST}


def index() -> dict[str, str]:
    """The endpoint list of GET /: "METHOD /rule" -> summary."""
    return {f"{e.method} {e.rule}": e.summary for e in ENDPOINTS}
