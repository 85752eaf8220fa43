"""What every request meets before and after its view, written once for both ways a request is answered.

Flask's hooks (smls.web: _before, _after) call these for every request; the event loop's
lane (smls.web.lane) calls them for the requests it answers without Flask.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from smls import metrics
from smls.afterwards import later
from smls.config import Settings
from smls.errors import Overloaded
from smls.web.endpoints import Endpoint
from smls.web.state import State
from smls.worker import OVERFLOW_KEY, QUEUE_WAIT_KEY


def check_key(state: State, endpoint: Endpoint | None, authorization: str | None) -> None:
    """Unauthorized unless API keys are off, the route is public, or `authorization` carries a valid key."""
    if state.keys.enabled and not (endpoint and endpoint.public):
        state.keys.check(authorization)


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
