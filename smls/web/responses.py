"""Response helpers shared by every area of the API."""

from __future__ import annotations

from typing import Any

import orjson
from flask import Response, current_app, request

from smls.web.state import State
from smls.worker import QUEUE_WAIT_KEY


def json_response(payload: Any, status: int = 200) -> Response:
    """Serialise with orjson; numpy arrays go straight to JSON without .tolist()."""
    body = orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(body, status=status, mimetype="application/json")


def state() -> State:
    """This app's models, batcher, settings and caches."""
    found: State = current_app.extensions["smls"]
    return found


def time_left() -> float:
    """What is left of this request's SMLS_REQUEST_TIMEOUT after its wait for a thread."""
    waited: float = request.environ.get(QUEUE_WAIT_KEY, 0.0)
    return state().settings.request_timeout - waited
