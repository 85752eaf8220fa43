"""What every request meets before and after its view, written once for both ways a request is answered.

Flask's hooks (smls.web: _before, _after) and the event loop's lane (smls.web.lane, for
the requests it answers without Flask) both run `before`, which runs BEFORE in order, and
`count` after the answer. Flask alone then sets an upload's body limit and takes a
transfer's slot: no fast route takes an upload or a transfer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from smls import fields, forms, metrics
from smls.afterwards import later
from smls.config import Settings
from smls.contract import OVERFLOW_KEY, QUEUE_WAIT_KEY
from smls.errors import Overloaded
from smls.web.endpoints import Endpoint
from smls.web.state import State

Hook = Callable[[State, Endpoint, Mapping[str, Any]], None]


def before(state: State, endpoint: Endpoint | None, environ: Mapping[str, Any]) -> None:
    """Every check a request meets before its view, in order: the API key (for any path, so a wrong key never learns which routes exist), then BEFORE."""
    check_key(state, endpoint, environ)
    if endpoint is None:
        return  # no such route: the error handler answers 404 or 405
    for hook in BEFORE:
        hook(state, endpoint, environ)


def check_key(state: State, endpoint: Endpoint | None, environ: Mapping[str, Any]) -> None:
    """Unauthorized unless API keys are off, the route is public, or the Authorization header carries a valid key."""
    if state.keys.enabled and not (endpoint and endpoint.public):
        state.keys.check(environ.get("HTTP_AUTHORIZATION"))


def shed(state: State, endpoint: Endpoint, environ: Mapping[str, Any]) -> None:
    """A model route is shed first under overload. Health, readiness and metrics are cheap and still answered: a flood should
    not make a load balancer or an orchestrator think the server is dead."""
    if endpoint.model:
        shed_if_queued_too_long(state.settings, environ)


def check_query(state: State, endpoint: Endpoint, environ: Mapping[str, Any]) -> None:
    """Every query string is checked, so a typo is never silently ignored; a name repeated with two values is refused too."""
    raw = environ.get("QUERY_STRING", "")
    if raw:  # (the views then read request.args as usual)
        query = forms.parse_query(raw)
        fields.collect([("query string", query, endpoint.query)], {name: str for name, _ in query})


BEFORE: tuple[Hook, ...] = (shed, check_query)


def shed_if_queued_too_long(settings: Settings, environ: Mapping[str, Any]) -> None:
    """Overloaded if gunicorn's worker saw this request arrive with its queue full, or it waited out its deadline for a thread."""
    if environ.get(OVERFLOW_KEY):
        metrics.SHED.labels("queue_full").inc()
        raise Overloaded(f"this worker already has {settings.queue_size} requests waiting (SMLS_QUEUE_SIZE); retry shortly")
    waited = environ.get(QUEUE_WAIT_KEY, 0.0)
    if waited >= settings.request_timeout:
        metrics.SHED.labels("deadline").inc()
        raise Overloaded(f"this request waited {waited:.1f} s for a free thread, past SMLS_REQUEST_TIMEOUT ({settings.request_timeout:g} s); retry shortly")


def time_left(settings: Settings, environ: Mapping[str, Any]) -> float:
    """What is left of this request's SMLS_REQUEST_TIMEOUT after its wait for a thread."""
    waited: float = environ.get(QUEUE_WAIT_KEY, 0.0)
    return settings.request_timeout - waited


def count(state: State, route: str, method: str, status: int, model: str, started: float | None) -> None:
    """A request answered: the worker is not idle, and the request counters and latency (since `started`, a perf_counter) go up."""
    state.trimmer.touch()
    later(_count, route, method, str(status), model, None if started is None else time.perf_counter() - started)


def _count(route: str, method: str, status: str, model: str, seconds: float | None) -> None:
    metrics.inc(metrics.REQUESTS, route, method, status, model)
    if seconds is not None:
        metrics.observe(metrics.LATENCY, seconds, route)
