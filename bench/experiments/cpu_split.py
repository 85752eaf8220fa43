"""CPU per one-sentence pass by library, in process and in the server at c=1, side by side (needs Linux perf).

    .venv/bin/python -m bench.experiments.cpu_split                    # onnx-int8, 3 rounds
    .venv/bin/python -m bench.experiments.cpu_split --backend onnx --rounds 5

bench.experiments.steps times the server's Python steps; this says where the rest of a c=1
request's CPU goes. Each round samples, with `perf record`, first this process running
single-sentence passes back to back on one thread (the in-process p50 of `make bench`),
then the server's workers under wrk at c=1, and prints each library's CPU milliseconds
per pass or request: ONNX Runtime, the Python interpreter, libc, the kernel, the tokenizer.
A library's milliseconds are its share of the sampled wall time times the mean time per
pass (in process) or per request (the server: one at a time, 1/rps).
Where ONNX Runtime's own share differs, the pass itself ran slower in the server (its
inputs are the same sentences); the other rows are the server's work around it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

from bench.corpora import demo as corpus
from bench.inprocess import encoder
from bench.servers import Server, load, smls_server
from smls.encoders.base import Encoder

LIBRARIES = {"onnxruntime": "ONNX Runtime", "libpython": "Python", "libc.so": "libc", "[kernel": "kernel",
             "tokenizers": "tokenizer", "_multiarray": "numpy", "orjson": "orjson"}


def sample(pids: list[int], seconds: float, data: Path) -> defaultdict[str, float]:
    """The share of wall time, by library, that `pids` spent on a CPU over about `seconds` (perf's cpu-clock samples)."""
    subprocess.run(["perf", "record", "-q", "-F", "2000", "-o", str(data), "-p", ",".join(map(str, pids)), "--", "sleep", str(seconds)],
                   capture_output=True, check=True)
    report = subprocess.run(["perf", "report", "-i", str(data), "--sort", "dso", "--stdio", "-F", "period,dso"],
                            capture_output=True, text=True, check=True).stdout
    header = subprocess.run(["perf", "report", "-i", str(data), "--header-only"], capture_output=True, text=True, check=True).stdout
    # From the first sample to the last: perf's own start and end are outside it.
    span_ms = float(next(line for line in header.splitlines() if "sample duration" in line).split(":")[1].split()[0])
    share: defaultdict[str, float] = defaultdict(float)
    for line in report.splitlines():
        parts = line.split()
        if len(parts) < 2 or not parts[0].isdigit():
            continue
        name = next((label for key, label in LIBRARIES.items() if parts[1].startswith(key)), "other")
        share[name] += int(parts[0]) / 1e6 / span_ms  # cpu-clock periods are nanoseconds
    return share


def in_process(enc: Encoder, seconds: float, data: Path) -> tuple[float, defaultdict[str, float], float]:
    """p50 ms of back-to-back single-sentence passes of `enc` in a thread of this process, its CPU share by library, and the mean ms per pass."""
    texts = corpus()
    lat: list[float] = []
    stop = threading.Event()

    def run() -> None:
        i = 0
        while not stop.is_set():
            began = time.perf_counter()
            enc.run([texts[i % len(texts)]])
            lat.append(time.perf_counter() - began)
            i += 1

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(0.3)
    first = len(lat)
    share = sample([os.getpid()], seconds, data)
    last = len(lat)
    stop.set()
    thread.join()
    return statistics.median(lat[first:last]) * 1000, share, statistics.fmean(lat[first:last]) * 1000


def main() -> None:
    """Run the rounds and print one table: CPU ms per pass (in process) and per request (server, c=1), by library."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="onnx-int8", choices=("onnx", "onnx-int8"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=3, help="seconds sampled per cell")
    args = parser.parse_args()
    if args.rounds < 1 or args.seconds < 1:
        parser.error("--rounds and --seconds must be at least 1")
    if shutil.which("perf") is None:
        raise SystemExit("bench.experiments.cpu_split needs Linux perf (Debian: apt-get install linux-perf)")
    names = list(dict.fromkeys([*LIBRARIES.values(), "other"]))
    print(f"# CPU ms per one-sentence pass by library, {args.backend}: in process (back to back) and in the server (wrk, c=1)\n")
    print("| round | where | p50 ms | CPU ms | " + " | ".join(names) + " |")
    print("|" + "---|" * (len(names) + 4))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        srv = smls_server(f"smls {args.backend} (cpu split)", SMLS_BACKEND=args.backend)
        srv.start(work / "server.log")
        enc = encoder(args.backend, 1, 1)  # one thread, as a server stream runs
        try:
            load(srv, 1, 1, 2, work)  # warm-up
            for k in range(1, args.rounds + 1):
                p50, share, each_ms = in_process(enc, args.seconds, work / "in.data")
                _row(k, "in process", p50, share, each_ms, names)
                c1 = _sampled_load(srv, args.seconds, work)
                _row(k, "server, c=1", c1["p50"], c1["share"], 1000 / c1["rps"], names)
        finally:
            srv.stop()


def _sampled_load(srv: Server, seconds: int, work: Path) -> dict:
    """wrk at c=1 on one sentence per request, its workers sampled meanwhile: load()'s result, and "share" (CPU share by library)."""
    result: dict = {}

    def run() -> None:
        result.update(load(srv, 1, 1, seconds + 2, work))

    wrk = threading.Thread(target=run)
    wrk.start()
    time.sleep(1)
    result["share"] = sample(srv.pids()[1:], seconds, work / "server.data")  # the workers (not the master)
    wrk.join()
    return result


def _row(k: int, where: str, p50: float, share: defaultdict[str, float], each_ms: float, names: list[str]) -> None:
    """One row: CPU ms by library per pass (the share of wall time times the mean ms between passes, one at a time)."""
    per = {name: share[name] * each_ms for name in names}
    print(f"| {k} | {where} | {p50:.2f} | {sum(per.values()):.2f} | " + " | ".join(f"{per[n]:.3f}" for n in names) + " |")


if __name__ == "__main__":
    main()
