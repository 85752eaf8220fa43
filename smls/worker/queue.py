"""The request threads' queue, bounded: at most SMLS_QUEUE_SIZE connections wait; beyond, two overflow threads answer at once.

gthread queues every accepted connection for its request threads without limit. Here
at most SMLS_QUEUE_SIZE wait; a connection beyond that goes to two overflow threads
instead, and the app answers it at once (503 for a model request). Each request's wait
for a thread is measured too, and counts against its SMLS_REQUEST_TIMEOUT. Both reach
the app through the WSGI environ (smls.contract: QUEUE_WAIT_KEY, OVERFLOW_KEY, INLINE_KEY).
"""

from __future__ import annotations

import select
import threading
import time
from concurrent import futures
from typing import Any

from gunicorn.workers import gthread

from smls.config import Settings
from smls.contract import INLINE_KEY, OVERFLOW_KEY, QUEUE_WAIT_KEY
from smls.worker.connection import Conn, Connections
from smls.worker.deadline import DeadlineSocket

_PICKUP_GRACE = 1.0  # seconds to finish receiving a request once a thread takes it
_LINGER = 0.002  # seconds a free thread waits on its kept-alive connection for the next request


class BoundedQueue(gthread.ThreadWorker):
    """gthread, with a bounded queue for its request threads, an overflow beyond it, and each request's wait in its environ."""

    alive: bool  # (set by gunicorn's Worker)
    inline: bool  # the event loop answers requests (smls.worker.loop): then a thread never lingers
    smls_settings: Settings  # (set by smls.worker.ThreadWorker before gthread's __init__)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_waiting = self.smls_settings.queue_size
        self.conns = Connections()  # smls's state of each connection
        self._waiting = 0  # connections queued for the request threads, not yet taken
        self._handling = 0  # connections a request thread is on
        self._waiting_lock = threading.Lock()
        self._current = threading.local()  # what the request this thread is handling waited

    def init_process(self) -> None:
        """Start the overflow threads, then go on as gthread does."""
        # Connections beyond SMLS_QUEUE_SIZE waiting go to these two threads, which answer at
        # once: a 503 for model requests, or the cheap answer of /health, /ready, /metrics.
        self.overflow_pool = futures.ThreadPoolExecutor(max_workers=2)
        super().init_process()

    def to_threads(self, conn: Conn) -> None:
        """Queue a connection for the request threads, or for the overflow threads when too many wait."""
        state = self.conns[conn]
        state.whole = None
        state.queued_at = time.monotonic()
        with self._waiting_lock:
            state.overflow = self._waiting >= self.max_waiting
            if not state.overflow:
                self._waiting += 1
        if not state.overflow:
            super().enqueue_req(conn)
            return
        fs = self.overflow_pool.submit(self.handle, conn)
        fs.add_done_callback(lambda fut: self.method_queue.defer(self.finish_request, conn, fut))

    def handle(self, conn: Conn) -> Any:
        """In a pool thread: note how long the connection waited and whether it overflowed, then handle as gthread does."""
        state = self.conns[conn]
        if not state.overflow:
            with self._waiting_lock:
                self._waiting -= 1
        self._current.wait = time.monotonic() - state.queued_at
        self._current.overflow = state.overflow
        self._current.inline = False
        if isinstance(conn.sock, DeadlineSocket):
            # A request that arrived whole but waited out SMLS_CLIENT_TIMEOUT in the queue is
            # read (and answered, if only with a 503), not dropped; a slow one still is, soon.
            conn.sock.grant(_PICKUP_GRACE)
        with self._waiting_lock:
            self._handling += 1
        try:
            result = self._handle_one(conn)
            # A client on a kept-alive connection often sends its next request at once (a
            # loop in a script, a load generator). Waiting a moment for it on this thread
            # saves handing the socket to the event loop and back to a thread: three thread
            # wake-ups, about a millisecond per request on a small machine. Only while
            # nothing is queued and another thread is free, so no one waits for this one.
            while result is True and not state.overflow and not conn.is_http2 and self._may_linger() and _next_request_within(conn, _LINGER):
                self._current.wait, self._current.overflow = 0.0, False
                result = self._handle_one(conn)
            return result
        finally:
            with self._waiting_lock:
                self._handling -= 1

    def _handle_one(self, conn: Conn) -> Any:
        """gthread's handle of one request; then send a head still held, which no body followed (DeadlineSocket.sendall)."""
        try:
            return super().handle(conn)
        finally:
            if isinstance(conn.sock, DeadlineSocket):
                try:
                    conn.sock.flush_held()
                except OSError:
                    pass  # (closed after a failure: the client sees the connection end, with no answer begun)

    def _may_linger(self) -> bool:
        # Not when the loop answers requests: a lingering thread would only keep it from doing so.
        with self._waiting_lock:
            return self.alive and not self.inline and self._waiting == 0 and self._handling < self.cfg.threads

    def load_wsgi(self) -> None:
        """Load the app and put each request's wait for a thread into its environ."""
        super().load_wsgi()
        # Wrapped inside the Flask app (its wsgi_app, the documented place for middleware),
        # so that self.wsgi stays the app that gunicorn.conf.py warms up.
        inner, current = self.wsgi.wsgi_app, self._current

        def with_queue_wait(environ: dict[str, Any], start_response: Any) -> Any:
            environ[QUEUE_WAIT_KEY] = getattr(current, "wait", 0.0)
            environ[OVERFLOW_KEY] = getattr(current, "overflow", False)
            environ[INLINE_KEY] = getattr(current, "inline", False)
            return inner(environ, start_response)

        self.wsgi.wsgi_app = with_queue_wait


def _next_request_within(conn: Conn, seconds: float) -> bool:
    """Whether the connection has more to read (the next request, or its end) within `seconds`."""
    if conn.parser is not None and conn.parser.unreader.buf.getvalue():
        return True  # read ahead already
    readable, _, _ = select.select([conn.sock], [], [], seconds)
    return bool(readable)
