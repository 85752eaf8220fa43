"""The event loop's lane: the commonest small model requests, answered without Flask.

A one-sentence /embed answered on a worker's event loop spent about 0.4 ms of its 6 ms
in Flask's own machinery (the request context and its proxies, the dispatch of the
hooks and the view, the Response object), where a c=1 client waits for every part of it
(docs/benchmarks.org, "The lane"). The requests this lane takes are answered by the very
functions the Flask path uses, called directly:

  which       answered on the worker's event loop (smls.inline in the environ: all of
              it is received), a POST to a route the table marks fast (/embed,
              /v1/embeddings, /rerank and its aliases), Content-Type application/json,
              a body within SMLS_MAX_BODY_BYTES, no query string;
  before      the request id, then hooks.before, the very checks Flask's _before runs;
  the answer  the route's answer outside Flask (endpoints.register's `fast`), which its view calls too;
  errors      smls.web.errors.error_parts, as Flask's error handler;
  after       the request id header, the counters and the latency (smls.web.hooks).

Every other request goes on to Flask. tests/test_lane.py checks that both ways give the
same answers, byte for byte, for every fast route of the table.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.http import HTTP_STATUS_CODES

from smls import logs, metrics
from smls.afterwards import later
from smls.body import WSGIApp
from smls.contract import INLINE_KEY
from smls.web import hooks
from smls.web.endpoints import Endpoint, FastAnswer, fast_answers
from smls.web.errors import error_parts
from smls.web.responses import json_bytes
from smls.web.state import LANE_MODEL, State

_REQUEST_ID = "HTTP_" + logs.REQUEST_ID_HEADER.upper().replace("-", "_")


class Lane:
    """WSGI middleware: the requests described above answered here; any other goes on to `app` (Flask)."""

    def __init__(self, app: WSGIApp, state: State) -> None:
        self.app, self.state = app, state
        self.routes: dict[str, tuple[Endpoint, FastAnswer]] = fast_answers()
        for rule in self.routes:
            metrics.LANE.labels(rule)  # (each route's count shows from the start, at 0)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        route = self.routes.get(environ.get("PATH_INFO", "")) if environ.get(INLINE_KEY) is True else None
        if route is None or not self._plain(environ):
            return self.app(environ, start_response)
        return self._answer(*route, environ, start_response)

    def _plain(self, environ: dict[str, Any]) -> bool:
        """POST, a JSON body of at most SMLS_MAX_BODY_BYTES, no query string (anything else is Flask's to answer or refuse)."""
        length = environ.get("CONTENT_LENGTH") or ""
        return (
            environ.get("REQUEST_METHOD") == "POST"
            and environ.get("CONTENT_TYPE") == "application/json"
            and not environ.get("QUERY_STRING")
            and length.isdigit()
            and 0 < int(length) <= self.state.settings.max_body_bytes
        )

    def _answer(self, endpoint: Endpoint, answer: FastAnswer, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        started = time.perf_counter()
        request_id = logs.request_id(environ.get(_REQUEST_ID))
        LANE_MODEL.set("")
        status, headers = 200, dict[str, str]()
        try:
            hooks.before(self.state, endpoint, environ)
            data = environ["wsgi.input"].read()  # whole, or IncompleteBody (smls.body)
            payload = answer(self.state, data, hooks.time_left(self.state.settings, environ), request_id)
        except Exception as exc:  # as Flask's error handler takes them
            status, payload, headers = error_parts(exc, "POST", endpoint.rule)
        body = json_bytes(payload)
        hooks.count(self.state, endpoint.rule, "POST", status, LANE_MODEL.get(), started)
        later(metrics.inc, metrics.LANE, endpoint.rule)
        start_response(
            f"{status} {HTTP_STATUS_CODES.get(status, 'UNKNOWN').upper()}",
            [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *headers.items(), (logs.REQUEST_ID_HEADER, request_id)],
        )
        return [body]
