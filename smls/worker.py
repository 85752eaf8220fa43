"""gunicorn's gthread worker, with a deadline for receiving each request, answering small model requests on its event loop.

gthread hands a connection to a thread as soon as its first bytes arrive and then reads
with no time limit, so clients that send a request a byte at a time (or stop half way)
could hold every thread and starve the others. Here each request, head and body, must
arrive within SMLS_CLIENT_TIMEOUT seconds; a client that is slower is disconnected.
Sending the response is not limited that way (a big document may stream for minutes),
only each write must make progress within the same time. A request thread's answer leaves
with its head and body in one send, as the event loop's do (_is_head_of_sized_body).

gunicorn's own protocol errors (a malformed request line, headers or URI over the
limits, a bad chunk size) are written in smls's JSON error shape instead of HTML.

gthread queues every accepted connection for its request threads without limit. Here
at most SMLS_QUEUE_SIZE wait; a connection beyond that goes to two overflow threads
instead, and the app answers it at once (503 for a model request). Each request's wait
for a thread is measured too, and counts against its SMLS_REQUEST_TIMEOUT. Both reach
the app through the WSGI environ: smls.overflow and smls.queue_wait.

Every worker wakes for a new connection and the first to accept it wins, so a burst of
kept-alive connections often went to one worker. Each worker writes how many connections
it holds into memory shared with the others (SharedCounts); one that holds more than the
worker with fewest pauses accepting for a moment that grows with the difference, which
hands the next connection to that worker (ThreadWorker.accept).

Small model requests are answered on the event loop itself (SMLS_INLINE): a whole POST
of at most SMLS_INLINE_BYTES to /embed, /v1/embeddings or /rerank, seen with MSG_PEEK
before anything is read (one whose body is still on its way is kept on the loop for a
moment, until it arrives). The requests of one turn of the loop each run in a greenlet,
and their forward passes are shared (smls.turns); their responses are written without
waiting, what a client cannot take yet being sent as it reads. Everything else still
goes to the threads. Such a request is marked in the environ (smls.inline), where the
app answers the commonest kind without Flask (smls.web.lane). When such a request is
plain HTTP/1.1, the loop reads it from the bytes it peeked and writes its answer itself,
without gunicorn's parser and Response (smls.direct, _answer_direct), keeping gthread's
rules for keep-alive, max_requests and the access log; anything else is gunicorn's.

This leans on gthread's internals, which gunicorn does not promise to keep; they are
checked against each gunicorn release in TESTED_GUNICORN before that range is widened:
  * ThreadWorker.accept(listener), which calls listener.accept() and builds a TConn
    from the socket (wrapped here in _DeadlineSocket through _Listener), counting it in
    self.nr_conns;
  * ThreadWorker.set_accept_enabled(enabled), which the event loop calls on every turn
    where it wants accepting on or off, and wait_for_and_dispatch_events(timeout), its wait;
  * ThreadWorker.enqueue_req(conn), which submits handle(conn) to self.tpool and defers
    finish_request(conn, future) through self.method_queue; finish_request asking
    the future only cancelled() and result(), and handle(conn) answering one request on any thread;
  * ThreadWorker.wait_for_and_dispatch_events(timeout) being self.poller.select and a
    call of each event's key.data(key.fileobj), which this worker replaces;
  * self.pending_conns and on_pending_socket_readable(conn, sock), conn.initialized,
    conn.data_ready and conn.parser.unreader.buf, and self.age (set by the arbiter);
  * ThreadWorker.handle(conn) and conn.sock, and that gthread calls sock.setblocking(True)
    before each request and writes responses with sock.sendall (a file's body with
    sock.sendfile), a response's head in one call of its own;
  * ThreadWorker.load_wsgi() setting self.wsgi, and gunicorn.util.write_error(sock,
    status, reason, message), which handle_error calls for parser errors;
  * gunicorn.util.write_nonblock(sock, data);
  * for smls.direct: conn.client, conn.server and conn.init(); self.nr,
    self.max_requests, self.keepalived_conns and self.max_keepalived, as gthread's
    handle_request uses them; gunicorn.http.wsgi.base_environ(cfg) and
    gunicorn.http.message._ip_in_allow_list(ip, allow_list, networks); self.log.access
    taking (resp, req, environ, request_time) and reading resp.status, resp.headers and
    resp.sent, and req.headers (tests/test_direct.py holds smls.direct to gunicorn's own
    parser, wsgi.create and Response).
gunicorn.conf.py refuses to start on a gunicorn outside TESTED_GUNICORN (check_gunicorn).
"""

from __future__ import annotations

import errno
import multiprocessing
import os
import select
import selectors
import socket
import threading
import time
from concurrent import futures
from datetime import timedelta
from functools import partial
from typing import Any

