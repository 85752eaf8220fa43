"""A client connection as the worker sees it: the parts of gthread's TConn it uses, and smls's own state of each, in one record."""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any, Protocol


class Conn(Protocol):
    """gthread's TConn, as far as smls.worker uses it (gunicorn ships no types)."""

    sock: Any  # a DeadlineSocket (smls.worker.deadline), or TLS's wrapper of one
    client: Any  # (host, port), or a Unix socket's name
    server: Any
    parser: Any  # gunicorn's request parser, once a thread has read from the connection
    initialized: bool
    is_http2: bool
    data_ready: bool
    timeout: float | None  # gthread's deadline for a kept-alive or pending connection

    def init(self) -> None:
        """Make the parser (a thread does, before its first read)."""

    def close(self) -> None:
        """Close the socket."""


@dataclass(slots=True, eq=False)
class ConnState:
    """What smls keeps about one connection, beside gthread's own: kept in a table of the worker's, never on gunicorn's object."""

    whole: bytes | None = None  # the request the event loop holds whole, as peeked (smls.direct may read it from these bytes)
    rest_by: float | None = None  # until when the loop waits for the rest of a small request's body (None: not waiting)
    queued_at: float = 0.0  # when it was queued for the request threads
    overflow: bool = False  # it came with SMLS_QUEUE_SIZE already queued: the overflow threads answer it
    trusted: bool | None = None  # its client may set the forwarded headers (gunicorn's forwarded_allow_ips); None: not yet known


class Connections:
    """Each live connection's ConnState, dropped with the connection (a weak table: gthread closes connections in many places)."""

    def __init__(self) -> None:
        self._states: weakref.WeakKeyDictionary[Any, ConnState] = weakref.WeakKeyDictionary()

    def __getitem__(self, conn: Conn) -> ConnState:
        """The connection's state, made on first use."""
        state = self._states.get(conn)
        if state is None:
            state = self._states[conn] = ConnState()
        return state
