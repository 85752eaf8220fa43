"""Small model requests answered on the worker's event loop (SMLS_INLINE), their forward passes shared, their answers sent without waiting.

Small model requests are answered on the event loop itself: a whole POST of at most
SMLS_INLINE_BYTES to a route the app declares fast (smls.contract.fast_paths; the flag
`fast` of smls.web.endpoints), seen with MSG_PEEK before anything is read (one whose body
is still on its way is kept on the loop for a moment, until it arrives). The requests of
one turn of the loop each run in a greenlet, and their forward passes are shared
(smls.turns); their responses are written without waiting, what a client cannot take yet
being sent as it reads. Everything else still goes to the threads (smls.worker.queue).
Such a request is marked in the environ (INLINE_KEY), where the app answers it without
Flask (smls.web.lane). When such a request is plain HTTP/1.1, the loop reads it from the
bytes it peeked and writes its answer itself, without gunicorn's parser and Response
(smls.direct, _answer_direct), keeping gthread's rules for keep-alive, max_requests and
the access log; anything else is gunicorn's.
"""

from __future__ import annotations

import errno
import os
import selectors
import socket
import time
from datetime import timedelta
from functools import partial
from typing import Any

from gunicorn.http import message, wsgi
from gunicorn.workers import gthread

from smls import afterwards, direct
from smls.contract import fast_paths
from smls.turns import LoopRequests
from smls.worker.connection import Conn
from smls.worker.deadline import DeadlineSocket
from smls.worker.protocol import write_json_error
from smls.worker.queue import BoundedQueue

_INLINE_HEAD = 8192  # bytes of request line and headers looked at, beyond the body (bigger heads go to a thread)
_REST_WAIT = 1.0  # seconds the event loop waits for the rest of a small model request's body before a thread takes it


def inline_size(data: bytes, max_body: int, paths: frozenset[bytes]) -> int | None:
    """The bytes (head and body) of the small POST to one of `paths` that `data` begins with; None if it is no such request.

    The head must be all in `data`; the body may not be yet. Anything unusual (chunked,
    Expect, Upgrade, a repeated or odd Content-Length, a header without a colon, a body
    over `max_body` bytes) is None: left to a request thread, where gunicorn's parser judges it.
    """
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = data[:end].split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[0] != b"POST" or parts[2] not in (b"HTTP/1.1", b"HTTP/1.0"):
        return None
    if parts[1].split(b"?", 1)[0] not in paths:
        return None
    length = None
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon:
            return None
        name = name.lower()
        if name == b"content-length":
            value = value.strip()
            if length is not None or not value.isdigit():
                return None
            length = int(value)
        elif name in (b"transfer-encoding", b"expect", b"upgrade"):
            return None
    return end + 4 + length if length is not None and length <= max_body else None


class _Answered:
    """What finish_request takes from a request thread (a done future), for a request the loop answered.

    finish_request only asks cancelled() and result(); a real Future would cost a lock and
    a condition on every request.
    """

    __slots__ = ("_result",)

    def __init__(self, result: Any) -> None:
        self._result = result

    def cancelled(self) -> bool:
        """Never: the request was answered."""
        return False

    def result(self) -> Any:
        """What gthread's handle returned (keep the connection alive or not)."""
        return self._result


def _take(sock: socket.socket, size: int) -> None:
    """Read and drop the `size` bytes the loop looked at: they are in the socket's buffer already (OSError if not)."""
    while size > 0:
        chunk = socket.socket.recv(sock, size, socket.MSG_DONTWAIT)
        if not chunk:
            raise ConnectionResetError(errno.ECONNRESET, "the connection closed")
        size -= len(chunk)


