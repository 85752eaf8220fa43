"""The HTTP layer: an app factory, request parsing, and the one place errors become JSON."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Iterator

import numpy as np
import orjson
from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException, NotFound

import smls
from smls import auth, documents, fields, forms, logs, metrics, openai_api, openapi, outputs, parsing
from smls.batching import MicroBatcher
from smls.body import CompleteBody
from smls.config import Settings
from smls.doc_vectors import DocumentEmbedder
from smls.encoders import SentenceEncoder, encoder_for
from smls.errors import InvalidInput, InvalidOption, MissingMessage, NotReady, Overloaded, SmlsError, UnsupportedMediaType
from smls.worker import OVERFLOW_KEY, QUEUE_WAIT_KEY

log = logging.getLogger("smls")

ENDPOINTS = {
    "GET /": "version, model and endpoints",
    "GET /health": "liveness: 200 while the worker answers",
    "GET /ready": "readiness: 200 once this worker's model is loaded and warmed, else 503",
    "GET /models": "the registered services and their models",
    "POST /embed": "embeddings for message=... (form) or {\"message\": ...} (JSON); options normalize, dimensions, precision, encoding",
    "POST /v1/embeddings": "OpenAI-compatible embeddings",
    "GET /v1/models": "OpenAI-compatible model list",
    "GET /documents": "the documents in the data folder",
    "GET /documents/<doc_id>": "every sentence of a document with its pages and embedding (streamed)",
    "GET /documents/<doc_id>/search?q=...&k=5": "the k sentences of a document most similar to q",
    "GET /metrics": "Prometheus metrics, over all workers",
    "GET /openapi.json": "the OpenAPI 3.1 description",
    "GET /docs": "API docs in the browser (Swagger UI, served locally)",
}
# The query parameters each endpoint takes; any other name is refused (with a did-you-mean).
# Endpoints not named here take none.
QUERY_FIELDS: dict[str, frozenset[str]] = {
    "embed": frozenset(outputs.OPTION_NAMES),
    "get_document": frozenset(outputs.OPTION_NAMES),
    "search_document": frozenset({"q", "k"}),
}
# The fields of an /embed JSON body or form.
EMBED_FIELDS = frozenset({"message", *outputs.OPTION_NAMES})
# Werkzeug's routing and body errors, in our vocabulary.
HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}


@dataclass(frozen=True)
class State:
    """What the routes need, stored on the app (app.extensions["smls"])."""

    settings: Settings
    encoder: SentenceEncoder
    batcher: MicroBatcher
    documents: DocumentEmbedder
    calibration: outputs.Calibration
    # Set by warm_up in each worker: an Event set in the master would be copied into every fork.
    ready: threading.Event = field(default_factory=threading.Event)


def create_app(settings: Settings | None = None, *, encoder: Any = None) -> Flask:
    """Build the smls Flask app; loads the model (no inference) unless an encoder is given."""
    settings = settings or Settings.from_env()
    _setup_logging(settings.log_level)
    if encoder is None:
        encoder = encoder_for(settings)
        log.info("model %s loaded from %s (%s)", encoder.name, encoder.path, settings.model_path()[1])
    app = Flask("smls")
    # "/embed/" and "/documents/" answer like "/embed" and "/documents": a redirect would only
    # make simple clients (curl without -L, Emacs url) fail.
    app.url_map.strict_slashes = False
    # "/documents//demo" is a 404 in JSON, not a 308 redirect with an HTML body.
    app.url_map.merge_slashes = False
    # Forms are parsed by smls.forms (strict UTF-8), so werkzeug's form limits play no part.
    app.config.update(MAX_CONTENT_LENGTH=settings.max_body_bytes)
    app.wsgi_app = CompleteBody(app.wsgi_app, settings.max_body_bytes)  # type: ignore[method-assign]
    streams = 1
    if getattr(encoder, "parallel_safe", False):  # stand-in encoders (tests) run one pass at a time
        streams = settings.effective_streams
        encoder.set_streams(streams)
    batcher = MicroBatcher(
        encoder,
        max_batch=settings.max_batch,
        max_wait=settings.batch_wait_ms / 1000,
        queue_size=settings.queue_size,
        streams=streams,
        on_depth=metrics.QUEUE_DEPTH.inc,
        on_batch=metrics.BATCH_SIZE.observe,
    )
    if hasattr(encoder, "on_encoded"):
        encoder.on_encoded = metrics.observe_encoded
    calibration = outputs.Calibration(encoder, settings.cache_dir)
    state = State(settings, encoder, batcher, DocumentEmbedder.from_settings(encoder, settings), calibration)
    app.extensions["smls"] = state
    app.register_error_handler(Exception, _error_response)
    _add_request_hooks(app, auth.KeyRing(settings.api_key, settings.api_key_file), settings)
    _add_routes(app, state)
    _add_openai_routes(app, state)
    _add_document_routes(app, state)
    _add_ops_routes(app, state)
    return app


def warm_up(app: Flask) -> None:
    """Run one tiny inference (and start the batcher) so the first client does not pay for it; then /ready says 200."""
    state: State = app.extensions["smls"]
    state.batcher.encode(["warm up"])
    state.ready.set()


# The routes that run the model: the ones worth shedding when requests queue up.
_INFERENCE_ENDPOINTS = frozenset({"embed", "openai_embeddings", "get_document", "search_document"})


def _add_request_hooks(app: Flask, keys: auth.KeyRing, settings: Settings) -> None:
    """API keys, load shedding, request ids on every response, and the request counters and latency histogram."""

    @app.before_request
    def start() -> None:
        g.request_id = logs.request_id(request.headers.get(logs.REQUEST_ID_HEADER))
        g.started = time.perf_counter()
        if keys.enabled and not auth.is_public(request.path):
            keys.check(request.headers.get("Authorization"))
        # Health, readiness and metrics are cheap and still answered: a flood should not make
        # a load balancer or an orchestrator think the server is dead.
        if request.endpoint in _INFERENCE_ENDPOINTS:
            _shed_if_queued_too_long(request.environ, settings)
        if request.endpoint is not None:
            query = forms.parse_query(request.environ.get("QUERY_STRING", ""))
            # Checked here, for every route, so a typo is never silently ignored; a repeated name
            # with two values is refused too (the routes then read request.args as usual).
            fields.collect([("query string", query, QUERY_FIELDS.get(request.endpoint, frozenset()))], {name: str for name, _ in query})

    @app.after_request
    def finish(response: Response) -> Response:
        if request.method == "OPTIONS" and response.status_code == 200 and not response.get_data():
            # Flask's automatic answer to OPTIONS: the Allow header, and no (HTML) body.
            response.status_code = 204
            del response.headers["Content-Type"]
        # Routing errors never reach before_request.
        response.headers[logs.REQUEST_ID_HEADER] = g.get("request_id") or logs.request_id(request.headers.get(logs.REQUEST_ID_HEADER))
        route = request.url_rule.rule if request.url_rule else "unmatched"  # bounded label values
        metrics.REQUESTS.labels(route, request.method, str(response.status_code)).inc()
        if "started" in g:
            metrics.LATENCY.labels(route).observe(time.perf_counter() - g.started)
        return response


def _shed_if_queued_too_long(environ: dict[str, Any], settings: Settings) -> None:
    """Overloaded if gunicorn's worker saw this request arrive with its queue full, or it waited out its deadline for a thread."""
    if environ.get(OVERFLOW_KEY):
        metrics.SHED.labels("queue_full").inc()
        raise Overloaded(f"this worker already has {settings.queue_size} requests waiting (SMLS_QUEUE_SIZE); retry shortly")
    waited = environ.get(QUEUE_WAIT_KEY, 0.0)
    if waited >= settings.request_timeout:
        metrics.SHED.labels("deadline").inc()
        raise Overloaded(f"this request waited {waited:.1f} s for a free thread, past SMLS_REQUEST_TIMEOUT ({settings.request_timeout:g} s); retry shortly")


