"""gunicorn's gthread worker, with a deadline for receiving each request.

gthread hands a connection to a thread as soon as its first bytes arrive and then reads
with no time limit, so clients that send a request a byte at a time (or stop half way)
could hold every thread and starve the others. Here each request, head and body, must
arrive within SMLS_CLIENT_TIMEOUT seconds; a client that is slower is disconnected.
Sending the response is not limited that way (a big document may stream for minutes),
only each write must make progress within the same time.

gunicorn's own protocol errors (a malformed request line, headers or URI over the
limits, a bad chunk size) are written in smls's JSON error shape instead of HTML.

gthread queues every accepted connection for its request threads without limit. Here
at most SMLS_QUEUE_SIZE wait; a connection beyond that goes to two overflow threads
instead, and the app answers it at once (503 for a model request). Each request's wait
for a thread is measured too, and counts against its SMLS_REQUEST_TIMEOUT. Both reach
the app through the WSGI environ: smls.overflow and smls.queue_wait.

Every worker wakes for a new connection and the first to accept it wins, so a burst of
kept-alive connections often went to one worker. A worker holding more connections than
request threads pauses accepting for a moment that grows with how many it holds, which
hands the next connection to a worker with fewer (ThreadWorker.accept).

This leans on gthread's internals, which gunicorn does not promise to keep; they are
checked against each gunicorn release in TESTED_GUNICORN before that range is widened:
  * ThreadWorker.accept(listener), which calls listener.accept() and builds a TConn
    from the socket (wrapped here in _DeadlineSocket through _Listener), counting it in
    self.nr_conns;
  * ThreadWorker.set_accept_enabled(enabled), which the event loop calls on every turn
    where it wants accepting on or off, and wait_for_and_dispatch_events(timeout), its wait;
  * ThreadWorker.enqueue_req(conn), which submits handle(conn) to self.tpool and defers
    finish_request(conn, future) through self.method_queue;
  * ThreadWorker.handle(conn) and conn.sock, and that gthread calls sock.setblocking(True)
    before each request and writes responses with sock.sendall;
  * ThreadWorker.load_wsgi() setting self.wsgi, and gunicorn.util.write_error(sock,
    status, reason, message), which handle_error calls for parser errors;
  * gunicorn.util.write_nonblock(sock, data).
gunicorn.conf.py refuses to start on a gunicorn outside TESTED_GUNICORN (check_gunicorn).
"""

from __future__ import annotations

import errno
import select
import socket
import threading
import time
from concurrent import futures
from typing import Any

import orjson
from gunicorn import util
from gunicorn.workers import gthread

from smls.config import Settings
from smls.errors import StartupError, error_body, protocol_code
from smls.logs import REQUEST_ID_HEADER, request_id

# The gunicorn releases whose gthread internals this worker was checked against: [low, high).
TESTED_GUNICORN = ((27, 0), (28, 0))


def check_gunicorn(version: str) -> None:
    """StartupError, in one line, unless `version` is in the tested range."""
    try:
        major_minor = tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        major_minor = (0, 0)
    low, high = TESTED_GUNICORN
    if not low <= major_minor < high:
        raise StartupError(
            f"gunicorn {version} is not supported: smls.worker relies on gthread internals checked "
            f"with gunicorn >={low[0]}.{low[1]},<{high[0]}.{high[1]} (pip install -r requirements.txt)"
        )


class ReceiveTimeout(ConnectionResetError):
    """The request did not arrive within SMLS_CLIENT_TIMEOUT (smls.body answers it 408 if the app is reading)."""


class _DeadlineSocket(socket.socket):
    """A client socket whose reads share one deadline per request."""

    __slots__ = ("_limit", "_deadline", "_idle")
    _limit: float  # SMLS_CLIENT_TIMEOUT
    _deadline: float  # monotonic time by which this request must have arrived
    _idle: bool  # a response went out; the next request's time starts when a thread reads again

    @classmethod
    def adopt(cls, sock: socket.socket, limit: float) -> _DeadlineSocket:
        """Take over an accepted socket's file descriptor; the first request's time starts now."""
        new = cls(sock.family, sock.type, sock.proto, fileno=sock.detach())
        new._limit = limit
        # From the accept, not from when a thread gets to it: a slow client that waited in
        # the queue has used its time, and gets only a short grace once a thread takes it.
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


QUEUE_WAIT_KEY = "smls.queue_wait"
OVERFLOW_KEY = "smls.overflow"
_PICKUP_GRACE = 1.0  # seconds to finish receiving a request once a thread takes it
_LINGER = 0.002  # seconds a free thread waits on its kept-alive connection for the next request
_ACCEPT_PAUSE_STEP = 0.001  # seconds a worker pauses accepting per connection it holds beyond its request threads
_ACCEPT_PAUSE_MAX = 0.02


def _next_request_within(conn: Any, seconds: float) -> bool:
    """Whether the connection has more to read (the next request, or its end) within `seconds`."""
    if conn.parser is not None and conn.parser.unreader.buf.getvalue():
        return True  # read ahead already
    readable, _, _ = select.select([conn.sock], [], [], seconds)
    return bool(readable)
def write_json_error(sock: socket.socket, status: int, reason: str, message: str) -> None:
    """Answer an HTTP request gunicorn could not parse, as {"error": {"status", "code", "message"}}."""
    body = orjson.dumps(error_body(status, protocol_code(status), message or reason))
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{REQUEST_ID_HEADER}: {request_id(None)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)


