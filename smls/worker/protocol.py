"""gunicorn's answers to requests it cannot parse, in smls's JSON error shape instead of HTML."""

from __future__ import annotations

import socket

import orjson
from gunicorn import util

from smls.errors import error_body, protocol_code
from smls.logs import REQUEST_ID_HEADER, request_id


def write_json_error(sock: socket.socket, status: int, reason: str, message: str) -> None:
    """Answer an HTTP request gunicorn could not parse, as {"error": {"status", "code", "message"}}."""
    body = orjson.dumps(error_body(status, protocol_code(status), message or reason))
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{REQUEST_ID_HEADER}: {request_id(None)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)


def answer_protocol_errors_in_json() -> None:
    """From now on (in this worker process), gunicorn's protocol errors are written by write_json_error.

    gunicorn's handle_error picks the status and message and then calls util.write_error;
    replacing that one function keeps gunicorn's choice of status.
    """
    util.write_error = write_json_error
