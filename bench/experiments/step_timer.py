"""A gunicorn config for bench.experiments.steps: smls's own gunicorn.conf.py, with a worker that times the steps of each request.

Each wrapped function's wall time goes into a window of its last WINDOW calls; every 25
forward passes the worker writes the windows' medians (ms) to
$SMLS_BENCH_STEPS_DIR/<pid>.json. A step that spans a request's park for its pass (the
view, gunicorn's handle_request) cannot be timed this way, so the steps are the pieces
either side of it, and `start`, `run_now` and `resume` (smls.turns, smls.batching) bound
them. Used only by bench.experiments.steps; never by a server that serves anyone.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections import defaultdict, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

# First, as gunicorn would run it: it sets up metrics and malloc before smls is imported.
exec(compile((Path(__file__).resolve().parents[2] / "gunicorn.conf.py").read_text(), "gunicorn.conf.py", "exec"))  # noqa: S102

WINDOW = 200
_OUT = Path(os.environ["SMLS_BENCH_STEPS_DIR"])
_times: defaultdict[str, deque[float]] = defaultdict(lambda: deque(maxlen=WINDOW))
_passes = 0


def _dump() -> None:
    medians = {step: statistics.median(d) * 1000 for step, d in _times.items() if d}
    tmp = _OUT / f"{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"passes": _passes, "ms": medians}))
    tmp.replace(_OUT / f"{os.getpid()}.json")  # whole, for a reader in another process


def _timed(owner: Any, name: str, step: str) -> None:
    """Wrap owner.name so that its calls are timed as `step`."""
    inner: Callable[..., Any] = getattr(owner, name)

    def timed(*args: Any, **kwargs: Any) -> Any:
        global _passes
        began = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            _times[step].append(time.perf_counter() - began)
            if step == "pass":
                _passes += 1
                if _passes % 25 == 0:
                    _dump()

    setattr(owner, name, timed)


def _install() -> None:
    from gunicorn.workers import gthread

    from smls import afterwards, batching, direct, metrics, outputs
    from smls.encoders import base, export
    from smls.encoders import onnx as onnx_encoder
    from smls.web import embed, hooks, lane
    from smls.worker import deadline, loop

    steps: list[tuple[Any, str, str]] = [
        (direct, "parse", "read the head"),
        (direct, "environ", "WSGI environ"),
        (hooks, "check_key", "API key"),
        (embed, "json_texts", "read the JSON body"),
        (embed, "chosen", "model and options"),
        (onnx_encoder.OnnxEncoder, "prepare", "tokenise"),
        (onnx_encoder.OnnxEncoder, "_encode_batch", "pass"),
        (export, "model_feeds", "model inputs"),
        (base.SentenceEncoder, "encode", "the encoder's call"),
        (metrics.ModelMetrics, "_count_encoded", "model counters"),
        (batching.MicroBatcher, "run_now", "run_now"),
        (outputs, "render", "render the vectors"),
        (lane, "json_bytes", "JSON"),
        (hooks, "_count", "counters"),
        (direct, "response", "write the response"),
        (gthread.ThreadWorker, "finish_request", "gunicorn: finish"),
        (gthread.ThreadWorker, "on_client_socket_readable", "gunicorn: dispatch"),
        (loop.LoopAnswers, "_peek", "peek"),
        (deadline.DeadlineSocket, "send_unsent", "send"),
        (afterwards, "done_sending", "after the send"),
    ]
    # Flask's own steps are not on the way: the event loop's lane (smls.web.lane) answers these
    # requests; nor are gunicorn's parser and Response: smls.direct reads and writes them.
    for owner, name, step in steps:
        _timed(owner, name, step)
    _time_start_and_resume()
    _time_turns()


def _time_start_and_resume() -> None:
    """`start`: from the loop starting a request to its pass; `resume`: from the end of that pass to its answer sent.

    A request alone in its turn runs in LoopRequests.start_alone, its pass (run_now) inside
    it; one that shares its turn runs in LoopRequests.start up to its park, and its pass
    and the rest of it in run_next.
    """
    from smls import batching, turns
    from smls.worker import deadline

    marks: dict[str, float] = {}  # when the lone request began; when the last pass ended; when an answer was last sent
    run_now, start, start_alone, run_next, send_unsent = (
        batching.MicroBatcher.run_now, turns.LoopRequests.start, turns.LoopRequests.start_alone, turns.LoopRequests.run_next,
        deadline.DeadlineSocket.send_unsent,
    )

    def resumed() -> None:
        passed, sent = marks.pop("passed"), marks.pop("sent", None)
        _times["resume"].append((sent if sent is not None and sent > passed else time.perf_counter()) - passed)

    def timed_send_unsent(self: Any) -> bool:
        try:
            return send_unsent(self)
        finally:
            marks["sent"] = time.perf_counter()  # (the last of a turn's answers, for `resume`)

    def timed_run_now(self: Any, jobs: list[Any]) -> None:
        if "alone" in marks:
            _times["start"].append(time.perf_counter() - marks.pop("alone"))
        try:
            run_now(self, jobs)
        finally:
            marks["passed"] = time.perf_counter()

    def timed_start_alone(self: Any, answer: Callable[[], None]) -> None:
        marks["alone"] = time.perf_counter()
        try:
            start_alone(self, answer)
        finally:
            marks.pop("alone", None)  # (a request that ran no pass)
            if "passed" in marks:
                resumed()

    def timed_start(self: Any, answer: Callable[[], None]) -> None:
        began = time.perf_counter()
        start(self, answer)
        _times["start"].append(time.perf_counter() - began)  # it returns where the request parks

    def timed_run_next(self: Any) -> None:
        run_next(self)
        if "passed" in marks:  # only a turn with a request parked runs a pass
            resumed()

    batching.MicroBatcher.run_now = timed_run_now  # type: ignore[method-assign]
    turns.LoopRequests.start_alone = timed_start_alone  # type: ignore[method-assign]
    turns.LoopRequests.start = timed_start  # type: ignore[method-assign]
    turns.LoopRequests.run_next = timed_run_next  # type: ignore[method-assign]
    deadline.DeadlineSocket.send_unsent = timed_send_unsent  # type: ignore[method-assign]


def _time_turns() -> None:
    """`turn`: from the loop's wait for events returning to the end of a turn that ran a pass (its requests answered and sent)."""
    from smls.worker import loop

    inner = loop.LoopAnswers.wait_for_and_dispatch_events

    def timed(self: Any, timeout: float) -> None:
        before = _passes
        inner(self, timeout)
        if _passes != before:
            _times["turn"].append(time.monotonic() - self._turn_started)

    loop.LoopAnswers.wait_for_and_dispatch_events = timed  # type: ignore[method-assign]


_install()