class ThreadWorker(gthread.ThreadWorker):
    """gthread, with SMLS_CLIENT_TIMEOUT for receiving each request and a bounded wait for a thread."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = Settings.from_env()
        self.client_timeout = settings.client_timeout
        self.max_waiting = settings.queue_size
        self._waiting = 0  # connections queued for the request threads, not yet taken
        self._handling = 0  # connections a request thread is on
        self._waiting_lock = threading.Lock()
        self._current = threading.local()  # what the request this thread is handling waited
        self._last_beat = 0.0
        self._resume_accepting = 0.0  # monotonic time before which this worker accepts no connection

    def notify(self) -> None:
        """Tell the master this worker is alive, at most once a second.

        gthread calls this on every turn of its event loop, that is for every request, and
        each call is a system call (utime on a file): about 0.1 ms of a 5 ms request at c=1.
        The master only looks at it against SMLS_TIMEOUT (seconds).
        """
        now = time.monotonic()
        if now - self._last_beat >= 1.0:
            self._last_beat = now
            super().notify()

    def init_process(self) -> None:
        """In the new worker process: JSON protocol errors and a pool for the overflow, then run as gthread does."""
        # gunicorn's handle_error picks the status and message and then calls
        # util.write_error; replacing that one function keeps gunicorn's choice of status.
        util.write_error = write_json_error
        # Connections beyond SMLS_QUEUE_SIZE waiting go to these two threads, which answer at
        # once: a 503 for model requests, or the cheap answer of /health, /ready, /metrics.
        self.overflow_pool = futures.ThreadPoolExecutor(max_workers=2)
        super().init_process()

    def accept(self, listener: Any) -> None:
        """Accept as gthread does, wrapping the new connection's socket; then pause accepting if this worker holds many."""
        super().accept(_Listener(listener, self.client_timeout))
        # Every worker's event loop wakes for a new connection and the first to call accept
        # wins it, so a burst of kept-alive connections (a load balancer's pool, a load
        # generator) often all went to one worker: at c=32, all 32 on one worker in half of
        # the runs, which then answered 177-209 one-sentence requests/s (onnx-int8) against
        # 226-234 with the connections split (one GIL doing all the Python). A worker that
        # holds more connections than request threads stops accepting for a moment that
        # grows with how many it holds, so the next connection goes to a worker with fewer
        # when there is one, and waits at most _ACCEPT_PAUSE_MAX when there is not.
        excess = self.nr_conns - self.cfg.threads
        if excess > 0 and self.cfg.workers > 1:
            self._resume_accepting = time.monotonic() + min(excess * _ACCEPT_PAUSE_STEP, _ACCEPT_PAUSE_MAX)
            self.set_accept_enabled(False)

    def set_accept_enabled(self, enabled: bool) -> None:
        """As gthread does, except that accepting stays off until a pause set by accept() is over."""
        if enabled and time.monotonic() < self._resume_accepting:
            return
        super().set_accept_enabled(enabled)

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        """As gthread does, waking in time to accept again when a pause is over."""
        pause = self._resume_accepting - time.monotonic()
        if pause > 0 and self.alive:
            timeout = min(timeout, pause)
        super().wait_for_and_dispatch_events(timeout)

    def enqueue_req(self, conn: Any) -> None:
        """Queue a connection for the request threads, or for the overflow threads when too many wait."""
        conn.smls_queued_at = time.monotonic()
        with self._waiting_lock:
            conn.smls_overflow = self._waiting >= self.max_waiting
            if not conn.smls_overflow:
                self._waiting += 1
        if not conn.smls_overflow:
            super().enqueue_req(conn)
            return
        fs = self.overflow_pool.submit(self.handle, conn)
        fs.add_done_callback(lambda fut: self.method_queue.defer(self.finish_request, conn, fut))

    def handle(self, conn: Any) -> Any:
        """In a pool thread: note how long the connection waited and whether it overflowed, then handle as gthread does."""
        if not conn.smls_overflow:
            with self._waiting_lock:
                self._waiting -= 1
        self._current.wait = time.monotonic() - conn.smls_queued_at
        self._current.overflow = conn.smls_overflow
        if isinstance(conn.sock, _DeadlineSocket):
            # A request that arrived whole but waited out SMLS_CLIENT_TIMEOUT in the queue is
            # read (and answered, if only with a 503), not dropped; a slow one still is, soon.
            conn.sock.grant(_PICKUP_GRACE)
        with self._waiting_lock:
            self._handling += 1
        try:
            result = super().handle(conn)
            # A client on a kept-alive connection often sends its next request at once (a
            # loop in a script, a load generator). Waiting a moment for it on this thread
            # saves handing the socket to the event loop and back to a thread: three thread
            # wake-ups, about a millisecond per request on a small machine. Only while
            # nothing is queued and another thread is free, so no one waits for this one.
            while result is True and not conn.smls_overflow and not conn.is_http2 and self._may_linger() and _next_request_within(conn, _LINGER):
                self._current.wait, self._current.overflow = 0.0, False
                result = super().handle(conn)
            return result
        finally:
            with self._waiting_lock:
                self._handling -= 1

    def _may_linger(self) -> bool:
        with self._waiting_lock:
            return self.alive and self._waiting == 0 and self._handling < self.cfg.threads

    def load_wsgi(self) -> None:
        """Load the app and put each request's wait for a thread into its environ."""
        super().load_wsgi()
        # Wrapped inside the Flask app (its wsgi_app, the documented place for middleware),
        # so that self.wsgi stays the app that gunicorn.conf.py warms up.
        inner, current = self.wsgi.wsgi_app, self._current

        def with_queue_wait(environ: dict[str, Any], start_response: Any) -> Any:
            environ[QUEUE_WAIT_KEY] = getattr(current, "wait", 0.0)
            environ[OVERFLOW_KEY] = getattr(current, "overflow", False)
            return inner(environ, start_response)

        self.wsgi.wsgi_app = with_queue_wait
