"""The HTTP layer: the app factory, the request hooks, and one blueprint per area of the API.

The path of a request (docs/reference.org has the module map):
  smls.worker (gunicorn thread, receive deadline, overflow)  -> smls.body (whole bodies only)
  -> lane.py (a small JSON POST to a fast route, on the event loop: the same steps without Flask)
  -> hooks here, with hooks.py (request id, API key, shedding, query names)  -> a blueprint's view:
     embed.py /embed, openai.py /v1/..., rerank.py /rerank, documents.py /documents/..., ops.py the rest
  -> state.py picks the model the request names (the default if none) from smls.serving
  -> smls.batching (that model's shared forward passes) -> smls.encoders -> smls.outputs -> JSON
Any error on the way becomes a response in errors.py, the one place that does so.
The table of routes is endpoints.py.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from flask import Flask, Response, g, request

from smls import auth, logs, memory, metrics
from smls.body import CompleteBody
from smls.config import Settings
from smls.contract import FAST_PATHS_KEY
from smls.encoders import Encoder, PairScorer
from smls.errors import Overloaded
from smls.serving import engine
from smls.web import documents, embed, hooks, openai, ops, rerank, responses, tokens
from smls.web.endpoints import BY_ENDPOINT, fast_answers
from smls.web.errors import error_response
from smls.web.lane import Lane
from smls.web.openapi import spec
from smls.web.state import State, TransferSlots

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
    # Search indexes are read here, in the master: the workers share their pages until they change them.
    served = engine.build(settings, models)
    app = Flask("smls", static_folder=None)  # Swagger UI's files are served by ops.docs_static
    # "/embed/" and "/documents/" answer like "/embed" and "/documents": a redirect would only
    # make simple clients (curl without -L, Emacs url) fail.
    app.url_map.strict_slashes = False
    # "/documents//demo" is a 404 in JSON, not a 308 redirect with an HTML body.
    app.url_map.merge_slashes = False
    # Forms are parsed by smls.forms (strict UTF-8), so werkzeug's form limits play no part.
    app.config.update(MAX_CONTENT_LENGTH=settings.max_body_bytes)  # uploads: SMLS_MAX_UPLOAD_BYTES, set in _before
    app.extensions["smls"] = State(
        engine=served,
        keys=auth.KeyRing(settings.api_key, settings.api_key_file),
        description=spec(list(served.models.values()), served.default, settings),
        transfers=TransferSlots(settings.effective_threads),
    )
    state: State = app.extensions["smls"]
    app.wsgi_app = CompleteBody(Lane(app.wsgi_app, state), max(settings.max_body_bytes, settings.max_upload_bytes))  # type: ignore[method-assign]
    app.register_error_handler(Exception, error_response)
    app.before_request(_before)
    app.after_request(_after)
    for area in (embed, openai, rerank, tokens, documents, ops):
        app.register_blueprint(area.blueprint)
    # The routes whose small requests gunicorn's worker answers on its event loop (smls.contract).
    app.config[FAST_PATHS_KEY] = frozenset(rule.encode() for rule in fast_answers())
    return app


def warm_up(app: Flask) -> None:
    """Run one tiny inference through every model (starting the batchers) so the first client does not pay for it; then /ready says 200."""
    state: State = app.extensions["smls"]
    state.engine.warm_up()
    state.engine.follow_store()  # other instances change what the search indexes hold: follow them as they do
    memory.trim()
    state.trimmer.start()
    state.ready.set()


def _before() -> None:
    """Request id and start time; the checks every request meets (hooks.before); then an upload's body limit and a transfer's slot."""
    g.request_id = logs.request_id(request.headers.get(logs.REQUEST_ID_HEADER))
    g.started = time.perf_counter()
    state = responses.state()
    endpoint = BY_ENDPOINT.get(request.endpoint or "")
    hooks.before(state, endpoint, request.environ)
    if endpoint is None:
        return  # no such route: the error handler answers 404 or 405
    if endpoint.upload:
        request.max_content_length = state.settings.max_upload_bytes
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
