"""The HTTP layer: the app factory, the request hooks, and one blueprint per area of the API.

The path of a request (README.org has the map):
  smls.worker (gunicorn thread, receive deadline, overflow)  -> smls.body (whole bodies only)
  -> lane.py (a small JSON /embed or /v1/embeddings on the event loop: the same steps without Flask)
  -> hooks here, with hooks.py (request id, API key, shedding, query names)  -> a blueprint's view:
     embed.py /embed, openai.py /v1/..., rerank.py /rerank, documents.py /documents/..., ops.py the rest
  -> state.py picks the model the request names (the default if none)
  -> smls.batching (that model's shared forward passes) -> smls.encoders -> smls.outputs -> JSON
Any error on the way becomes a response in errors.py, the one place that does so.
The table of routes is endpoints.py.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from flask import Flask, Response, g, request

from smls import auth, fields, forms, logs, memory, metrics, outputs
from smls.batching import MicroBatcher
from smls.body import CompleteBody
from smls.config import Settings
from smls.doc_vectors import DocumentEmbedder
from smls.encoders import Budget, Encoder, PairScorer, load_model
from smls.errors import Overloaded, StartupError
from smls.index import SearchIndex
from smls.library import Library
from smls.search import CrossSearch
from smls.store import is_postgres, open_store, open_vectors
from smls.web import documents, embed, hooks, openai, ops, rerank, responses
from smls.web.endpoints import BY_ENDPOINT
from smls.web.errors import error_response
from smls.web.lane import Lane
from smls.web.openapi import spec
from smls.web.state import EmbeddingModel, ScoringModel, Served, State, TransferSlots

log = logging.getLogger("smls")

__all__ = ["State", "create_app", "warm_up"]


def create_app(
    settings: Settings | None = None, *, encoder: Encoder | None = None, models: Mapping[str, Encoder | PairScorer] | None = None
) -> Flask:
    """Build the smls Flask app; loads every model of the settings (no inference) unless `models` (or one `encoder`) are given.

    `models` maps names to loaded models in the order they are listed; the first is the default.
    """
    settings = settings or Settings.from_env()
    _setup_logging(settings.log_level)
    if encoder is not None:
        models = {encoder.name: encoder}
    if models is None:
        models = {}
        for entry in settings.catalog().models:
            models[entry.name] = load_model(entry, settings)
            log.info("model %s (%s) loaded from %s (%s)", entry.name, entry.kind, entry.path, entry.origin)
    app = Flask("smls", static_folder=None)  # Swagger UI's files are served by ops.docs_static
    # "/embed/" and "/documents/" answer like "/embed" and "/documents": a redirect would only
    # make simple clients (curl without -L, Emacs url) fail.
    app.url_map.strict_slashes = False
    # "/documents//demo" is a 404 in JSON, not a 308 redirect with an HTML body.
    app.url_map.merge_slashes = False
    # Forms are parsed by smls.forms (strict UTF-8), so werkzeug's form limits play no part.
    app.config.update(MAX_CONTENT_LENGTH=settings.max_body_bytes)  # uploads: SMLS_MAX_UPLOAD_BYTES, set in _before
    library = Library(open_store(settings.store, settings.data_dir), settings.data_dir)
    served = _serve(models, settings, library)
    default = settings.default_model if settings.default_model in served else next(m.name for m in served.values() if isinstance(m, EmbeddingModel))
    app.extensions["smls"] = State(
        settings=settings,
        library=library,
        models=served,
        default=default,
        keys=auth.KeyRing(settings.api_key, settings.api_key_file),
        description=spec(list(served.values()), default, settings),
        transfers=TransferSlots(settings.effective_threads),
    )
    state: State = app.extensions["smls"]
    app.wsgi_app = CompleteBody(Lane(app.wsgi_app, state), max(settings.max_body_bytes, settings.max_upload_bytes))  # type: ignore[method-assign]
    app.register_error_handler(Exception, error_response)
    app.before_request(_before)
    app.after_request(_after)
    for area in (embed, openai, rerank, documents, ops):
        app.register_blueprint(area.blueprint)
    return app


def _serve(models: Mapping[str, Encoder | PairScorer], settings: Settings, library: Library) -> dict[str, Served]:
    """Each model with what serving it takes: embedding models get a batch queue, document vectors and int8 ranges.

    Every model may run its own passes, but all of them together hold at most the worker's
    SMLS_INFERENCE_STREAMS at once (one budget), so two busy models never oversubscribe the
    cores. With one model the budget would only repeat the model's own limit.
    """
    streams = settings.effective_streams
    budget = Budget(streams) if len(models) > 1 else None
    cache = open_vectors(settings.store, settings.cache_dir)
    served: dict[str, Served] = {}
    for name, model in models.items():
        hooks = metrics.ModelMetrics(name)
        model.on_encoded = hooks.observe_encoded
        if model.kind == "cross-encoder":
            model.set_streams(1, budget)
            served[name] = ScoringModel(name, model)
            continue
        encoder = model
        own = streams if encoder.parallel_safe else 1
        encoder.set_streams(own, budget)
        batcher = MicroBatcher(
            encoder,
            max_batch=settings.max_batch,
            max_wait=settings.batch_wait_ms / 1000,
            queue_size=settings.queue_size,
            streams=own,
            piece_size=encoder.batch_size,
            direct=budget is None,
            on_depth=hooks.queue_depth,
            on_batch=hooks.batch_size,
            on_shed=metrics.SHED.labels("deadline").inc,
        )
        documents_ = DocumentEmbedder(batcher, cache, settings.doc_batch, settings.request_timeout)
        # Loaded here, in the master: the workers share its pages until they change them.
        index = SearchIndex(cache, documents_.index_name, encoder.dimension, settings.cache_dir / "index")
        index.load()
        search = CrossSearch(library, documents_, index, settings.request_timeout, shared=is_postgres(settings.store))
        served[name] = EmbeddingModel(name, encoder, batcher, documents_, search, outputs.Calibration(encoder, settings.cache_dir))
    if not any(isinstance(m, EmbeddingModel) for m in served.values()):
        raise StartupError("no embedding model to serve; /embed, /v1/embeddings and /documents need one")
    return served


def warm_up(app: Flask) -> None:
    """Run one tiny inference through every model (starting the batchers) so the first client does not pay for it; then /ready says 200."""
    state: State = app.extensions["smls"]
    for model in state.models.values():
        if isinstance(model, EmbeddingModel):
            model.batcher.encode(["warm up"])
        else:
            model.scorer.score("warm up", ["warm up"])
    if is_postgres(state.settings.store):
        # Other instances change what the search indexes hold: follow them as they do.
        from smls.store.postgres import listen

        indexes = [m.search.index for m in state.embedders]

        def follow() -> None:
            for index in indexes:
                index.sync()

        listen(str(state.settings.store), follow)
    memory.trim()
    state.trimmer.start()
    state.ready.set()


def _before() -> None:
    """Request id, API key, shedding under overload, the query string's names and a transfer's slot, in that order."""
    g.request_id = logs.request_id(request.headers.get(logs.REQUEST_ID_HEADER))
    g.started = time.perf_counter()
    state = responses.state()
    endpoint = BY_ENDPOINT.get(request.endpoint or "")
    hooks.check_key(state, endpoint, request.headers.get("Authorization"))
    if endpoint is None:
        return  # no such route: the error handler answers 404 or 405
    if endpoint.upload:
        request.max_content_length = state.settings.max_upload_bytes
    # Health, readiness and metrics are cheap and still answered: a flood should not make a
    # load balancer or an orchestrator think the server is dead.
    if endpoint.model:
        hooks.shed_if_queued_too_long(state.settings, request.environ)
    # Checked for every route, so a typo is never silently ignored; a name repeated with two
    # values is refused too (the views then read request.args as usual).
    query = forms.parse_query(request.environ.get("QUERY_STRING", ""))
    fields.collect([("query string", query, endpoint.query)], {name: str for name, _ in query})
    if endpoint.transfer:
        try:
            g.transfer = state.transfers.take()  # given back by _after, once the response is out
        except Overloaded:
            metrics.SHED.labels("transfers").inc()
            raise


def _after(response: Response) -> Response:
    """A transfer's slot given back once sent; OPTIONS without a body; the request id on every response; counters and latency."""
    lease = g.pop("transfer", None)
    if lease is not None:
        if response.is_streamed:
            # A document streams long after this hook: the slot is given back after its last
            # part, or when gunicorn closes the response (the client went away, or it was never
            # iterated), whichever comes first.
            response.response = lease.until_sent(response.response)
            response.call_on_close(lease.give_back)
        else:
            lease.give_back()  # an upload's summary or an error: the body is already whole
    if request.method == "OPTIONS" and response.status_code == 200 and not response.get_data():
        # Flask's automatic answer to OPTIONS: the Allow header, and no (HTML) body.
        response.status_code = 204
        del response.headers["Content-Type"]
    # Routing errors never reach before_request.
    response.headers[logs.REQUEST_ID_HEADER] = g.get("request_id") or logs.request_id(request.headers.get(logs.REQUEST_ID_HEADER))
    route = request.url_rule.rule if request.url_rule else "unmatched"  # bounded label values
    hooks.count(responses.state(), route, request.method, response.status_code, g.get("model", ""), g.get("started"))
    return response


def _setup_logging(level: str) -> None:
    """Send smls's log lines to stderr at the configured level, once."""
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"))
        log.addHandler(handler)
        log.propagate = False
    log.setLevel(level.upper())
