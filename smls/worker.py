"""gunicorn's gthread worker, with a deadline for receiving each request.

gthread hands a connection to a thread as soon as its first bytes arrive and then reads
with no time limit, so clients that send a request a byte at a time (or stop half way)
could hold every thread and starve the others. Here each request, head and body, must
arrive within SMLS_CLIENT_TIMEOUT seconds; a client that is slower is disconnected.
Sending the response is not limited that way (a big document may stream for minutes),
only each write must make progress within the same time.
"""

from __future__ import annotations

import errno
import socket
import time
from typing import Any

from gunicorn.workers import gthread

from smls.config import Settings


class _DeadlineSocket(socket.socket):
    """A client socket whose reads share one deadline per request."""

    __slots__ = ("_limit", "_deadline", "_idle")

    @classmethod
    def adopt(cls, sock: socket.socket, limit: float) -> "_DeadlineSocket":
        """Take over an accepted socket's file descriptor; the first request's time starts now."""
        new = cls(sock.family, sock.type, sock.proto, fileno=sock.detach())
        new._limit = limit
        # From the accept, not from when a thread gets to it: a slow client that waited in
        # the queue has used its time, and is dropped at once instead of taking a thread.
        new._deadline = time.monotonic() + limit
        new._idle = False
        return new

    def setblocking(self, flag: bool) -> None:
        """Blocking again after a response went out: a thread starts on the next request, whose time starts now."""
        if flag:
            if self._idle:
                self._deadline = time.monotonic() + self._limit
                self._idle = False
            super().settimeout(self._limit)
        else:
            super().setblocking(False)

    def recv(self, size: int, flags: int = 0) -> bytes:  # type: ignore[override]
        """recv, failing with ECONNRESET once this request's time is up."""
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise ConnectionResetError(errno.ECONNRESET, f"the request did not arrive within {self._limit:g} s (SMLS_CLIENT_TIMEOUT)")
        super().settimeout(min(remaining, self._limit))
        try:
            return super().recv(size, flags)
        except TimeoutError:
            raise ConnectionResetError(errno.ECONNRESET, f"the request did not arrive within {self._limit:g} s (SMLS_CLIENT_TIMEOUT)") from None

    def sendall(self, data: Any, flags: int = 0) -> None:  # type: ignore[override]
        """sendall; each write must make progress within the limit, the whole may take longer."""
        super().settimeout(self._limit)
        super().sendall(data, flags)
        self._idle = True  # (a streamed response sends many times; the next request comes after the last)


class _Listener:
    """The listening socket, handing out deadline sockets."""

    def __init__(self, inner: Any, limit: float) -> None:
        self.inner, self.limit = inner, limit

    def accept(self) -> tuple[socket.socket, Any]:
        sock, addr = self.inner.accept()
        return _DeadlineSocket.adopt(sock, self.limit), addr

    def getsockname(self) -> Any:
        return self.inner.getsockname()


class ThreadWorker(gthread.ThreadWorker):
    """gthread, with SMLS_CLIENT_TIMEOUT for receiving each request."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.client_timeout = Settings.from_env().client_timeout

    def accept(self, listener: Any) -> None:
        """Accept as gthread does, wrapping the new connection's socket."""
        super().accept(_Listener(listener, self.client_timeout))
