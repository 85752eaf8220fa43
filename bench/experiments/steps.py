"""Where a one-sentence request's time goes at c=1, timed inside the worker, beside the in-process one-thread p50.

    .venv/bin/python -m bench.experiments.steps                        # onnx-int8, 4 cells of 4 s
    .venv/bin/python -m bench.experiments.steps --backend onnx --cells 6

A sampling profiler distorts a c=1 request too much to divide it: py-spy pauses the
process for each sample, and on 2 cores it takes the CPU that wrk needs. Here the server
runs with bench/experiments/step_timer.py as its gunicorn config (smls's own, with a few functions
wrapped in timers), and each cell prints the median of every step over the worker's
last 200 requests, with the in-process one-thread p50 measured just before the cell.
The steps are those of a request the worker's event loop answers (the default layout),
read and written by smls.direct (wrk's requests are plain HTTP/1.1).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from bench.corpora import demo as corpus
from bench.inprocess import encoder, single
from bench.servers import ROOT, load, smls_server

# The order a request meets them in; `start`, `run_now` and `resume` bound the others. The
# counters are made after the send (smls.afterwards), inside it.
STEPS = (
    "gunicorn: dispatch", "peek", "read the head", "WSGI environ", "API key", "read the JSON body", "model and options",
    "tokenise", "pass", "model inputs", "the encoder's call",
    "render the vectors", "JSON", "write the response", "send", "after the send", "model counters", "counters", "gunicorn: finish",
)


def readings(srv_dir: Path) -> dict[str, dict]:
    """What each worker last wrote: pid -> {"passes": forward passes so far, "ms": step medians}."""
    return {f.stem: json.loads(f.read_text()) for f in srv_dir.glob("*.json")}


def busiest(now: dict[str, dict], before: dict[str, dict]) -> dict[str, float]:
    """The step medians of the worker that ran the most passes between two readings ({} if none ran any)."""
    ran = {pid: seen["passes"] - before.get(pid, {}).get("passes", 0) for pid, seen in now.items()}
    pid = max(ran, key=lambda p: ran[p], default=None)
    return now[pid]["ms"] if pid is not None and ran[pid] > 0 else {}


def _gap(ms: dict[str, float], outer: str, inner: str) -> float:
    """The time of step `outer` outside the step `inner` it contains (nan if either was not timed)."""
    return ms[outer] - ms[inner] if {outer, inner} <= ms.keys() else float("nan")


def main() -> None:
    """Run the cells and print one row per cell: c=1 p50, in-process p50 and each step's median."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="onnx-int8", choices=("onnx", "onnx-int8"))
    parser.add_argument("--cells", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=4, help="seconds per cell (at least 200 requests make a full window)")
    args = parser.parse_args()
    if args.cells < 1 or args.seconds <= 0:
        parser.error("--cells must be at least 1 and --seconds above 0")
    with tempfile.TemporaryDirectory() as tmp:
        work, out = Path(tmp), Path(tmp) / "steps"
        out.mkdir()
        srv = smls_server(f"smls {args.backend} (steps timed)", SMLS_BACKEND=args.backend, SMLS_BENCH_STEPS_DIR=str(out))
        srv.cmd[srv.cmd.index("gunicorn.conf.py")] = str(ROOT / "bench" / "experiments" / "step_timer.py")
        srv.start(work / "server.log")
        enc = encoder(args.backend, 1, 1)
        rows = []
        try:
            load(srv, 1, 1, 2, work)  # warm-up: every step's code has run
            for _ in range(args.cells):
                in_process, _cpu = single(enc, corpus(), 200)
                before = readings(out)
                c1 = load(srv, 1, 1, args.seconds, work)
                time.sleep(0.3)  # the worker's last write
                rows.append((c1, in_process, busiest(readings(out), before)))
        finally:
            srv.stop()
    print(f"# Steps of a one-sentence request at c=1, {args.backend}, ms (medians of the worker's last 200 requests per cell)\n")
    print("| c=1 p50 | in-process 1-thread p50 | ratio | turn | start | " + " | ".join(STEPS)
          + " | the encoder around the pass (its call - pass) | bookkeeping (run_now - pass) | resume (the pass's end to the answer sent) |")
    print("|" + "---|" * (len(STEPS) + 8))
    for c1, in_process, ms in rows:
        steps = " | ".join(f"{ms[s]:.3f}" if s in ms else "n/a" for s in STEPS)
        around, book, resume = _gap(ms, "the encoder's call", "pass"), _gap(ms, "run_now", "pass"), ms.get("resume", float("nan"))
        print(f"| {c1['p50']:.2f} | {in_process:.2f} | {c1['p50'] / in_process:.2f} | {ms.get('turn', float('nan')):.2f} | {ms.get('start', float('nan')):.3f} | {steps} | {around:.3f} | {book:.3f} | {resume:.3f} |")
    ratios = [c1["p50"] / p for c1, p, _ in rows]
    print(f"\nc=1 p50 / in-process p50: median {statistics.median(ratios):.2f} over {len(ratios)} cells")
    never = [s for s in (*STEPS, "start", "run_now", "resume", "turn") if not any(s in ms for _, _, ms in rows)]
    if never:  # a renamed or bypassed function: the table would silently lose a step
        raise SystemExit(f"never timed: {', '.join(never)}; bench/experiments/step_timer.py wraps what the request path no longer calls")


if __name__ == "__main__":
    main()