def _time_left(settings: Settings) -> float:
    """What is left of this request's SMLS_REQUEST_TIMEOUT after its wait for a thread."""
    return settings.request_timeout - request.environ.get(QUEUE_WAIT_KEY, 0.0)


def json_response(payload: Any, status: int = 200) -> Response:
    """Serialise with orjson; numpy arrays go straight to JSON without .tolist()."""
    body = orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(body, status=status, mimetype="application/json")


def _add_routes(app: Flask, state: State) -> None:
    settings, encoder = state.settings, state.encoder

    @app.get("/")
    def index() -> Response:
        return json_response(
            {
                "name": "smls",
                "version": smls.__version__,
                "model": encoder.info(),
                "limits": {"max_messages": settings.max_messages, "max_body_bytes": settings.max_body_bytes},
                "endpoints": ENDPOINTS,
            }
        )

    @app.get("/health")
    def health() -> Response:
        return json_response({"status": "ok"})

    @app.post("/embed")
    def embed() -> Response:
        texts, options = _read_embed_request(settings, encoder.dimension)
        result = state.batcher.encode(texts, timeout=_time_left(settings))
        return json_response(
            {
                "model": encoder.name,
                **outputs.describe(options, encoder.dimension),
                "truncated": result.truncated,
                "embeddings": outputs.render(result.vectors, options, state.calibration),
            }
        )

    @app.get("/models")
    def models() -> Response:
        listed = []
        for service in smls.ml_services.names():
            info = encoder.info() if service == "SentenceEncoder" else {}
            listed.append(
                {
                    "service": service,
                    "name": info.get("name", service),
                    "backend": info.get("backend", "unknown"),
                    "dimension": info.get("dimension", 0),
                    "max_seq_length": info.get("max_seq_length", 0),
                    "precisions": list(outputs.PRECISIONS),
                    "encodings": list(outputs.ENCODINGS),
                    "serving": service == "SentenceEncoder",
                }
            )
        return json_response({"models": listed})


