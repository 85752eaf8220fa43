"""Each request must arrive within SMLS_CLIENT_TIMEOUT: a socket with one deadline per request, handed out by the listener.

gthread hands a connection to a thread as soon as its first bytes arrive and then reads
with no time limit, so clients that send a request a byte at a time (or stop half way)
could hold every thread and starve the others. Here each request, head and body, must
arrive within SMLS_CLIENT_TIMEOUT seconds; a client that is slower is disconnected.
Sending the response is not limited that way (a big document may stream for minutes),
only each write must make progress within the same time. A request thread's answer leaves
with its head and body in one send, as the event loop's do (is_head_of_sized_body).
"""

from __future__ import annotations

import errno
import socket
import time
from typing import Any

from gunicorn.workers import gthread

from smls.contract import ReceiveTimeout

SEND_AT = 65536  # bytes of a response answered on the loop kept before it starts sending


class DeadlineSocket(socket.socket):
    """A client socket whose reads share one deadline per request."""

    __slots__ = ("_limit", "_deadline", "_idle", "_unsent", "_held")
    _limit: float  # SMLS_CLIENT_TIMEOUT
    _deadline: float  # monotonic time by which this request must have arrived
    _idle: bool  # a response went out; the next request's time starts when a thread reads again
    _unsent: bytearray | None  # answering on the event loop: what the client could not take yet (None: on a thread)
    _held: bytes | None  # on a thread: a response's head, sent with the first of its body (see sendall)

    @classmethod
    def adopt(cls, sock: socket.socket, limit: float) -> DeadlineSocket:
        """Take over an accepted socket's file descriptor; the first request's time starts now."""
        new = cls(sock.family, sock.type, sock.proto, fileno=sock.detach())
        new._limit = limit
        # From the accept, not from when a thread gets to it: a slow client that waited in
        # the queue has used its time, and gets only a short grace once a thread takes it.
        new._deadline = time.monotonic() + limit
        new._idle = False
        new._unsent = None
        new._held = None
        return new

    def setblocking(self, flag: bool) -> None:
        """Blocking again after a response went out: a thread starts on the next request, whose time starts now."""
        if flag:
            if self._idle:
                self._deadline = time.monotonic() + self._limit
                self._idle = False
            super().settimeout(self._limit)
        elif super().gettimeout() != 0.0:  # (already so after a request the loop answered: no system call)
            super().setblocking(False)

    def grant(self, seconds: float) -> None:
        """At least `seconds` more for this request: a thread has just taken it."""
        self._deadline = max(self._deadline, time.monotonic() + seconds)

    def recv(self, size: int, flags: int = 0) -> bytes:
        """recv, failing with ECONNRESET once this request's time is up."""
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise ReceiveTimeout(errno.ECONNRESET, f"the request did not arrive within {self._limit:g} s (SMLS_CLIENT_TIMEOUT)")
        super().settimeout(min(remaining, self._limit))
        try:
            return super().recv(size, flags)
        except TimeoutError:
            raise ReceiveTimeout(errno.ECONNRESET, f"the request did not arrive within {self._limit:g} s (SMLS_CLIENT_TIMEOUT)") from None

    def sendall(self, data: Any, flags: int = 0) -> None:
        """sendall; each write must make progress within the limit, the whole may take longer.

        On the event loop (begin_inline), nothing waits: the response is kept and sent when
        complete, its head and body in one system call and one segment (gunicorn writes
        them apart); what the client cannot take at once the loop sends as it reads
        (send_unsent). A big response starts on its way as it is written.
        """
        self._idle = True  # (a streamed response sends many times; the next request comes after the last)
        if self._unsent is None:
            super().settimeout(self._limit)
            if self._held is not None:
                self._send_held_with(data, flags)
            elif is_head_of_sized_body(data):
                self._held = bytes(data)
            else:
                super().sendall(data, flags)
            return
        self._unsent += data
        if len(self._unsent) >= SEND_AT:
            self._send_some()

    def _send_held_with(self, data: Any, flags: int) -> None:
        """Send the held head and `data` together: one system call, and for a small answer one segment."""
        head, self._held = self._held, None
        assert head is not None
        body = memoryview(data).cast("B")
        sent = super().sendmsg([head, body], (), flags)
        if sent < len(head):
            super().sendall(head[sent:], flags)
            sent = len(head)
        if sent - len(head) < len(body):
            super().sendall(body[sent - len(head) :], flags)

    def flush_held(self) -> None:
        """Send a held head that no body followed (a HEAD request's answer, or a failed one): a request thread is done with the answer."""
        if self._held is not None:
            head, self._held = self._held, None
            super().sendall(head)

    def sendfile(self, file: Any, offset: int = 0, count: int | None = None) -> int:
        """sendfile, after a held head (gunicorn sends a file's body straight from the file)."""
        self.flush_held()
        return super().sendfile(file, offset, count)

    def begin_inline(self) -> None:
        """The event loop answers the next request: its writes must never wait for the client."""
        self._unsent = bytearray()

    def send_unsent(self) -> bool:
        """Send what the client can take now of the kept response; True once all of it is sent (and inline mode is over)."""
        assert self._unsent is not None
        if self._unsent:
            self._send_some()
        if self._unsent:
            return False
        self._unsent = None
        return True

    def _send_some(self) -> None:
        """Send what the client can take now of the kept response, without waiting."""
        assert self._unsent is not None
        if super().gettimeout() != 0.0:  # (with a timeout set, send would first poll for room)
            super().setblocking(False)
        try:
            sent = super().send(self._unsent)
        except BlockingIOError:
            sent = 0
        del self._unsent[:sent]


def is_head_of_sized_body(data: Any) -> bool:
    """Whether a request thread's write is a response's head announcing a body of known, nonzero length.

    gunicorn's Response writes the head and then the body in two sends. Held until the
    body's first write, the head goes with it: a small answer leaves in one segment, not
    two, and a worker that dies between the two writes cannot leave a proxy holding a head
    without its body (which it cannot retry). A chunked head (a stream, such as a
    document's) goes at once: its first chunk may be a while coming.
    """
    if not isinstance(data, bytes) or not data.startswith(b"HTTP/1.") or not data.endswith(b"\r\n\r\n"):
        return False
    at = data.lower().find(b"\r\ncontent-length:")
    if at < 0:
        return False
    length = data[at + 17 : data.index(b"\r\n", at + 2)].strip()
    return length.isdigit() and int(length) > 0


class Listener:
    """The listening socket, handing out deadline sockets."""

    def __init__(self, inner: Any, limit: float) -> None:
        self.inner, self.limit = inner, limit

    def accept(self) -> tuple[socket.socket, Any]:
        """Accept as the listening socket does; the new socket is a DeadlineSocket."""
        sock, addr = self.inner.accept()
        return DeadlineSocket.adopt(sock, self.limit), addr

    def getsockname(self) -> Any:
        """The listening socket's address."""
        return self.inner.getsockname()


class Deadlines(gthread.ThreadWorker):
    """gthread, accepting every connection as a DeadlineSocket (SMLS_CLIENT_TIMEOUT per request)."""

    client_timeout: float  # SMLS_CLIENT_TIMEOUT (set by smls.worker.ThreadWorker)

    def accept(self, listener: Any) -> None:
        """Accept as gthread does, the new connection's socket wrapped in a DeadlineSocket."""
        super().accept(Listener(listener, self.client_timeout))