class LoopAnswers(BoundedQueue):
    """gthread, whose event loop answers the small requests to fast routes itself; every other goes to the threads' queue."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.inline = self.smls_settings.inline_requests  # see SMLS_INLINE in smls.config
        self.inline_bytes = self.smls_settings.inline_bytes
        self.fast_paths: frozenset[bytes] = frozenset()  # what the app declares (load_wsgi)
        self._loop_requests = LoopRequests()
        self._turn: list[Conn] | None = None  # while a turn's events are dispatched: the connections the loop will answer
        self._turn_started = 0.0  # when this turn's wait for events ended
        self._sending: dict[Conn, tuple[Any, float]] = {}  # conn -> (its result, deadline for progress)
        self._gathering: dict[Conn, float] = {}  # conn -> when to stop waiting on the loop for the rest of its body

    def init_process(self) -> None:
        """In the new worker process: what the loop's own answers need, then go on as gthread does."""
        if self.cfg.is_ssl:
            self.inline = False  # the event loop cannot read a TLS request ahead (and the handshake may wait)
        # smls.direct builds what gunicorn builds for a plain HTTP/1.1 request, not for the
        # PROXY protocol, HTTP/2, or a SCRIPT_NAME from the environment.
        self.direct = self.inline and self.cfg.proxy_protocol == "off" and self.cfg.http2_cleartext == "off" and not os.environ.get("SCRIPT_NAME")
        self._direct_limits = direct.Limits.of(self.cfg)
        self._direct_base = wsgi.base_environ(self.cfg)
        # Imported here, after fork: gunicorn.conf.py imports this package before it points
        # prometheus_client at the folder every worker writes its numbers to.
        from smls import metrics

        self._tally = metrics.tally_here()  # (before the app's warm-up, which counts too)
        self._count_direct = partial(metrics.inc, metrics.DIRECT)
        super().init_process()

    def run(self) -> None:
        """Run as gthread does; then write the counts still tallied, before the process exits."""
        try:
            super().run()
        finally:
            self._tally.flush()

    def load_wsgi(self) -> None:
        """Load the app, and read which routes it lets the loop answer."""
        super().load_wsgi()
        self.fast_paths = fast_paths(self.wsgi)
        if not self.fast_paths:
            self.inline = self.direct = False  # (an app that declares none: every request goes to the threads)

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        """As gthread does; then start the turn's small model requests and run one pass.

        Requests answered on the loop each run in a greenlet and park for their vectors
        (smls.turns); after every turn the loop runs one shared pass of what is parked and
        resumes those requests. A turn's only request, with nothing parked, runs without a
        greenlet: its pass would be its own anyway. At most SMLS_QUEUE_SIZE are parked at
        once; beyond, they go the threads' way, where a flood meets the queue's limit (503
        at once) as before.
        """
        flush_in = self._tally.flush_in()
        if flush_in is not None:  # counts tallied: written every Tally.FLUSH_EVERY s, busy or idle
            if flush_in <= 0:
                self._tally.flush()
            else:
                timeout = min(timeout, flush_in)
        if self._gathering:
            timeout = min(timeout, max(0.0, min(self._gathering.values()) - time.monotonic()))
        if self._loop_requests.waiting:
            timeout = 0  # a pass is due: only look for events
        events = self.poller.select(timeout)
        self._turn_started = time.monotonic()
        self._turn = []
        with afterwards.held():  # (each answer's counters and access log wait until it is sent)
            try:
                for key, _ in events:
                    key.data(key.fileobj)
            finally:
                turn, self._turn = self._turn, None
            if len(turn) == 1 and not self._loop_requests.waiting and self.alive:
                self._loop_requests.start_alone(partial(self._answer_inline, turn[0]))  # (smls.turns: no greenlet needed)
                return
            for conn in turn:
                if self._loop_requests.waiting < self.max_waiting and self.alive:
                    self._loop_requests.start(partial(self._answer_inline, conn))
                else:
                    self.to_threads(conn)
            self._loop_requests.run_next()

    def enqueue_req(self, conn: Conn) -> None:
        """Gather a small model request for the event loop to answer, or queue the connection for the request threads.

        A request thread costs hand-offs: the loop wakes a thread, which wakes the batcher's,
        and the socket comes back to the loop after the answer, each a futex wake and a turn
        of the GIL, a large part of a one-sentence request's CPU on 2 cores
        (docs/benchmarks.org). So the loop answers a whole small POST to a model route
        itself, in its own thread, and new connections wait for their first bytes on it.
        """
        if self.inline and self._turn is not None and self.alive:
            peeked = self._peek(conn)
            size = inline_size(peeked, self.inline_bytes, self.fast_paths) if peeked else None
            if size is not None and peeked is not None and len(peeked) >= size:
                state = self.conns[conn]
                state.rest_by = None
                state.whole = peeked[:size]  # (smls.direct may read it from these bytes)
                self._turn.append(conn)
                return
            if size is not None and self._wait_for_rest(conn):
                return
            if peeked == b"" and not conn.initialized and not conn.data_ready:
                self._wait_for_first_request(conn)
                return
        self.conns[conn].rest_by = None
        self.to_threads(conn)

    def _wait_for_rest(self, conn: Conn) -> bool:
        """Keep a small model request whose body is still on its way on the event loop, until it arrives (True), for at most _REST_WAIT.

        Many clients send the head and the body in two writes (Python's requests, through
        urllib3, does), which may arrive a moment apart. Handing such a request to a
        thread would cost it the loop's path; a request whose body does not come within
        _REST_WAIT still goes to a thread (murder_pending), where SMLS_CLIENT_TIMEOUT
        applies as to any other.
        """
        state = self.conns[conn]
        deadline = state.rest_by
        now = time.monotonic()
        if deadline is None:
            deadline = state.rest_by = now + _REST_WAIT
        elif now >= deadline:
            return False
        conn.sock.setblocking(False)
        self._gathering[conn] = deadline
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._more_arrived, conn))
        return True

    def _more_arrived(self, conn: Conn, _sock: Any) -> None:
        """More of a request kept by _wait_for_rest: look at it again."""
        del self._gathering[conn]
        self.poller.unregister(conn.sock)
        self.enqueue_req(conn)

    def _peek(self, conn: Conn) -> bytes | None:
        """What the client has sent, left unread; b"" if nothing yet; None if it cannot be looked at (or has closed)."""
        if conn.is_http2 or not isinstance(conn.sock, DeadlineSocket):
            return None
        if conn.parser is not None and conn.parser.unreader.buf.getvalue():
            return None  # read ahead already: a thread's parser has it
        try:
            data = socket.socket.recv(conn.sock, _INLINE_HEAD + self.inline_bytes, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return b""
        except OSError:
            return None
        return data or None

    def _wait_for_first_request(self, conn: Conn) -> None:
        """Keep a new connection on the event loop until its first bytes arrive (within SMLS_CLIENT_TIMEOUT)."""
        conn.sock.setblocking(False)
        conn.timeout = time.monotonic() + self.client_timeout
        self.pending_conns.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_pending_socket_readable, conn))

    def _answer_inline(self, conn: Conn) -> None:
        """Handle the connection's request here, in the event loop's thread, then keep it alive (or send the rest first)."""
        state = self.conns[conn]
        state.overflow = False
        conn.data_ready = True
        self._current.wait = time.monotonic() - self._turn_started  # behind this turn's events dispatched before it
        self._current.overflow = False
        self._current.inline = True
        conn.sock.begin_inline()
        whole, state.whole = state.whole, None
        result = self._answer_direct(conn, whole) if whole is not None and self.direct else None
        if result is None:  # not one smls.direct takes
            result = gthread.ThreadWorker.handle(self, conn)  # gunicorn answers whatever fails with an error response
        sent = conn.sock.send_unsent()
        afterwards.done_sending()  # (or as much as the client took: it has what it can read)
        self.notify()  # a turn may answer many requests
        if sent:
            self.finish_request(conn, _Answered(result))
            return
        self._sending[conn] = (result, time.monotonic() + self.client_timeout)
        self.poller.register(conn.sock, selectors.EVENT_WRITE, partial(self._send_more, conn))

    def _answer_direct(self, conn: Conn, whole: bytes) -> bool | None:
        """Answer a request the loop holds whole with smls.direct, as gthread's handle_request would; None if it is not one that takes.

        Returns whether the connection stays open, as handle does.
        """
        if not isinstance(conn.server, tuple):
            return None  # a Unix socket: gunicorn names the server after the Host header
        state = self.conns[conn]
        trusted = state.trusted
        if trusted is None:
            client = conn.client
            trusted = state.trusted = not isinstance(client, tuple) or message._ip_in_allow_list(
                client[0], self.cfg.forwarded_allow_ips, self.cfg.forwarded_allow_networks()
            )
        request = direct.parse(whole, self.fast_paths, self._direct_limits, self.cfg.secure_scheme_headers if trusted else {})
        if request is None:
            return None
        if not conn.initialized:
            conn.init()  # gunicorn's parser, for a later request on this connection that is not taken here
        try:
            _take(conn.sock, len(whole))
        except OSError:
            return False
        started = time.monotonic()
        self.cfg.pre_request(self, request)
        # gthread's handle_request: the count of requests, and when a response must close.
        self.nr += 1
        keep_alive = True
        if self.nr >= self.max_requests:
            if self.alive:
                self.log.info("Autorestarting worker after current request.")
                self.alive = False
            keep_alive = False
        if not self.alive or not self.cfg.keepalive or len(self.keepalived_conns) >= self.max_keepalived:
            keep_alive = False
        environ = direct.environ(request, self._direct_base, conn.client, conn.server, conn.sock)
        environ["wsgi.multithread"] = True
        answer = direct.Answer("", [])

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
            answer.status, answer.headers = status, headers

        try:
            chunks = self.wsgi(environ, start_response)
            try:
                body = b"".join(chunks)
            finally:
                if hasattr(chunks, "close"):
                    chunks.close()
            data, keep_alive = direct.response(answer, body, keep_alive)
        except Exception:  # as gunicorn's handle_error: logged, and a 500 that closes the connection
            self.log.exception("Error handling request")
            write_json_error(conn.sock, 500, "Internal Server Error", "")
            return False
        conn.sock.sendall(data)
        # After the answer is sent, as gunicorn logs and calls post_request after its writes.
        afterwards.later(self._count_direct)
        afterwards.later(self.log.access, answer, request, environ, timedelta(seconds=time.monotonic() - started))
        afterwards.later(self.cfg.post_request, self, request, environ, answer)
        return keep_alive

    def _send_more(self, conn: Conn, _sock: Any) -> None:
        """The client can take more of a response answered on the loop: send it; once all is sent, finish as a thread would."""
        result, _ = self._sending[conn]
        try:
            done = conn.sock.send_unsent()
        except OSError:
            self._drop_sending(conn)
            return
        if not done:
            self._sending[conn] = (result, time.monotonic() + self.client_timeout)
            return
        del self._sending[conn]
        self.poller.unregister(conn.sock)
        self.finish_request(conn, _Answered(result))

    def _drop_sending(self, conn: Conn) -> None:
        del self._sending[conn]
        self.poller.unregister(conn.sock)
        self.nr_conns -= 1
        conn.close()

    def murder_pending(self) -> None:
        """As gthread does; close connections that took no more of a response for SMLS_CLIENT_TIMEOUT; requests whose body is late go to the threads."""
        super().murder_pending()
        now = time.monotonic()
        for conn in [conn for conn, deadline in self._gathering.items() if deadline <= now]:
            del self._gathering[conn]
            self.poller.unregister(conn.sock)
            self.conns[conn].rest_by = None
            self.to_threads(conn)
        for conn in [conn for conn, (_, deadline) in self._sending.items() if deadline <= now]:
            self._drop_sending(conn)