def _add_openai_routes(app: Flask, state: State) -> None:
    settings, encoder = state.settings, state.encoder

    @app.post("/v1/embeddings")
    def openai_embeddings() -> Response:
        _check_charset()
        if request.mimetype != "application/json":
            raise UnsupportedMediaType(f"content type {request.mimetype or 'none'!r} is not supported here; send application/json")
        req = openai_api.parse_request(
            request.get_data(cache=False), model_names={encoder.name}, dimension=encoder.dimension, max_messages=settings.max_messages
        )
        result = state.batcher.encode(req.texts, timeout=_time_left(settings))
        return json_response(openai_api.response(result, req.options, encoder.name))

    @app.get("/v1/models")
    def openai_models() -> Response:
        return json_response(openai_api.models_list(encoder.name))


def _add_ops_routes(app: Flask, state: State) -> None:
    encoder = state.encoder
    description = openapi.spec(encoder.name, encoder.dimension, smls.__version__, state.settings)
    static = resources.files("smls").joinpath("static", "swagger-ui")
    assets = {
        "swagger-ui-bundle.js": "application/javascript",
        "swagger-ui.css": "text/css",
        "favicon-32x32.png": "image/png",
    }

    @app.get("/ready")
    def ready() -> Response:
        if not state.ready.is_set():
            raise NotReady("this worker is still loading or warming up its model")
        return json_response({"status": "ready"})

    @app.get("/metrics")
    def metrics_page() -> Response:
        body, content_type = metrics.render()
        return Response(body, content_type=content_type)

    @app.get("/openapi.json")
    def openapi_json() -> Response:
        return json_response(description)

    @app.get("/docs")
    def docs() -> Response:
        return Response(openapi.DOCS_PAGE, mimetype="text/html")

    @app.get("/docs/static/<name>")
    def docs_static(name: str) -> Response:
        if name == "init.js":
            return Response(openapi.DOCS_INIT, mimetype="application/javascript")
        if name not in assets:  # a fixed list: no path from the client reaches the file system
            raise NotFound()
        response = Response(static.joinpath(name).read_bytes(), mimetype=assets[name])
        response.headers["Cache-Control"] = "public, max-age=86400"
        return response


