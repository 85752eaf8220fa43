"""In-process measurements: the ceilings a server is held to (sentences/s, single-sentence p50) and quality against torch fp32.

A ceiling is the model alone in this process, laid out as a server lays it out (streams x
threads), with no HTTP, no parsing and no hand-offs: what a perfect server would reach.
"""

from __future__ import annotations

import os
import platform
import statistics
import threading
import time
from pathlib import Path

import numpy as np

from bench.corpora import demo as corpus  # the sentences every cell sends (read, never changed: the list is shared)
from bench.corpora import stdlib_sample
from bench.int8 import quality as scores

ROOT = Path(__file__).resolve().parent.parent
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
        rates = {layout: layout_rates(backend, layout, BATCHES, seconds) for layout in sorted({"1x1", f"1x{n_cores}", f"{n_cores}x1"})}
        best_layout = max(rates, key=lambda k: max(rates[k].values()))
        at32_layout = max(rates, key=lambda k: rates[k][32])
        p50_all_cores, _ = single(encoder(backend, 1, n_cores), texts, max(100, int(seconds * 40)))
        p50_one_thread, cpu_one_thread = single(encoder(backend, 1, 1), texts, max(100, int(seconds * 40)))
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


def layout_rates(backend: str, layout: str, batches: tuple[int, ...], seconds: float) -> dict[int, float]:
    """Sentences/s at each batch size in a layout ("streams x threads", e.g. "2x1"): streams of one encoder, or (torch) processes."""
    streams, threads = map(int, layout.split("x"))
    if backend == "torch" and streams > 1:
        return rates_in_processes(backend, batches, streams, seconds)
    enc = encoder(backend, streams, threads)
    return {bs: rate(enc, corpus(), bs, streams, seconds) for bs in batches}


def rates_in_processes(backend: str, batches: tuple[int, ...], procs: int, seconds: float) -> dict[int, float]:
    """Sentences/s at each batch size of `procs` processes with one one-thread stream each, all running at once: the sum."""
    import multiprocessing

    # spawn: a forked child would inherit torch's thread pools (and this process's threads).
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(procs), ctx.Queue()
    # daemon: if one child fails, the others (waiting at the barrier) end with this process.
    children = [ctx.Process(target=process_rates, args=(backend, batches, k, seconds, barrier, results), daemon=True) for k in range(procs)]
    for child in children:
        child.start()
    got = [results.get(timeout=600) for _ in children]
    for child in children:
        child.join()
    return {bs: sum(rates[bs] for rates in got) for bs in batches}


def process_rates(backend: str, batches: tuple[int, ...], k: int, seconds: float, barrier, results) -> None:
    """In child process k: one one-thread stream's sentences/s at each batch size, each measured once every child is ready."""
    texts = corpus()
    enc = encoder(backend, 1, 1)
    rate(enc, texts, 32, 1, min(1.0, seconds), first=k)  # torch's first passes in a process run slow: not part of a rate
    rates = {}
    for bs in batches:
        barrier.wait(timeout=600)
        rates[bs] = rate(enc, texts, bs, 1, seconds, first=k)
    results.put(rates)


def encoder(backend: str, streams: int, threads: int):
    """An encoder of the default model on `backend`, laid out as `streams` x `threads`, warmed up."""
    import smls
    from smls.config import Settings

    path = smls.ml_services.get("SentenceEncoder", backend=backend).path
    enc = smls.build_encoder(model=str(path), backend=backend, batch_size=Settings().batch_size, cache_dir=str(ROOT / ".cache/smls"), threads=threads)
    enc.set_streams(streams)
    enc.run(corpus()[:8])
    return enc


def single(enc, texts: list[str], n: int) -> tuple[float, float]:
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
    rates = layout_rates(backend, layout, tuple(sorted({batch, 32} if at32_layout == layout else {batch})), seconds)
    at32 = rates[32] if at32_layout == layout else layout_rates(backend, at32_layout, (32,), seconds)[32]
    p50_ms, cpu_ms = single(encoder(backend, 1, 1), corpus(), max(100, int(seconds * 40)))
    return {"best": rates[batch], "at32": at32, "p50_ms_one_thread": p50_ms, "cpu_ms_one_thread": cpu_ms}