import orjson
from gunicorn import util
from gunicorn.http import message, wsgi
from gunicorn.workers import gthread

from smls import afterwards, direct
from smls.config import Settings
from smls.errors import StartupError, error_body, protocol_code
from smls.logs import REQUEST_ID_HEADER, request_id
from smls.turns import LoopRequests

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

    __slots__ = ("_limit", "_deadline", "_idle", "_unsent", "_held")
    _limit: float  # SMLS_CLIENT_TIMEOUT
    _deadline: float  # monotonic time by which this request must have arrived
    _idle: bool  # a response went out; the next request's time starts when a thread reads again
    _unsent: bytearray | None  # answering on the event loop: what the client could not take yet (None: on a thread)
    _held: bytes | None  # on a thread: a response's head, sent with the first of its body (see sendall)

    @classmethod
    def adopt(cls, sock: socket.socket, limit: float) -> _DeadlineSocket:
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
            elif _is_head_of_sized_body(data):
                self._held = bytes(data)
            else:
                super().sendall(data, flags)
            return
        self._unsent += data
        if len(self._unsent) >= _SEND_AT:
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


def _is_head_of_sized_body(data: Any) -> bool:
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


class _Listener:
    """The listening socket, handing out deadline sockets."""

    def __init__(self, inner: Any, limit: float) -> None:
        self.inner, self.limit = inner, limit

    def accept(self) -> tuple[socket.socket, Any]:
        sock, addr = self.inner.accept()
        return _DeadlineSocket.adopt(sock, self.limit), addr

    def getsockname(self) -> Any:
        return self.inner.getsockname()


class SharedCounts:
    """Connections held by each live worker of this server, in memory the master shares with the workers it forks.

    A worker's slot is its gunicorn age (a number the master gives each new worker) modulo
    the slots; the master frees it when the worker exits (gunicorn.conf.py, child_exit).
    A count is written on every turn of the worker's loop, so it lags by a turn at most.
    """

    slots = 256

    def __init__(self) -> None:
        self._held = multiprocessing.RawArray("l", [-1] * self.slots)  # -1: no worker

    def hold(self, slot: int, connections: int) -> None:
        """The worker in `slot` holds this many connections now."""
        self._held[slot] = connections

    def release(self, age: int) -> None:
        """The worker of this age is gone."""
        self._held[age % self.slots] = -1

    def fewest(self, slot: int) -> int:
        """The fewest connections any other worker holds (a large number if there is no other)."""
        others = [held for i, held in enumerate(self._held) if held >= 0 and i != slot]
        return min(others, default=1 << 30)


# Made at import, in the gunicorn master (gunicorn.conf.py imports this module), before any fork.
CONNECTIONS = SharedCounts()

QUEUE_WAIT_KEY = "smls.queue_wait"
OVERFLOW_KEY = "smls.overflow"
INLINE_KEY = "smls.inline"  # True: the event loop answers this request, all of which it has received (smls.web.lane)
_PICKUP_GRACE = 1.0  # seconds to finish receiving a request once a thread takes it
_LINGER = 0.002  # seconds a free thread waits on its kept-alive connection for the next request
_ACCEPT_PAUSE_STEP = 0.001  # seconds a worker pauses accepting per connection it holds beyond the worker with fewest
_ACCEPT_PAUSE_MAX = 0.02


def _next_request_within(conn: Any, seconds: float) -> bool:
    """Whether the connection has more to read (the next request, or its end) within `seconds`."""
    if conn.parser is not None and conn.parser.unreader.buf.getvalue():
        return True  # read ahead already
    readable, _, _ = select.select([conn.sock], [], [], seconds)
    return bool(readable)


# Requests the event loop may answer itself (ThreadWorker.enqueue_req): one small POST to a
# route whose answer is a forward pass or a few, all of it already received.
_INLINE_PATHS = frozenset({b"/embed", b"/v1/embeddings", b"/rerank"})
_SEND_AT = 65536  # bytes of a response answered on the loop kept before it starts sending
_INLINE_HEAD = 8192  # bytes of request line and headers looked at, beyond the body (bigger heads go to a thread)
_REST_WAIT = 1.0  # seconds the event loop waits for the rest of a small model request's body before a thread takes it