def _add_document_routes(app: Flask, state: State) -> None:
    settings, encoder, embedder = state.settings, state.encoder, state.documents

    @app.get("/documents")
    def list_documents() -> Response:
        ids = documents.list_documents(settings.data_dir)
        return json_response(
            {"documents": [{"id": i, "sentences": documents.count_sentences(settings.data_dir, i)} for i in ids]}
        )

    @app.get("/documents/<doc_id>")
    def get_document(doc_id: str) -> Response:
        query = list(request.args.items(multi=True))
        options = outputs.OutputOptions(**fields.collect([("query string", query, QUERY_FIELDS["get_document"])], outputs.OutputOptions.parsers(encoder.dimension)))
        doc = documents.load_document(settings.data_dir, doc_id)
        # The cache holds full-length vectors, raw or unit-length; a cut is normalised after
        # cutting, so it starts from the raw ones.
        cached_normalized = options.normalize and options.dimensions is None
        cached = embedder.is_cached(doc, cached_normalized)
        metrics.DOCUMENTS.labels("cache" if cached else "computed").inc()
        if options.precision in outputs.CALIBRATED:
            state.calibration.ranges(options.dimensions, options.normalize)  # before the first byte, not mid-stream
        header = {
            "doc_id": doc.doc_id,
            "model": encoder.name,
            **outputs.describe(options, encoder.dimension),
            "count": len(doc.sentences),
            "cached": cached,
        }
        chunks = embedder.chunks(doc, cached_normalized)
        return Response(_stream_document(doc, chunks, options, state.calibration, header), mimetype="application/json")

    @app.get("/documents/<doc_id>/search")
    def search_document(doc_id: str) -> Response:
        query = request.args.get("q", "")
        if not query.strip():
            what = "missing" if "q" not in request.args else "empty" if not query else "only whitespace"
            raise InvalidInput(f"the query parameter q is {what}: /documents/<id>/search?q=text&k=5", code="missing_query")
        k = _int_option("k", request.args.get("k", "5"), 1, settings.search_max_k)
        doc = documents.load_document(settings.data_dir, doc_id)
        hits = embedder.search(doc, query, k)
        return json_response(
            {
                "doc_id": doc.doc_id,
                "model": encoder.name,
                "query": query,
                "k": k,
                "results": [
                    {"score": round(hit.score, 6), **documents.sentence_json(hit.index, doc.sentences[hit.index])}
                    for hit in hits
                ],
            }
        )


def _stream_document(
    doc: documents.Document,
    chunks: Iterator[tuple[int, np.ndarray]],
    options: outputs.OutputOptions,
    calibration: outputs.Calibration,
    header: dict,
) -> Iterator[bytes]:
    """One JSON object, written out a chunk of sentences at a time as they are computed."""
    yield orjson.dumps(header)[:-1] + b',"sentences":['
    separator = b"\n"
    for start, vectors in chunks:
        rendered = outputs.render(vectors, options, calibration)
        parts = [
            orjson.dumps(documents.sentence_json(start + j, doc.sentences[start + j], vector), option=orjson.OPT_SERIALIZE_NUMPY)
            for j, vector in enumerate(rendered)
        ]
        yield separator + b",\n".join(parts)
        separator = b",\n"
    yield b"\n]}\n"


def _int_option(name: str, raw: str, low: int, high: int) -> int:
    """An integer query option within [low, high], or InvalidOption."""
    try:
        value = int(raw)
    except ValueError:
        raise InvalidOption(f"option {name!r} must be an integer, got {fields.show(raw)}") from None
    if not low <= value <= high:
        raise InvalidOption(f"option {name!r} must be between {low} and {high}, got {value}")
    return value


