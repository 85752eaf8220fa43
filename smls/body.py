"""Request bodies are used whole or not at all.

gunicorn marks its input as terminated (wsgi.input_terminated), so werkzeug reads it as
it comes: a body that ends before its Content-Length (the client shut its side, or the
connection dropped) would be parsed as if it were complete, and one cut off by
SMLS_CLIENT_TIMEOUT surfaced as werkzeug's generic 400. `CompleteBody` wraps the input
so that reading such a body raises IncompleteBody (400) or RequestTimeout (408) inside
the app, where the one error handler answers it, before any of it is used.

A chunked body has no Content-Length, and werkzeug stops reading one at
MAX_CONTENT_LENGTH without an error: it is read here (at most limit + 1 bytes) and given
its length, so that the ordinary 413 check sees an over-long one.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from typing import Any

from smls.contract import ReceiveTimeout
from smls.errors import IncompleteBody, RequestTimeout, SmlsError

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _timeout(exc: ReceiveTimeout) -> RequestTimeout:
    return RequestTimeout(f"{exc.strerror}; nothing of the body was used")


class _CheckedInput:
    """A body of `expected` bytes: a short one raises IncompleteBody instead of reading as complete."""

    def __init__(self, inner: Any, expected: int) -> None:
        self.inner, self.expected, self.received = inner, expected, 0

    def read(self, size: int | None = -1) -> bytes:
        """Up to `size` bytes of the body (all that is left when size is -1 or None)."""
        return self._take(self.inner.read, size)

    def readline(self, size: int | None = -1) -> bytes:
        """One line of the body, at most `size` bytes."""
        return self._take(self.inner.readline, size)

    def _take(self, reader: Callable[[int], bytes], size: int | None) -> bytes:
        remaining = self.expected - self.received
        size = remaining if size is None or size < 0 else min(size, remaining)
        if size == 0:
            return b""
        try:
            data = reader(size)
        except ReceiveTimeout as exc:
            raise _timeout(exc) from None
        except OSError:  # the connection broke: the client cannot read an answer, but nothing is used
            data = b""
        if not data:
            raise IncompleteBody(
                f"the body ended after {self.received} of the {self.expected} bytes its Content-Length announced; nothing of it was used"
            )
        self.received += len(data)
        return data

    def __iter__(self) -> Any:
        while line := self.readline():
            yield line


class _Failed:
    """A body that could not be received: reading it raises the reason, in the app."""

    def __init__(self, error: SmlsError) -> None:
        self.error = error

    def read(self, size: int | None = -1) -> bytes:
        """Raise the stored error."""
        raise self.error

    readline = read


class CompleteBody:
    """WSGI middleware: the app sees a body whole, or an error when it reads it."""

    def __init__(self, app: WSGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        chunked = environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked"
        if chunked and environ.get("wsgi.input_terminated"):
            environ["wsgi.input"] = self._buffer_chunked(environ["wsgi.input"])
            environ.pop("HTTP_TRANSFER_ENCODING", None)  # werkzeug ignores CONTENT_LENGTH while it is set
            environ["CONTENT_LENGTH"] = str(getattr(environ["wsgi.input"], "size", 0))
        else:
            try:
                expected = int(environ.get("CONTENT_LENGTH") or 0)
            except ValueError:
                expected = 0  # gunicorn refuses a malformed Content-Length before we get here
            if expected > 0:
                environ["wsgi.input"] = _CheckedInput(environ["wsgi.input"], expected)
        return self.app(environ, start_response)

    def _buffer_chunked(self, stream: Any) -> Any:
        # gunicorn's own parse errors (a bad chunk size) go on to gunicorn, which answers
        # 400 bad_http_request; a body that stops or stalls is the app's to answer.
        try:
            data = stream.read(self.limit + 1)
        except ReceiveTimeout as exc:
            return _Failed(_timeout(exc))
        except OSError:  # gunicorn's NoMoreData: the connection ended before the last chunk
            return _Failed(IncompleteBody("the chunked body ended before its last (zero-length) chunk; nothing of it was used"))
        buffered = io.BytesIO(data)
        buffered.size = len(data)  # type: ignore[attr-defined]
        return buffered
