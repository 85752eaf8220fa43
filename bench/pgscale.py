"""GET /search on pgvector at scale: two smls instances on one PostgreSQL, at 10,000 and at 1,000,000 sentences.

    .venv/bin/python -m bench.pgscale            # 10,000 then 1,000,000 sentences (about half an hour here)
    .venv/bin/python -m bench.pgscale --short    # 2,000 then 20,000: checks the script, not the numbers

What it answers (issue 39): the time of one /search through smls (the query embedded by the
served model, the SQL, the hits' documents read and shown) with a million sentences in the
database, and whether a worker's memory grows with the corpus in pgvector mode (it should
not: no worker holds an index).

- Two gunicorn instances of smls, SMLS_STORE the same PostgreSQL 18 + pgvector (its own,
  scripts/postgres.py, 1 GB shared buffers), an empty data folder. Queries go one at a
  time, to each instance in turn, from held-out real sentences; each must answer 10 hits.
- Documents: 1,000 sentences each, real ones (the stdlib corpus, sampled), on 10 pages,
  stored by the code a PUT runs (smls.uploads.from_json, Library.put).
- Their vectors are synthetic (bench.ann.synthetic: a real sentence's vector moved by half
  the gap between two others), written into smls's cache under the keys the served model
  looks for and published by smls's own store code. Embedding a million sentences here
  would take half an hour of inference; this measures search, and bench/ann.py measures
  recall on real vectors. So the hits' texts do not match the query: their latency does.
- The pgvector table is filled as a bulk load is done: published with the HNSW index
  dropped, then the index made by smls's own DDL (smls.store.pgvector.create_table) with
  enough maintenance memory. A publish into the indexed table (what a served PUT does) is
  measured by bench/ann.py at 100,000.
- The same workers answer both sizes: their RSS is read after each size's queries.
- Ingest: after each size's queries, 10 more documents published into the indexed table
  (what a first GET or a precompute does), in vectors/s, beside onnx-int8's in-process
  ceiling on the same sentences.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psycopg
import requests

from bench.ann import synthetic
from bench.corpora import stdlib
from bench.inprocess import corpus_ceiling
from bench.procs import children, free_port, rss_mb
from bench.servers import Server, smls_server
from scripts.postgres import start_postgres

PER_DOC = 1000
PAGES = 10


def upload(engine, n_docs: int, first: int, texts: list[str], real: np.ndarray) -> tuple[int, float]:  # noqa: ANN001 - smls.serving.engine.Engine
    """Store documents first..n_docs-1 as a PUT would and publish synthetic vectors for them; (the sentences written, seconds the publishing took)."""
    from smls import uploads

    model = engine.embedders[0].documents
    cache, name = model.cache, model.index_name
    written, publishing = 0, 0.0
    for number in range(first, n_docs):
        rng = np.random.default_rng(number)
        picked = [texts[i] for i in rng.choice(len(texts), PER_DOC, replace=False)]
        body = {
            "texts": [{"text": text, "pages": [f"p{i * PAGES // PER_DOC}"]} for i, text in enumerate(picked)],
            "pages": [{"id": f"p{j}", "page_number": j + 1} for j in range(PAGES)],
        }
        doc_id = f"doc{number:06d}"
        doc, _ = engine.library.put(doc_id, *uploads.from_json(body))
        vectors = synthetic(len(doc.sentences), real, seed=number)
        key = model.key_for(doc.digest, normalize=True)
        cache.begin(key, doc_id, model._model_key(True), len(vectors), vectors.shape[1])  # the key a search looks for
        for chunk, start in enumerate(range(0, len(vectors), model.chunk_size)):
            cache.put(key, chunk, vectors[start : start + model.chunk_size])
        cache.finish(key)
        began = time.perf_counter()
        cache.publish(name, doc_id, key)  # into the pgvector table, in the publishing transaction
        publishing += time.perf_counter() - began
        written += len(vectors)
    return written, publishing


def search_times(servers: list[Server], queries: list[str]) -> list[float]:
    """Each query once, to each server in turn, one at a time; milliseconds each (every answer must be 10 hits)."""
    times = []
    with requests.Session() as session:
        for i, query in enumerate(queries):
            server = servers[i % len(servers)]
            began = time.perf_counter()
            answer = session.get(f"{server.url}/search", params={"q": query, "k": 10}, timeout=60)
            times.append((time.perf_counter() - began) * 1000)
            if answer.status_code != 200 or len(answer.json()["results"]) != 10:
                raise RuntimeError(f"/search answered {answer.status_code}: {answer.text[:300]}")
    return times


def worker_rss(servers: list[Server]) -> list[float]:
    """Every worker's RSS in MB, instance by instance."""
    return [rss_mb(pid) for server in servers for pid in children(server.proc.pid)]


