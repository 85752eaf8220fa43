"""Operations: the index, liveness, readiness, the model list, metrics, the OpenAPI description and the docs page."""

from __future__ import annotations

from importlib import resources

from flask import Blueprint, Response
from werkzeug.exceptions import NotFound

from smls import metrics, ml_services, outputs
from smls.errors import NotReady
from smls.serving.models import EmbeddingModel
from smls.version import __version__
from smls.web import openapi
from smls.web.endpoints import index as endpoint_index
from smls.web.endpoints import register
from smls.web.responses import json_response, state

blueprint = Blueprint("ops", __name__)
_STATIC = resources.files("smls").joinpath("static", "swagger-ui")
_SEARCH_PAGE = resources.files("smls").joinpath("static", "search.html").read_bytes()
_ASSETS = {
    "swagger-ui-bundle.js": "application/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
}


def index() -> Response:
    """Name, version, model, limits and the endpoints."""
    app = state()
    return json_response(
        {
            "name": "smls",
            "version": __version__,
            "model": app.models[app.default].info(),
            "models": list(app.models),
            "limits": {"max_messages": app.settings.max_messages, "max_body_bytes": app.settings.max_body_bytes},
            "endpoints": endpoint_index(),
        }
    )


def health() -> Response:
    """200 while the worker answers."""
    return json_response({"status": "ok"})


def ready() -> Response:
    """200 once this worker has loaded and warmed its model, else 503 not_ready."""
    if not state().ready.is_set():
        raise NotReady("this worker is still loading or warming up its model")
    return json_response({"status": "ready"})


def models() -> Response:
    """Every served model with its kind, dimension, backend and limits, the default first marked; and the services."""
    app = state()
    listed = []
    for model in app.models.values():
        info = model.info()
        entry = {k: info[k] for k in ("name", "kind", "backend", "dimension", "max_seq_length")}
        entry["default"] = model.name == app.default
        # What each kind of model serves, and in which service of smls.ml_services it runs in-process.
        if isinstance(model, EmbeddingModel):
            entry.update(
                service="SentenceEncoder",
                routes=_EMBEDDING_ROUTES,
                precisions=list(outputs.PRECISIONS),
                encodings=list(outputs.ENCODINGS),
                truncation=model.truncation,
                **model.prompts.info(),
                dimensions_trained=model.matryoshka,
            )
        else:
            entry.update(service="Reranker", routes=["/rerank"])
        listed.append(entry)
    return json_response({"default": app.default, "models": listed, "services": ml_services.names()})


_EMBEDDING_ROUTES = ["/embed", "/v1/embeddings", "/documents/{doc_id}", "/documents/{doc_id}/search", "/rerank"]


def metrics_page() -> Response:
    """Prometheus text, summed over the workers."""
    body, content_type = metrics.render()
    return Response(body, content_type=content_type)


def openapi_json() -> Response:
    """The OpenAPI 3.1 description of this server."""
    return json_response(state().description)


def docs() -> Response:
    """The Swagger UI page."""
    return Response(openapi.DOCS_PAGE, mimetype="text/html")


def search_page() -> Response:
    """The search page: plain HTML and script, no external assets; its calls carry the key the user types, if the server needs one."""
    response = Response(_SEARCH_PAGE, mimetype="text/html")
    # Its own script and style only, and calls to this server only: a document's text can never run as code here.
    response.headers["Content-Security-Policy"] = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; form-action 'none'; frame-ancestors 'none'"
    return response


def docs_static(name: str) -> Response:
    """Swagger UI's own files, from a fixed list (no path from the client reaches the file system)."""
    if name == "init.js":
        return Response(openapi.DOCS_INIT, mimetype="application/javascript")
    if name not in _ASSETS:
        raise NotFound()
    response = Response(_STATIC.joinpath(name).read_bytes(), mimetype=_ASSETS[name])
    response.headers["Cache-Control"] = "public, max-age=86400"
    return response


register(
    blueprint,
    {
        "index": index, "health": health, "ready": ready, "models": models, "metrics_page": metrics_page,
        "openapi_json": openapi_json, "docs": docs, "docs_static": docs_static, "search_page": search_page,
    },
)
