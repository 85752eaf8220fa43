"""What gunicorn's worker (smls.worker) and the app (smls.web, smls.body) tell each other; imports nothing heavy.

The worker puts three facts about each request into its WSGI environ, and the app reads
the routes the worker may answer on its event loop from the loaded app's config:
  QUEUE_WAIT_KEY  seconds the request waited for a thread (it counts against SMLS_REQUEST_TIMEOUT)
  OVERFLOW_KEY    True: it arrived with SMLS_QUEUE_SIZE requests already waiting (answered 503 at once)
  INLINE_KEY      True: the event loop answers it, all of it received (smls.web.lane may take it)
  FAST_PATHS_KEY  the app's config entry: the paths (bytes) whose small whole POSTs the loop answers
Reading a body the client is too slow to send raises ReceiveTimeout (smls.body answers 408).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

QUEUE_WAIT_KEY = "smls.queue_wait"
OVERFLOW_KEY = "smls.overflow"
INLINE_KEY = "smls.inline"
FAST_PATHS_KEY = "SMLS_FAST_PATHS"


class ReceiveTimeout(ConnectionResetError):
    """The request did not arrive within SMLS_CLIENT_TIMEOUT (smls.body answers it 408 if the app is reading)."""


def fast_paths(app: Any) -> frozenset[bytes]:
    """The paths a loaded app lets the event loop answer (none for an app that does not say)."""
    config: Mapping[str, Any] = getattr(app, "config", None) or {}
    return frozenset(config.get(FAST_PATHS_KEY, ()))