def _read_embed_request(settings: Settings, dimension: int) -> tuple[list[str], outputs.OutputOptions]:
    """Texts and the output options from a form or JSON body (options may also be in the query)."""
    # Bodies over SMLS_MAX_BODY_BYTES never get here: werkzeug refuses them (MAX_CONTENT_LENGTH,
    # chunked ones via smls.body) and the error handler answers body_too_large.
    _check_charset()
    mimetype = request.mimetype
    body_fields: list[tuple[str, Any]]
    if mimetype == "application/json" or mimetype.endswith("+json"):
        doc = parsing.json_object(parsing.parse_json_body(request.get_data(cache=False)), '{"message": ["text"]}')
        where, body_fields = "JSON body", list(doc.items())
        fields.check_names(where, body_fields, EMBED_FIELDS)
        texts = parsing.messages_from_json(doc, settings.max_messages)
    elif mimetype == "application/x-www-form-urlencoded":
        where, body_fields = "form", forms.parse_urlencoded(request.get_data(cache=False), settings.max_messages + 16)
        fields.check_names(where, body_fields, EMBED_FIELDS)
        texts = parsing.messages_from_form([v for k, v in body_fields if k == "message"], settings.max_messages)
    elif mimetype == "multipart/form-data":
        parts = forms.parse_multipart(request.get_data(cache=False), request.mimetype_params.get("boundary", ""), settings.max_messages + 16)
        where, body_fields = "form", [(part.name, part.text()) for part in parts if part.name != "message"]
        fields.check_names(where, body_fields, EMBED_FIELDS)
        texts = parsing.messages_from_parts(parts, settings.max_messages)
    elif not mimetype and not request.content_length:
        raise MissingMessage("empty request; send message=... as a form or {\"message\": ...} as JSON")
    else:
        raise UnsupportedMediaType(
            f"content type {mimetype or 'none'!r} is not supported; send application/json, "
            "application/x-www-form-urlencoded or multipart/form-data"
        )
    query = list(request.args.items(multi=True))
    chosen = fields.collect([(where, body_fields, EMBED_FIELDS), ("query string", query, QUERY_FIELDS["embed"])], outputs.OutputOptions.parsers(dimension))
    return texts, outputs.OutputOptions(**chosen)


def _check_charset() -> None:
    """UnsupportedMediaType unless the body is declared UTF-8 (or not declared at all)."""
    charset = request.mimetype_params.get("charset", "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise UnsupportedMediaType(f"charset {charset!r} is not supported; send UTF-8")


def _error_response(exc: Exception) -> Response:
    """The one place any error becomes {"error": {"status", "code", "message"}}."""
    headers: dict[str, str] = {}
    if isinstance(exc, SmlsError):
        status, code, message = exc.status, exc.code, exc.message
        headers = dict(exc.headers)
    elif isinstance(exc, HTTPException):
        status = exc.code or 500
        code = HTTP_CODES.get(status) or ("bad_request" if status < 500 else "internal_error")
        message = _http_message(status, exc)
        headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
    else:
        log.exception("unhandled error on %s %s", request.method, request.path)
        status, code, message = 500, "internal_error", "internal server error; the server log has the details"
    if request.path.startswith("/v1/"):  # the OpenAI routes answer in OpenAI's error shape
        response = json_response(openai_api.error_body(status, code, message), status)
    else:
        response = json_response({"error": {"status": status, "code": code, "message": message}}, status)
    response.headers.update(headers)
    return response


def _http_message(status: int, exc: HTTPException) -> str:
    """Client-facing text for werkzeug's routing and protocol errors."""
    if status == 404:
        return f"no such endpoint: {request.path}; GET / lists the endpoints"
    if status == 405:
        allowed = ", ".join(exc.valid_methods or []) if hasattr(exc, "valid_methods") else ""
        return f"method {request.method} is not allowed on {request.path}; allowed: {allowed}"
    if status == 413:
        return f"the request body is larger than {request.max_content_length} bytes (SMLS_MAX_BODY_BYTES)"
    return str(exc.description or exc.name)


def _setup_logging(level: str) -> None:
    """Send smls's log lines to stderr at the configured level, once."""
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"))
        log.addHandler(handler)
        log.propagate = False
    log.setLevel(level.upper())
