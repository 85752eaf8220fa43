"""gunicorn's gthread worker, with a deadline for receiving each request, a bounded queue, fair accepting, and small model requests answered on its event loop.

One job per module, each a layer over gthread.ThreadWorker that ThreadWorker stacks:
  deadline.py    each request must arrive within SMLS_CLIENT_TIMEOUT (DeadlineSocket, Listener)
  balance.py     a worker holding more connections than another pauses accepting (SharedCounts)
  queue.py       at most SMLS_QUEUE_SIZE wait for a thread; beyond, the overflow threads answer at once
  loop.py        small whole POSTs to the app's fast routes answered on the event loop (smls.turns, smls.direct)
  protocol.py    gunicorn's protocol errors (a malformed request line, headers over the limits) in JSON
  connection.py  the connection as the worker sees it, and smls's state of each in one record
What the worker and the app tell each other is smls.contract.

This leans on gthread's internals, which gunicorn does not promise to keep; they are
checked against each gunicorn release in TESTED_GUNICORN before that range is widened:
  * ThreadWorker.accept(listener), which calls listener.accept() and builds a TConn
    from the socket (wrapped here in deadline.DeadlineSocket through deadline.Listener), counting it in
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

import time
from typing import Any

from smls.config import Settings
from smls.errors import StartupError
from smls.worker.balance import CONNECTIONS, Balancing
from smls.worker.deadline import Deadlines
from smls.worker.loop import LoopAnswers, inline_size
from smls.worker.protocol import answer_protocol_errors_in_json

__all__ = ["CONNECTIONS", "TESTED_GUNICORN", "ThreadWorker", "check_gunicorn", "inline_size"]

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


class ThreadWorker(Balancing, LoopAnswers, Deadlines):
    """gthread, with SMLS_CLIENT_TIMEOUT for receiving each request, a bounded wait for a thread, fair accepting and answers on its loop."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Read before gthread's __init__, which the layers extend: each takes its settings from here.
        self.smls_settings = Settings.from_env()
        self.client_timeout = self.smls_settings.client_timeout
        self._last_beat = 0.0
        super().__init__(*args, **kwargs)

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
        """In the new worker process: JSON protocol errors, then each layer's own start, then run as gthread does."""
        answer_protocol_errors_in_json()
        super().init_process()
