"""Giving freed memory back to the system, so that workers stay small and PSS measures what is really in use.

glibc's malloc keeps memory freed by a request (tokens, activations, response buffers)
in its arenas, one per thread that allocated, for reuse; a worker that served a burst
keeps a burst's worth of private pages long after. `malloc_trim(0)` hands free pages
back. A worker calls it after warm-up, and then, from a background thread, a few
seconds after it last served something.

glibc also gives every thread that allocates an arena of its own (up to 8 per core),
and freed memory scattered over many arenas is mostly kept: `limit_arenas` caps them,
in the gunicorn master before any thread starts, so that workers inherit the cap.

The master, once the app is loaded, freezes its objects and trims its heap before it
forks (`before_fork`), so that workers share what it holds and inherit no free pages.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import threading
import time

log = logging.getLogger("smls")

_libc: ctypes.CDLL | None
try:
    # glibc's own name; ctypes.util.find_library would run ldconfig in a subprocess.
    _libc = ctypes.CDLL("libc.so.6")
    _libc.malloc_trim  # noqa: B018  (not glibc: no trimming)
except (OSError, AttributeError):
    _libc = None


_M_ARENA_MAX = -8  # mallopt's parameter number (malloc.h)


def limit_arenas(count: int) -> bool:
    """Cap glibc's malloc arenas for this process and its children; False where not done.

    Not done without glibc, for 0 (glibc's default), or where MALLOC_ARENA_MAX is set
    (the user's own glibc setting wins). glibc fixes the cap when a thread first needs a
    ninth arena, so this is called before threads start.
    """
    if _libc is None or count < 1 or os.environ.get("MALLOC_ARENA_MAX"):
        return False
    return bool(_libc.mallopt(_M_ARENA_MAX, count))


def trim() -> bool:
    """Return free heap pages to the system (glibc's malloc_trim); False where there is no glibc."""
    if _libc is None:
        return False
    return bool(_libc.malloc_trim(0))


def before_fork() -> None:
    """In the gunicorn master, once the app is loaded: freeze its objects and give its free heap pages back.

    Frozen objects are never scanned by a worker's garbage collector, which would write to
    every one of them and so copy its page. Loading the models leaves tens of MB of freed
    chunks in the master's heap; kept, every worker would inherit them, put its first
    allocations there and so copy those pages one by one, each worker for itself (about
    28 MB private to the master in a 4-worker server after load, where every worker had
    copied them). Trimmed, workers start from fresh pages and take only what they use.
    """
    gc.collect()
    gc.freeze()
    trim()


class Trimmer:
    """A daemon thread that trims once the worker has been quiet for `quiet` seconds after serving something."""

    def __init__(self, quiet: float = 2.0) -> None:
        self.quiet = quiet
        self._last = 0.0  # monotonic time of the last activity not yet trimmed after; 0: nothing to trim
        self._thread: threading.Thread | None = None

    def touch(self) -> None:
        """Note that a request was served (cheap: called for every request)."""
        self._last = time.monotonic()

    def start(self) -> None:
        """Start the thread (in the worker process, after fork)."""
        if _libc is None or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="smls-trim", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            last = self._last
            if not last:  # nothing served since the last trim
                time.sleep(self.quiet)
                continue
            # Wake when the quiet spell after the last request ends (polling every `quiet`
            # seconds trimmed up to twice as late, after whatever measured a worker at rest).
            wait = last + self.quiet - time.monotonic()
            if wait > 0:
                time.sleep(wait)
                continue
            if self._last == last:  # (a request that came meanwhile is trimmed after next time)
                self._last = 0.0
            trim()