def inline_size(data: bytes, max_body: int) -> int | None:
    """The bytes (head and body) of the small POST to a model route that `data` begins with; None if it is no such request.

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
    if parts[1].split(b"?", 1)[0] not in _INLINE_PATHS:
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

    alive: bool  # (set by gunicorn's Worker; cleared here too, as gthread's handle_request does)

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
        self.inline = settings.inline_requests  # see SMLS_INLINE in smls.config
        self.inline_bytes = settings.inline_bytes
        self._loop_requests = LoopRequests()
        self._turn: list[Any] | None = None  # while a turn's events are dispatched: the connections the loop will answer
        self._turn_started = 0.0  # when this turn's wait for events ended
        self._sending: dict[Any, tuple[Any, float]] = {}  # conn -> (its result, deadline for progress)
        self._gathering: dict[Any, float] = {}  # conn -> when to stop waiting on the loop for the rest of its body

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
        self._slot = self.age % CONNECTIONS.slots
        CONNECTIONS.hold(self._slot, 0)
        if self.cfg.is_ssl:
            self.inline = False  # the event loop cannot read a TLS request ahead (and the handshake may wait)
        # smls.direct builds what gunicorn builds for a plain HTTP/1.1 request, not for the
        # PROXY protocol, HTTP/2, or a SCRIPT_NAME from the environment.
        self.direct = self.inline and self.cfg.proxy_protocol == "off" and self.cfg.http2_cleartext == "off" and not os.environ.get("SCRIPT_NAME")
        self._direct_limits = direct.Limits.of(self.cfg)
        self._direct_base = wsgi.base_environ(self.cfg)
        # Imported here, after fork: gunicorn.conf.py imports this module before it points
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

    def accept(self, listener: Any) -> None:
        """Accept as gthread does, wrapping the new connection's socket; pause accepting while this worker holds more than another.

        When the loop answers requests itself, it takes every connection waiting (until a
        pause): the loop is busy between turns, and connections left in the listen backlog
        would wait there unseen, neither answered nor refused.
        """
        while True:
            held = self.nr_conns
            super().accept(_Listener(listener, self.client_timeout))
            # Every worker's event loop wakes for a new connection and the first to call accept
            # wins it, so a burst of kept-alive connections (a load balancer's pool, a load
            # generator) often all went to one worker: at c=32, all 32 on one worker in half of
            # the runs, which then answered 177-209 one-sentence requests/s (onnx-int8) against
            # 226-234 with the connections split (one GIL doing all the Python). A worker that
            # holds more connections than the worker with fewest stops accepting for a moment
            # that grows with the difference, so the next connection goes to that worker.
            CONNECTIONS.hold(self._slot, self.nr_conns)
            ahead = self.nr_conns - CONNECTIONS.fewest(self._slot)
            if ahead > 1:
                self._resume_accepting = time.monotonic() + min(ahead * _ACCEPT_PAUSE_STEP, _ACCEPT_PAUSE_MAX)
                self.set_accept_enabled(False)
            if not self.inline or self.nr_conns == held or not self._accepting or self.nr_conns >= self.worker_connections:
                return

    def set_accept_enabled(self, enabled: bool) -> None:
        """As gthread does, except that accepting stays off until a pause set by accept() is over."""
        if enabled and time.monotonic() < self._resume_accepting:
            return
        super().set_accept_enabled(enabled)

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        """As gthread does (waking in time to accept again when a pause is over); then start the turn's small model requests and run one pass.

        Requests answered on the loop each run in a greenlet and park for their vectors
        (smls.turns); after every turn the loop runs one shared pass of what is parked and
        resumes those requests. A turn's only request, with nothing parked, runs without a
        greenlet: its pass would be its own anyway. At most SMLS_QUEUE_SIZE are parked at
        once; beyond, they go the threads' way, where a flood meets the queue's limit (503
        at once) as before.
        """
        pause = self._resume_accepting - time.monotonic()
        if pause > 0 and self.alive:
            timeout = min(timeout, pause)
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
        CONNECTIONS.hold(self._slot, self.nr_conns)
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
                    self._to_threads(conn)
            self._loop_requests.run_next()

    def enqueue_req(self, conn: Any) -> None:
        """Gather a small model request for the event loop to answer, or queue the connection for the request threads.

        A request thread costs hand-offs: the loop wakes a thread, which wakes the batcher's,
        and the socket comes back to the loop after the answer, each a futex wake and a turn
        of the GIL, a large part of a one-sentence request's CPU on 2 cores
        (docs/benchmarks.org). So the loop answers a whole small POST to a model route
        itself, in its own thread, and new connections wait for their first bytes on it.
        """
        if self.inline and self._turn is not None and self.alive:
            peeked = self._peek(conn)
            size = inline_size(peeked, self.inline_bytes) if peeked else None
            if size is not None and peeked is not None and len(peeked) >= size:
                conn.smls_rest_by = None
                conn.smls_whole = peeked[:size]  # (smls.direct may read it from these bytes)
                self._turn.append(conn)
                return
            if size is not None and self._wait_for_rest(conn):
                return
            if peeked == b"" and not conn.initialized and not conn.data_ready:
                self._wait_for_first_request(conn)
                return
        conn.smls_rest_by = None
        self._to_threads(conn)

    def _wait_for_rest(self, conn: Any) -> bool:
        """Keep a small model request whose body is still on its way on the event loop, until it arrives (True), for at most _REST_WAIT.

        Many clients send the head and the body in two writes (Python's requests, through
        urllib3, does), which may arrive a moment apart. Handing such a request to a
        thread would cost it the loop's path; a request whose body does not come within
        _REST_WAIT still goes to a thread (murder_pending), where SMLS_CLIENT_TIMEOUT
        applies as to any other.
        """
        deadline = getattr(conn, "smls_rest_by", None)
        now = time.monotonic()
        if deadline is None:
            deadline = conn.smls_rest_by = now + _REST_WAIT
        elif now >= deadline:
            return False
        conn.sock.setblocking(False)
        self._gathering[conn] = deadline
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._more_arrived, conn))
        return True

    def _more_arrived(self, conn: Any, _sock: Any) -> None:
        """More of a request kept by _wait_for_rest: look at it again."""
        del self._gathering[conn]
        self.poller.unregister(conn.sock)
        self.enqueue_req(conn)

    def _to_threads(self, conn: Any) -> None:
        """Queue a connection for the request threads, or for the overflow threads when too many wait."""
        conn.smls_whole = None
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
        self._current.inline = False
        if isinstance(conn.sock, _DeadlineSocket):
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
            while result is True and not conn.smls_overflow and not conn.is_http2 and self._may_linger() and _next_request_within(conn, _LINGER):
                self._current.wait, self._current.overflow = 0.0, False
                result = self._handle_one(conn)
            return result
        finally:
            with self._waiting_lock:
                self._handling -= 1

    def _handle_one(self, conn: Any) -> Any:
        """gthread's handle of one request; then send a head still held, which no body followed (_DeadlineSocket.sendall)."""
        try:
            return super().handle(conn)
        finally:
            if isinstance(conn.sock, _DeadlineSocket):
                try:
                    conn.sock.flush_held()
                except OSError:
                    pass  # (closed after a failure: the client sees the connection end, with no answer begun)

    def _may_linger(self) -> bool:
        # Not when the loop answers requests: a lingering thread would only keep it from doing so.
        with self._waiting_lock:
            return self.alive and not self.inline and self._waiting == 0 and self._handling < self.cfg.threads

    def _peek(self, conn: Any) -> bytes | None:
        """What the client has sent, left unread; b"" if nothing yet; None if it cannot be looked at (or has closed)."""
        if conn.is_http2 or not isinstance(conn.sock, _DeadlineSocket):
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

    def _wait_for_first_request(self, conn: Any) -> None:
        """Keep a new connection on the event loop until its first bytes arrive (within SMLS_CLIENT_TIMEOUT)."""
        conn.sock.setblocking(False)
        conn.timeout = time.monotonic() + self.client_timeout
        self.pending_conns.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_pending_socket_readable, conn))

    def _answer_inline(self, conn: Any) -> None:
        """Handle the connection's request here, in the event loop's thread, then keep it alive (or send the rest first)."""
        conn.smls_overflow = False
        conn.data_ready = True
        self._current.wait = time.monotonic() - self._turn_started  # behind this turn's events dispatched before it
        self._current.overflow = False
        self._current.inline = True
        conn.sock.begin_inline()
        whole, conn.smls_whole = getattr(conn, "smls_whole", None), None
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

    def _answer_direct(self, conn: Any, whole: bytes) -> bool | None:
        """Answer a request the loop holds whole with smls.direct, as gthread's handle_request would; None if it is not one that takes.

        Returns whether the connection stays open, as handle does.
        """
        if not isinstance(conn.server, tuple):
            return None  # a Unix socket: gunicorn names the server after the Host header
        trusted = getattr(conn, "smls_trusted", None)
        if trusted is None:
            client = conn.client
            trusted = conn.smls_trusted = not isinstance(client, tuple) or message._ip_in_allow_list(
                client[0], self.cfg.forwarded_allow_ips, self.cfg.forwarded_allow_networks()
            )
        request = direct.parse(whole, _INLINE_PATHS, self._direct_limits, self.cfg.secure_scheme_headers if trusted else {})
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

    def _send_more(self, conn: Any, _sock: Any) -> None:
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

    def _drop_sending(self, conn: Any) -> None:
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
            conn.smls_rest_by = None
            self._to_threads(conn)
        for conn in [conn for conn, (_, deadline) in self._sending.items() if deadline <= now]:
            self._drop_sending(conn)

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