def inference_cpu_ms(ceiling: dict) -> float | None:
    """One single-sentence pass's CPU ms on one thread: the mean of before and after the backend's server cells (the machine drifts)."""
    before = ceiling.get("cpu_ms_one_thread")
    after = ceiling.get("after", {}).get("cpu_ms_one_thread", before)
    return None if before is None else (before + after) / 2


def rate(enc, texts: list[str], batch: int, streams: int, seconds: float, first: int = 0) -> float:
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


def quality(backends: list[str], second: int) -> dict[str, dict[str, tuple[float, float, float, float]]]:
    """Each backend against torch fp32, on the demo corpus and on `second` sentences of the stdlib corpus, in passes of up to 32 and one text a call.

    Keys "demo", "stdlib" (the texts in calls of 32) and "demo@1", "stdlib@1" (one text a
    call): (mean cos, min cos, top-10 overlap, max abs difference between the two ways).
    The last says whether a text's vector depends on its batch mates (0: the same bits).
    The second corpus is the one the int8 goal names besides the demo: real sentences that
    neither the quantiser's calibration nor SmoothQuant's alpha was chosen on.
    """
    import smls

    corpora = {"demo": corpus(), "stdlib": stdlib_sample(second)}
    out: dict[str, dict[str, tuple[float, float, float, float]]] = {b: {} for b in backends}
    for name, texts in corpora.items():
        # Each backend runs once per corpus; torch, the reference, too (it is often one of them).
        encoders = {b: smls.ml_services.get("SentenceEncoder", backend=b) for b in dict.fromkeys(["torch", *backends])}
        batched = {b: np.concatenate([e.run(texts[i : i + 32], normalize=True) for i in range(0, len(texts), 32)]) for b, e in encoders.items()}
        for backend in backends:
            alone = np.concatenate([encoders[backend].run([t], normalize=True) for t in texts])
            moved = float(np.abs(alone - batched[backend]).max())
            out[backend][name] = (*scores(batched[backend], batched["torch"]), moved)
            out[backend][f"{name}@1"] = (*scores(alone, batched["torch"]), moved)
    return out


def dimensions_cost(second: int, cuts: tuple[int, ...] = (64, 128, 256)) -> dict[str, dict[int, float]]:
    """Top-10 neighbour overlap of vectors cut to each of `cuts` dimensions (and renormalised) against the full ones.

    What `dimensions` costs on a model not trained for it (all-MiniLM-L6-v2 is not a
    Matryoshka model), on the demo corpus and on `second` standard-library sentences.
    """
    import smls

    encoder = smls.ml_services.get("SentenceEncoder", backend="onnx")
    out: dict[str, dict[int, float]] = {}
    for name, texts in {"demo": corpus(), "stdlib": stdlib_sample(second)}.items():
        full = encoder.run(texts, normalize=True)
        near = np.argsort(-(full @ full.T), axis=1)[:, 1:11]
        out[name] = {}
        for d in cuts:
            cut = full[:, :d] / np.linalg.norm(full[:, :d], axis=1, keepdims=True)
            found = np.argsort(-(cut @ cut.T), axis=1)[:, 1:11]
            out[name][d] = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(near, found, strict=True)]))
    return out


def corpus_ceiling(backend: str, texts: list[str], chunk: int) -> tuple[float, str]:
    """Best in-process sentences/s over the texts in chunks, over the layouts a worker may use: (rate, "streams x threads")."""
    n_cores = cores()
    layouts = [(1, n_cores)] + ([(n_cores, 1)] if backend != "torch" else [])
    best = (0.0, "")
    for streams, threads in layouts:
        enc = encoder(backend, streams, threads)
        best = max(best, (drain(enc, texts, chunk, streams), f"{streams}x{threads}"))
    return best


def drain(enc, texts: list[str], chunk: int, streams: int) -> float:
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
