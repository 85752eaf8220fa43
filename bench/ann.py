"""Nearest-neighbour indexes for GET /search: recall, query latency, memory and build time, side by side.

    .venv/bin/python -m bench.ann            # real sentences + 1,000,000 synthetic vectors (make bench runs this)
    .venv/bin/python -m bench.ann --short    # small sizes: checks the script, not the numbers

Each library runs in a process of its own (its memory measured alone, and usearch never
loaded beside onnxruntime: importing it first crashed the process), on the same vectors
with the HNSW settings smls serves with (16 links, 256 candidates per query; 128 candidates
per insert in hnswlib and usearch, as smls.index, and 64 in pgvector, as smls.store.pgvector),
queries one at a time on one thread, recall@10 against exact search.
- pgvector: a PostgreSQL 18 of its own (scripts/postgres.py), smls's own table (halfvec,
  HNSW made with the table, smls.store.pgvector.create_table) filled by smls's binary COPY
  as a publish fills it, so "build" is ingest: vectors/s written into an indexed table.
  Queries are smls's SQL through psycopg (a round trip each); memory is the HNSW index's
  size in the database (it lives in the server's buffers, not in a worker).
- real: the stdlib corpus (bench/corpora.py) embedded by the served model; 1,000 of its
  sentences held out as queries, plus the demo document's sentences as queries from
  another kind of text.
- scale: synthetic vectors made from the real ones (each a real sentence's vector moved by
  half the gap between two others, normalised), so they spread like sentence vectors do;
  Gaussian noise in 384 dimensions has no such structure and no real corpus looks like it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from smls.index import CONNECTIVITY as M
from smls.index import EXPANSION_ADD as EF_ADD
from smls.index import EXPANSION_SEARCH as EF_SEARCH

ROOT = Path(__file__).resolve().parent.parent
LIBRARIES = ("hnswlib", "usearch", "pgvector")
PG_SCALE = 100_000  # the most vectors bench.run gives pgvector (see measure)


def synthetic(n: int, real: np.ndarray, seed: int = 0) -> np.ndarray:
    """n unit vectors shaped like sentence vectors: a real one moved by half the gap between two others."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, real.shape[1]), dtype=np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        i, j, k = (rng.integers(0, len(real), m) for _ in range(3))
        block = real[i] + 0.5 * (real[j] - real[k])
        out[start : start + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def exact_top(data: np.ndarray, queries: np.ndarray, k: int = 10) -> np.ndarray:
    """The true k nearest (cosine) of each query."""
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), 50):
        scores = queries[start : start + 50] @ data.T
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
        out[start : start + 50] = np.take_along_axis(top, order, axis=1)
    return out


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_one(library: str, data: np.ndarray, query_sets: dict[str, np.ndarray], threads: int) -> dict:
    """Build one library's index over data and measure it (in this process)."""
    keys = np.arange(len(data), dtype=np.uint64)
    before = _rss_mb()
    began = time.perf_counter()
    if library == "hnswlib":
        from smls.index import AnnIndex  # what smls ships: hnswlib, through its own wrapper

        ann = AnnIndex(data.shape[1])
        ann.index.resize_index(len(data))
        for start in range(0, len(data), 50_000):
            ann.index.add_items(data[start : start + 50_000], keys[start : start + 50_000], num_threads=threads, replace_deleted=True)
        ann.live = len(data)

        def search(q: np.ndarray) -> np.ndarray:
            return ann.search(q, 10)[0].astype(np.int64)
    elif library == "pgvector":
        search, memory_of, took = _pgvector(data)
    else:
        from usearch.index import Index

        index = Index(ndim=data.shape[1], metric="cos", dtype="f16", connectivity=M, expansion_add=EF_ADD, expansion_search=EF_SEARCH)
        for start in range(0, len(data), 50_000):
            index.add(keys[start : start + 50_000], data[start : start + 50_000], threads=threads)

        def search(q: np.ndarray) -> np.ndarray:
            return np.asarray(index.search(q, 10, threads=1).keys, dtype=np.int64)
    build = took if library == "pgvector" else time.perf_counter() - began
    memory = memory_of() if library == "pgvector" else _rss_mb() - before
    out = {"library": library, "n": len(data), "build_s": build, "memory_mb": memory, "threads": threads}
    for name, queries in query_sets.items():
        truth = exact_top(data, queries)
        latencies, recalls = [], []
        for q, true in zip(queries, truth, strict=True):
            t = time.perf_counter()
            found = search(q)
            latencies.append(time.perf_counter() - t)
            recalls.append(len(set(found.tolist()) & set(true.tolist())) / 10)
        out[name] = {"queries": len(queries), "recall": float(np.mean(recalls)), "p50_ms": float(np.median(latencies) * 1000), "p99_ms": float(np.percentile(latencies, 99) * 1000)}
    return out


