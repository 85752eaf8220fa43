"""Domain errors: each carries its HTTP status and a stable machine-readable code.

This module imports nothing from the web layer, so the library can raise these
errors in-process and the server maps them to one JSON shape in one place.
"""

from __future__ import annotations

from typing import Any


class SmlsError(Exception):
    """Base of every error smls reports to a client."""

    status: int = 500
    code: str = "internal_error"
    headers: dict[str, str] = {}

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status


class InvalidInput(SmlsError):
    """The request is well-formed HTTP but its content is wrong."""

    status = 400
    code = "invalid_message"


class MissingMessage(InvalidInput):
    """The request carries no `message` at all."""

    code = "missing_message"


class InvalidEncoding(InvalidInput):
    """The body is not valid UTF-8."""

    code = "invalid_encoding"


class InvalidText(InvalidInput):
    """A message that is not valid Unicode text (a lone surrogate), named by its index."""

    code = "invalid_text"


class InvalidOption(InvalidInput):
    """An option such as `normalize` has a value we do not understand."""

    code = "invalid_option"


class UnknownField(InvalidInput):
    """A field or query parameter the route does not know (a typo is refused, not ignored)."""

    code = "unknown_field"


class ConflictingOption(InvalidOption):
    """One option given two different values (query and body, or repeated)."""

    code = "conflicting_option"


class IncompleteBody(SmlsError):
    """The body ended before its Content-Length (or its last chunk): nothing of it is used."""

    status = 400
    code = "incomplete_body"


class RequestTimeout(SmlsError):
    """The body did not arrive within SMLS_CLIENT_TIMEOUT."""

    status = 408
    code = "request_timeout"


class TooManyMessages(SmlsError):
    """More messages in one request than SMLS_MAX_MESSAGES allows."""

    status = 413
    code = "too_many_messages"


class UnsupportedMediaType(SmlsError):
    """The body's content type is not one we parse."""

    status = 415
    code = "unsupported_media_type"


class Overloaded(SmlsError):
    """The worker's queue is full, or a request waited past its deadline: try again shortly."""

    status = 503
    code = "overloaded"
    headers = {"Retry-After": "1"}

    @classmethod
    def no_result_within(cls, timeout: float) -> Overloaded:
        """A request whose pass did not start (or end) within its SMLS_REQUEST_TIMEOUT."""
        return cls(f"no result within {timeout:g} s (SMLS_REQUEST_TIMEOUT); retry shortly")


class UnknownService(SmlsError, KeyError):
    """`ml_services.get` was asked for a name nobody registered."""

    status = 404
    code = "unknown_service"

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.message


class StartupError(SmlsError, RuntimeError):
    """Configuration or model problems found before serving.

    It is a RuntimeError so that gunicorn prints it as one `Error: ...` line
    and exits instead of printing a traceback.
    """

    status = 500
    code = "startup_error"


class InvalidDocId(SmlsError):
    """A document id that is not a plain name."""

    status = 400
    code = "invalid_doc_id"


class DocumentNotFound(SmlsError):
    """No texts_<id>.json / pages_<id>.csv pair in the data folder."""

    status = 404
    code = "document_not_found"


class DocumentConflict(SmlsError):
    """An upload or delete aimed at a document that lives as files in the data folder."""

    status = 409
    code = "document_conflict"


class InvalidDocument(SmlsError):
    """A document's files exist but are malformed; the message names the file and the item or row."""

    status = 422
    code = "invalid_document"


class StoreUnavailable(SmlsError):
    """The document store (PostgreSQL) cannot be reached or failed; the request can be retried."""

    status = 503
    code = "store_unavailable"
    headers = {"Retry-After": "1"}


class ModelNotFound(SmlsError):
    """The request names a model this server does not serve."""

    status = 404
    code = "model_not_found"


class WrongModelKind(InvalidInput):
    """The request names a served model of the wrong kind (a cross-encoder where embeddings are asked for)."""

    code = "wrong_model_kind"


class NotReady(SmlsError):
    """This worker has not loaded and warmed its model yet."""

    status = 503
    code = "not_ready"
    headers = {"Retry-After": "1"}


class Unauthorized(SmlsError):
    """No API key, or a wrong one, where one is needed."""

    status = 401
    code = "unauthorized"

    def __init__(self, message: str, *, error: str | None = "invalid_token") -> None:
        super().__init__(message)
        # RFC 6750: a request without credentials gets the bare challenge, a bad key an error code.
        self.headers = {"WWW-Authenticate": 'Bearer realm="smls"' + (f', error="{error}"' if error else "")}


# Codes for the errors that come from the HTTP layers rather than from smls: werkzeug's
# routing and body checks, and gunicorn's parser (gunicorn.workers.base.handle_error).
# docs/reference.org's error table lists them with the rest, and a test keeps the two in step.
ROUTING_CODES = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}
PROTOCOL_CODES = {
    400: "bad_http_request",
    414: "uri_too_long",
    417: "expectation_failed",
    431: "headers_too_large",
    500: "internal_error",
    501: "unsupported_transfer_coding",
}


def routing_code(status: int) -> str:
    """The code of a werkzeug HTTP error (bad_request or internal_error for any status not listed)."""
    return ROUTING_CODES.get(status) or ("bad_request" if status < 500 else "internal_error")


def protocol_code(status: int) -> str:
    """The code of a request gunicorn's parser refused."""
    return PROTOCOL_CODES.get(status, "bad_http_request")


def error_body(status: int, code: str, message: str, *, openai: bool = False) -> dict[str, Any]:
    """The one error shape, {"error": {"status", "code", "message"}}; OpenAI's {"message", "type", "param", "code"} on /v1/."""
    if not openai:
        return {"error": {"status": status, "code": code, "message": message}}
    kind = "invalid_request_error"
    if status == 401:
        kind = "authentication_error"
    elif status == 429:
        kind = "rate_limit_error"
    elif status >= 500:
        kind = "server_error"
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}
