"""The one place any error becomes an HTTP response: {"error": {...}}, or OpenAI's shape under /v1/."""

from __future__ import annotations

import logging
from typing import Any

from flask import Response, request
from werkzeug.exceptions import HTTPException

from smls.errors import SmlsError, error_body, routing_code
from smls.web.endpoints import BY_ENDPOINT
from smls.web.responses import json_response

log = logging.getLogger("smls")


def error_response(exc: Exception) -> Response:
    """Map a domain error, a werkzeug routing or body error, or a bug to one JSON response."""
    if isinstance(exc, HTTPException):
        status = exc.code or 500
        body = error_body(status, routing_code(status), _http_message(status, exc), openai=request.path.startswith("/v1/"))
        headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
    else:
        status, body, headers = error_parts(exc, request.method, request.path)
    response = json_response(body, status)
    response.headers.update(headers)
    return response


def error_parts(exc: Exception, method: str, path: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    """The status, JSON body and extra headers for a domain error, or for a bug (logged with its traceback).

    Also used outside Flask, by the event loop's lane (smls.web.lane).
    """
    if isinstance(exc, SmlsError):
        status, code, message, headers = exc.status, exc.code, exc.message, dict(exc.headers)
    else:
        log.error("unhandled error on %s %s", method, path, exc_info=exc)
        status, code, message, headers = 500, "internal_error", "internal server error; the server log has the details", {}
    return status, error_body(status, code, message, openai=path.startswith("/v1/")), headers


def _http_message(status: int, exc: HTTPException) -> str:
    """Client-facing text for werkzeug's routing and protocol errors."""
    if status == 404:
        return f"no such endpoint: {request.path}; GET / lists the endpoints"
    if status == 405:
        allowed = ", ".join(sorted(getattr(exc, "valid_methods", None) or []))  # a set: sorted, so the text is stable
        return f"method {request.method} is not allowed on {request.path}; allowed: {allowed}"
    if status == 413:
        endpoint = BY_ENDPOINT.get(request.endpoint or "")
        setting = "SMLS_MAX_UPLOAD_BYTES" if endpoint and endpoint.upload else "SMLS_MAX_BODY_BYTES"
        return f"the request body is larger than {request.max_content_length} bytes ({setting})"
    return str(exc.description or exc.name)