def _pgvector(data: np.ndarray) -> tuple[Callable[[np.ndarray], np.ndarray], Callable[[], float], float]:
    """Fill smls's pgvector table with data on a PostgreSQL of its own, as publishing fills it; (search, the HNSW index's size in MB, seconds the filling took)."""
    import atexit

    import psycopg
    from pgvector import HalfVector

    from bench.procs import free_port
    from scripts.postgres import start_postgres
    from smls.store import pgvector
    from smls.store.pgvector import EF_SEARCH as PG_EF_SEARCH

    # Buffers that hold the index, as a database serving search would be given (the tests' 64MB would not).
    server = start_postgres(free_port(), shared_buffers="1GB")
    atexit.register(server.stop)
    conn = psycopg.connect(server.dsn(), autocommit=True)
    if pgvector.enable(conn) is not None:
        raise RuntimeError("this PostgreSQL has no pgvector")
    table = pgvector.create_table(conn, "bench", data.shape[1])
    began = time.perf_counter()
    with conn.transaction():
        pgvector.ingest(conn, "bench", table, 1, (data[i : i + 10_000] for i in range(0, len(data), 10_000)))
    took = time.perf_counter() - began
    conn.execute(f"SET hnsw.ef_search = {PG_EF_SEARCH}")

    def search(q: np.ndarray) -> np.ndarray:
        h = HalfVector(q)
        rows = conn.execute(f"SELECT idx FROM {table} ORDER BY embedding <=> %s LIMIT 10", (h,)).fetchall()
        return np.asarray([r[0] for r in rows], dtype=np.int64)

    def size_mb() -> float:
        return float(conn.execute("SELECT pg_relation_size(%s)", (f"{table}_hnsw",)).fetchone()[0]) / 2**20

    return search, size_mb, took


def _in_child(library: str, source: str, n: int, threads: int) -> dict:
    """run_one in a fresh process: its memory alone, and no library loaded beside another."""
    cmd = [sys.executable, "-m", "bench.ann", "--child", library, "--source", source, "--n", str(n), "--threads", str(threads)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=7200, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode != 0:
        return {"library": library, "error": (done.stderr.strip().splitlines() or ["exit " + str(done.returncode)])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def real_vectors(folder: Path, short: bool) -> Path:
    """Embed the stdlib corpus and the demo sentences with the default model (onnx); saved for the children."""
    from bench.corpora import demo, stdlib
    from smls.config import Settings
    from smls.serving.loading import encoder_for

    texts = stdlib()[: 3000 if short else None]
    encoder = encoder_for(Settings())
    encoder.set_streams(1)
    vectors = np.concatenate([encoder.run(texts[i : i + 256]) for i in range(0, len(texts), 256)])
    demo_vectors = encoder.run(demo())
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    path = folder / "real.npz"
    np.savez(path, data=unit[1000:], held_out=unit[:1000], demo=demo_vectors / np.linalg.norm(demo_vectors, axis=1, keepdims=True))
    return path


def measure(say, short: bool) -> None:  # noqa: ANN001 - bench.run's say
    """Both libraries on real sentences and at scale; a table for bench/results.md."""
    threads = os.cpu_count() or 1
    scale = 20_000 if short else 1_000_000
    with tempfile.TemporaryDirectory() as tmp:
        real = real_vectors(Path(tmp), short)
        rows = [_in_child(lib, str(real), 0, threads) for lib in LIBRARIES]
        # pgvector fills an indexed table at 690-1,250 vectors/s here (the table above), slower as it
        # grows: 1M would take half an hour or more, so it stops at PG_SCALE and the table says so.
        rows += [_in_child(lib, str(real), scale if lib != "pgvector" else min(scale, PG_SCALE), threads) for lib in LIBRARIES]
    from smls.store.pgvector import EF_CONSTRUCTION as PG_EF_ADD

    say(f"## Search index (GET /search): HNSW M={M}, efConstruction={EF_ADD} (pgvector {PG_EF_ADD}), efSearch={EF_SEARCH}; queries one at a time on one thread")
    say()
    say(f"| library | vectors | build s ({threads} threads) | memory MB | queries | recall@10 | p50 ms | p99 ms |")
    say("|---|---|---|---|---|---|---|---|")
    for row in rows:
        if "error" in row:
            say(f"| {row['library']} | - | failed: {row['error']} | | | | | |")
            continue
        for name in ("held_out", "demo", "synthetic"):
            if name in row:
                r = row[name]
                label = {"held_out": "stdlib, held out", "demo": "demo document", "synthetic": "synthetic"}[name]
                say(f"| {row['library']} | {row['n']:,} | {row['build_s']:.1f} | {row['memory_mb']:.0f} | {label} ({r['queries']}) | {r['recall']:.3f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} |")
    say()
    for row in rows:
        if row.get("library") == "pgvector" and "error" not in row and row["build_s"] > 0:
            say(f"- pgvector ingest at {row['n']:,} vectors (binary COPY into the HNSW-indexed table, as a publish writes): "
                f"{row['n'] / row['build_s']:,.0f} vectors/s; its memory column is the index's size in the database.")
    say()
    say("smls ships hnswlib (smls/index.py says why), and pgvector where SMLS_STORE is a PostgreSQL with the extension; "
        "the goal: recall@10 >= 0.95 on real sentences, p50 <= 20 ms at 1,000,000 vectors.")
    say()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true")
    parser.add_argument("--child", choices=LIBRARIES)
    parser.add_argument("--source")
    parser.add_argument("--n", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.child:
        saved = np.load(args.source)
        if args.n:
            data = synthetic(args.n, saved["data"])
            queries = {"synthetic": synthetic(1000, saved["held_out"], seed=99)}
        else:
            data, queries = saved["data"], {"held_out": saved["held_out"], "demo": saved["demo"]}
        print(json.dumps(run_one(args.child, data, queries, args.threads)))
        return
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crashing child leaves no core file
    measure(print, args.short)


if __name__ == "__main__":
    main()
