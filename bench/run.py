"""`make bench`: smls against its in-process ceiling, a naive Flask server and Infinity, side by side.

    .venv/bin/python -m bench.run                 # full run, writes bench/results.md
    .venv/bin/python -m bench.run --short --out /tmp/r.md   # seconds per cell (CI)
    .venv/bin/python -m bench.run --no-scale --against main   # the rounds beside main's server: a change's before and after

Load comes from wrk (one thread, a Lua script that rotates request bodies through the
demo corpus, a different sentence in every request). Every server serves the same model
files. Nothing here asserts a target: it measures and prints.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import requests

from bench import ann, bigdoc, embed, image, longtext, pgscale, retrieval
from bench.corpora import demo as corpus  # the sentences every cell sends (read, never changed: the list is shared)
from bench.inprocess import ceilings, cores, corpus_ceiling, dimensions_cost, drain, encoder, inference_cpu_ms, machine, quality, recheck
from bench.servers import INFINITY, ROOT, VENV_BIN, infinity_onnx_server, infinity_server, load, naive_server, note_connections, settle, smls_server

CONCURRENCY = (1, 8, 32)


def default_backends() -> list[str]:
    """Every backend this venv can run: the OpenVINO ones where requirements-openvino.txt is installed."""
    from importlib.util import find_spec

    openvino = ["openvino", "openvino-int8"] if find_spec("openvino") and find_spec("nncf") else []
    return ["onnx", "onnx-int8", "torch", *openvino]
SIZES = (1, 32)  # sentences per request


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true", help="a few seconds per cell (CI): checks the script, not the numbers")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results.md"))
    parser.add_argument("--no-scale", action="store_true", help="skip the 1 GB document and the 1M-vector index (an hour or more)")
    parser.add_argument("--backends", default=",".join(default_backends()), help="smls backends to measure (the first is the headline)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the near-threshold cells (bench/rounds.py)")
    parser.add_argument("--against", metavar="REF", help="the rounds serve each backend from this git commit too, side by side (a before and after)")
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
            + "".join(f"| {q[k][0]:.4f} | {q[k][1]:.4f} | {q[k][2]:.3f} " for k in ("demo", "stdlib")) + "|")
    say()
    say("Quality one text a call (batch 1) beside calls of 32, and how far any value of a text's vector moved between the two "
        "(0: the same bits whatever its batch mates). The int8 goal: top-10 >= 0.93 and min cosine >= 0.99 on both corpora, both ways.")
    say()
    say("| backend | demo, batch 1: mean | min | top-10 | stdlib, batch 1: mean | min | top-10 | moved with batch mates: demo / stdlib |")
    say("|---|---|---|---|---|---|---|---|")
    for b in backends:
        q = qual[b]
        say(f"| {b} " + "".join(f"| {q[k][0]:.4f} | {q[k][1]:.4f} | {q[k][2]:.3f} " for k in ("demo@1", "stdlib@1")) + f"| {q['demo'][3]:.2g} / {q['stdlib'][3]:.2g} |")
    say()
    retrieval.measure(say, args.short)
    cost = dimensions_cost(second)
    say("What `dimensions` costs on all-MiniLM-L6-v2, which was not trained for it (not a Matryoshka model): top-10 neighbour "
        "overlap of the cut, renormalised vectors against the full 384.")
    say()
    say("| corpus | " + " | ".join(f"{d} dims" for d in cost["demo"]) + " |")
    say("|---|" + "---|" * len(cost["demo"]))
    for name, row in cost.items():
        say(f"| {name} | " + " | ".join(f"{v:.3f}" for v in row.values()) + " |")
    say()
    fp32_best = max((ceil[b]["best"] for b in ("onnx", "openvino") if b in ceil), default=0.0)
    for b in [b for b in backends if b.endswith("-int8")]:
        if fp32_best:
            say(f"{b}'s best sentences/s over the best fp32 backend's (the int8 goal: >= 2x): {ceil[b]['best'] / fp32_best:.2f}x")
    say()

    servers = [smls_server(f"smls {b}", SMLS_BACKEND=b) for b in backends] + [naive_server()]
    if INFINITY.exists():
        servers.append(infinity_server())
        servers += [infinity_onnx_server(b) for b in backends if b.startswith("onnx")]  # (Infinity runs no OpenVINO)
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
                        sampler = threading.Timer(min(2.0, seconds / 2), note_connections, args=(srv, split))
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

        against = None
        if args.against:
            tree = work / "against"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(tree), args.against], check=True)
            against = (args.against, tree)
        try:
            rounds.measure(say, backends, ceil, work, 1 if args.short else args.rounds, 1 if args.short else 8, against)
        finally:
            if against:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(against[1])], check=False)
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
            inference = inference_cpu_ms(ceil.get(name.removeprefix("smls "), {})) if name.startswith("smls ") else None
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
        tokenize_beside_embed(say, backends[0], seconds, work)
        by_workers = memory_by_workers(say, backends[0], work, 1 if args.short else 3)
        two_models(say, backends[0], seconds, work, by_workers[2])
        say()
        documents(say, backends[0], work, args.short)
        # (int8 where it runs: the backend a bulk job would pick)
        embed.measure(say, "onnx-int8" if "onnx-int8" in backends else backends[0], work, args.short)
        longtext.measure(say, "onnx-int8" if "onnx-int8" in backends else backends[0], work, args.short)
        image.measure(say, work, seconds, args.short)

    if args.no_scale:
        say("## A 1 GB document, and the search index at 1M vectors")
        say()
        say("Not run (--no-scale): `.venv/bin/python -m bench.bigdoc`, `.venv/bin/python -m bench.ann` and `.venv/bin/python -m bench.pgscale` measure them alone.")
    else:
        bigdoc.measure(say, args.short)
        ann.measure(say, args.short)
        pgscale.measure(say, args.short)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"\nwritten to {args.out}")


def tokenize_beside_embed(say: Callable[[str], None], backend: str, seconds: float, work: Path) -> None:
    """POST /tokenize against POST /embed on one server, one sentence a request at c=32, in turn (twice each, the order swapped)."""
    srv = smls_server(f"smls {backend} tokenize", SMLS_BACKEND=backend)
    rates: dict[str, list[float]] = {"/embed": [], "/tokenize": []}
    try:
        srv.start(work / "tokenize.log")
        for path in ("/embed", "/tokenize", "/tokenize", "/embed"):
            srv.path, srv.body = path, "tokenize" if path == "/tokenize" else "message"
            rates[path].append(load(srv, 1, 32, seconds, work)["rps"])
            settle(srv)
    finally:
        srv.stop()
    embed, tokenize = statistics.fmean(rates["/embed"]), statistics.fmean(rates["/tokenize"])
    say(f"## /tokenize beside /embed ({backend}, one sentence a request, c=32, {seconds} s cells taken in turn)")
    say()
    say(f"/embed {embed:.0f} requests/s, /tokenize {tokenize:.0f} requests/s: /tokenize answers {tokenize / embed:.1f}x as many "
        "(it runs no model: the tokenizer and the JSON only).")
    say()


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


def documents(say: Callable[[str], None], backend: str, work: Path, short: bool) -> None:
    """First GET /documents/<id> and precompute against the in-process ceiling on the same sentences; /embed p99 meanwhile."""
    from bench.corpora import stdlib, write_document

    texts = stdlib()[: 1000 if short else None]
    data = work / "doc-data"
    write_document(data, "stdlib", texts)
    from smls.config import Settings

    chunk = Settings().doc_batch
    ceiling, layout = corpus_ceiling(backend, texts, chunk)

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
    after = drain(encoder(backend, streams, threads), texts, chunk, streams)
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
