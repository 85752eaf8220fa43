"""Response helpers shared by every area of the API."""

from __future__ import annotations

from typing import Any

import orjson
from flask import Response, current_app, request

from smls.web import hooks
from smls.web.state import State


def json_response(payload: Any, status: int = 200) -> Response:
    """Serialise with orjson; numpy arrays go straight to JSON without .tolist()."""
    return Response(json_bytes(payload), status=status, mimetype="application/json")


def json_bytes(payload: Any) -> bytes:
    """`payload` as JSON, by orjson (numpy arrays included)."""
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)


def state() -> State:
    """This app's models, batcher, settings and caches."""
    found: State = current_app.extensions["smls"]
    return found


def time_left() -> float:
    """What is left of this request's SMLS_REQUEST_TIMEOUT after its wait for a thread."""
    return hooks.time_left(state().settings, request.environ)