def measure(say: Callable[[str], None], short: bool) -> None:
    """Both sizes, one after the other on the same two instances; a table for bench/results.md."""
    sizes = (2_000, 20_000) if short else (10_000, 1_000_000)
    n_queries = 200 if short else 1000
    ingest_docs = 2 if short else 10  # published into the indexed table after each size's queries

    from smls.config import Settings
    from smls.serving.engine import build
    from smls.store import pgvector

    db = start_postgres(free_port(), shared_buffers="1GB")
    servers: list[Server] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "data"
            data.mkdir()
            env = {"SMLS_STORE": db.dsn(), "SMLS_DATA_DIR": str(data)}
            engine = build(Settings.from_env({**{k: v for k, v in os.environ.items() if not k.startswith("SMLS_")}, **env}), load_indexes=False)
            model = engine.embedders[0]
            corpus = stdlib()
            queries, texts = corpus[:n_queries], corpus[n_queries:]
            real = model.encoder.run(texts[:3000])
            real = real / np.linalg.norm(real, axis=1, keepdims=True)
            table = pgvector.table_name(model.documents.index_name)
            servers = [smls_server(f"smls-{i}", **env) for i in range(2)]
            for i, server in enumerate(servers):
                server.start(Path(tmp) / f"smls-{i}.log")
            say(f"## GET /search on pgvector at scale: 2 instances x {servers[0].workers} workers on one PostgreSQL, {PER_DOC:,} sentences "
                f"a document, {n_queries} queries one at a time (bench/pgscale.py)")
            say()
            say("| sentences | load s | index build s | index MB | p50 ms | p90 ms | p99 ms | each worker's RSS MB | then published into the index: vectors/s |")
            say("|---|---|---|---|---|---|---|---|---|")
            done = docs = 0
            for size in sizes:
                began = time.perf_counter()
                with psycopg.connect(db.dsn(), autocommit=True) as conn:
                    conn.execute(f"DROP INDEX IF EXISTS {table}_hnsw")
                done += upload(engine, size // PER_DOC, docs, texts, real)[0]
                docs = size // PER_DOC
                loaded = time.perf_counter() - began
                with psycopg.connect(db.dsn(), autocommit=True) as conn:
                    conn.execute("SET maintenance_work_mem = '4GB'")  # the graph built in memory, not spilled
                    began = time.perf_counter()
                    pgvector.create_table(conn, model.documents.index_name, model.encoder.dimension)
                    built = time.perf_counter() - began
                    index_mb = conn.execute("SELECT pg_relation_size(%s)", (f"{table}_hnsw",)).fetchone()[0] / 2**20
                search_times(servers, queries[: n_queries // 5])  # warm: the index's pages into the buffers
                times = sorted(search_times(servers, queries))
                rss = worker_rss(servers)
                p = [times[min(len(times) - 1, int(q * len(times)))] for q in (0.5, 0.9, 0.99)]
                # What a served publish does at this size: a document's vectors copied into the indexed table.
                written, publishing = upload(engine, docs + ingest_docs, docs, texts, real)
                say(f"| {done:,} | {loaded:.0f} | {built:.0f} | {index_mb:.0f} | {p[0]:.1f} | {p[1]:.1f} | {p[2]:.1f} | "
                    f"{', '.join(f'{r:.0f}' for r in rss)} | {written / publishing:.0f} |")
                done, docs = done + written, docs + ingest_docs
            ceiling, layout = corpus_ceiling("onnx-int8", texts[:2048], 32)  # the fastest backend smls serves
            say()
            say(f"onnx-int8's in-process ceiling on these sentences: {ceiling:.0f} sentences/s ({layout}); the ingest goal: "
                "vectors/s published into the index at least that, so storing never slows a first GET or a precompute.")
            say()
            say(f"The last size's mean: {statistics.fmean(times):.1f} ms. The goal (issue 39): p50 <= 20 ms at 1,000,000 sentences, "
                "and each worker's RSS flat from 10,000 to 1,000,000 (no worker holds an index). Vectors synthetic, texts real: "
                "this measures time and memory; bench/ann.py measures recall.")
            say()
    finally:
        for server in servers:
            server.stop()
        db.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true")
    measure(lambda text="": print(text, flush=True), parser.parse_args().short)


if __name__ == "__main__":
    main()
