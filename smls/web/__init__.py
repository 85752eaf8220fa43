"""The HTTP layer: the app factory, the request hooks, and one blueprint per area of the API.

The path of a request (README.org has the map):
  smls.worker (gunicorn thread, receive deadline, overflow)  -> smls.body (whole bodies only)
  -> hooks here (request id, API key, shedding, query names)  -> a blueprint's view:
     embed.py /embed, openai.py /v1/..., documents.py /documents/..., ops.py the rest
  -> smls.batching (shared forward passes) -> smls.encoders -> smls.outputs -> JSON
Any error on the way becomes a response in errors.py, the one place that does so.
The table of routes is endpoints.py.
"""

from __future__ import annotations

import logging
import time

from flask import Flask, Response, g, request

from smls import auth, fields, forms, logs, metrics, outputs
from smls.batching import MicroBatcher
from smls.body import CompleteBody
from smls.config import Settings
from smls.doc_vectors import DocumentEmbedder
from smls.encoders import Encoder, encoder_for
from smls.errors import Overloaded
from smls.web import documents, embed, openai, ops, responses
from smls.web.endpoints import BY_ENDPOINT
from smls.web.errors import error_response
from smls.web.openapi import spec
from smls.web.state import State
from smls.worker import OVERFLOW_KEY, QUEUE_WAIT_KEY

log = logging.getLogger("smls")

__all__ = ["State", "create_app", "warm_up"]


def create_app(settings: Settings | None = None, *, encoder: Encoder | None = None) -> Flask:
    """Build the smls Flask app; loads the model (no inference) unless an encoder is given."""
    settings = settings or Settings.from_env()
    _setup_logging(settings.log_level)
    if encoder is None:
        encoder = encoder_for(settings)
        log.info("model %s loaded from %s (%s)", encoder.name, encoder.path, settings.model_path()[1])
    app = Flask("smls", static_folder=None)  # Swagger UI's files are served by ops.docs_static
    # "/embed/" and "/documents/" answer like "/embed" and "/documents": a redirect would only
    # make simple clients (curl without -L, Emacs url) fail.
    app.url_map.strict_slashes = False
    # "/documents//demo" is a 404 in JSON, not a 308 redirect with an HTML body.
    app.url_map.merge_slashes = False
    # Forms are parsed by smls.forms (strict UTF-8), so werkzeug's form limits play no part.
    app.config.update(MAX_CONTENT_LENGTH=settings.max_body_bytes)
    app.wsgi_app = CompleteBody(app.wsgi_app, settings.max_body_bytes)  # type: ignore[method-assign]
    streams = settings.effective_streams if encoder.parallel_safe else 1
    encoder.set_streams(streams)
    encoder.on_encoded = metrics.observe_encoded
    batcher = MicroBatcher(
        encoder,
        max_batch=settings.max_batch,
        max_wait=settings.batch_wait_ms / 1000,
        queue_size=settings.queue_size,
        streams=streams,
        on_depth=metrics.QUEUE_DEPTH.inc,
        on_batch=metrics.BATCH_SIZE.observe,
    )
    app.extensions["smls"] = State(
        settings=settings,
        encoder=encoder,
        batcher=batcher,
        documents=DocumentEmbedder.from_settings(encoder, settings),
        calibration=outputs.Calibration(encoder, settings.cache_dir),
        keys=auth.KeyRing(settings.api_key, settings.api_key_file),
        description=spec(encoder.name, encoder.dimension, settings),
    )
    app.register_error_handler(Exception, error_response)
    app.before_request(_before)
    app.after_request(_after)
    for area in (embed, openai, documents, ops):
        app.register_blueprint(area.blueprint)
    return app


def warm_up(app: Flask) -> None:
    """Run one tiny inference (and start the batcher) so the first client does not pay for it; then /ready says 200."""
    state: State = app.extensions["smls"]
    state.batcher.encode(["warm up"])
    state.ready.set()


def _before() -> None:
    """Request id, API key, shedding under overload, and the query string's names, in that order."""
    g.request_id = logs.request_id(request.headers.get(logs.REQUEST_ID_HEADER))
    g.started = time.perf_counter()
    state = responses.state()
    endpoint = BY_ENDPOINT.get(request.endpoint or "")
    if state.keys.enabled and not (endpoint and endpoint.public):
        state.keys.check(request.headers.get("Authorization"))
    if endpoint is None:
        return  # no such route: the error handler answers 404 or 405
    # Health, readiness and metrics are cheap and still answered: a flood should not make a
    # load balancer or an orchestrator think the server is dead.
    if endpoint.model:
        _shed_if_queued_too_long(state.settings)
    # Checked for every route, so a typo is never silently ignored; a name repeated with two
    # values is refused too (the views then read request.args as usual).
    query = forms.parse_query(request.environ.get("QUERY_STRING", ""))
    fields.collect([("query string", query, endpoint.query)], {name: str for name, _ in query})


def _after(response: Response) -> Response:
    """OPTIONS without a body; the request id on every response; request counters and latency."""
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


def _shed_if_queued_too_long(settings: Settings) -> None:
    """Overloaded if gunicorn's worker saw this request arrive with its queue full, or it waited out its deadline for a thread."""
    if request.environ.get(OVERFLOW_KEY):
        metrics.SHED.labels("queue_full").inc()
        raise Overloaded(f"this worker already has {settings.queue_size} requests waiting (SMLS_QUEUE_SIZE); retry shortly")
    waited = request.environ.get(QUEUE_WAIT_KEY, 0.0)
    if waited >= settings.request_timeout:
        metrics.SHED.labels("deadline").inc()
        raise Overloaded(f"this request waited {waited:.1f} s for a free thread, past SMLS_REQUEST_TIMEOUT ({settings.request_timeout:g} s); retry shortly")


def _setup_logging(level: str) -> None:
    """Send smls's log lines to stderr at the configured level, once."""
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"))
        log.addHandler(handler)
        log.propagate = False
    log.setLevel(level.upper())
