"""Work a request owes that its client does not wait for: counters and the access log, done once its answer is sent.

A one-sentence request answered on a worker's event loop (smls.worker) counts about ten
things (smls.metrics) besides its access log line and post_request hook, right after a
forward pass, when the caches are cold: together 0.05-0.1 ms of a 2-6 ms request at
c=1, all of it once done before the answer left (docs/benchmarks.org, "Counters after
the answer"). The loop holds such work (`later`) while it answers, and does it as soon
as the answer is sent (`done_sending`), before it waits for the next event.

Anywhere else (request threads, batcher threads, scripts, tests) nothing is held:
`later` does the work at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)


class _Held(threading.local):
    work: list[tuple[Callable[..., object], tuple[object, ...]]] | None = None  # None: this thread holds nothing


_held = _Held()


def later(work: Callable[..., object], *args: object) -> None:
    """Call work(*args) once the answer on its way is sent, where this thread holds such work (held); otherwise now."""
    held = _held.work
    if held is None:
        work(*args)
    else:
        held.append((work, args))


def done_sending() -> None:
    """An answer went out: do the work held so far, in order (a failure is logged and the rest still runs)."""
    if _held.work:
        _do_held()


def _do_held() -> None:
    held = _held.work or []
    _held.work = []
    for work, args in held:
        try:
            work(*args)
        except Exception:  # a counter or a log line must not take the event loop down
            log.exception("work held until an answer was sent failed")


@contextmanager
def held() -> Iterator[None]:
    """Hold this thread's `later` work while the block runs (the event loop's turn), and do what is left at its end."""
    _held.work = []
    try:
        yield
    finally:
        _do_held()
        _held.work = None
