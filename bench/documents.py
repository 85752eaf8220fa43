"""Measure GET /documents/<id> on a generated document: first (computed) and cached call, worker memory.

    .venv/bin/python -m bench.documents 10000 100000

Starts a real gunicorn (1 worker, all cores to torch) per size on a loopback port.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import requests

from tests.conftest import start_server
from tests.docgen import write_document
from tests.test_live_documents import peak_rss_kib, rss_kib, worker_pids


def stream(url: str) -> tuple[float, float, int]:
    """(seconds to the first byte, seconds in all, bytes) of one streamed GET."""
    start = time.perf_counter()
    first = None
    size = 0
    with requests.get(url, stream=True, timeout=3600) as r:
        r.raise_for_status()
        for chunk in r.iter_content(chunk_size=1 << 16):
            first = first or time.perf_counter() - start
            size += len(chunk)
    return first or 0.0, time.perf_counter() - start, size


def main(sizes: list[int]) -> None:
    print("| sentences | first call s | first byte s | cached call s | response MB | worker RSS before MB | peak RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            tmp_path = Path(tmp)
            write_document(tmp_path / "data", "gen", n)
            server = start_server(tmp_path, workers=1, SMLS_DATA_DIR=str(tmp_path / "data"), SMLS_CACHE_DIR=str(tmp_path / "cache"))
            try:
                (pid,) = worker_pids(server)
                before = rss_kib(pid)
                ttfb, first, size = stream(f"{server.url}/documents/gen")
                _, cached, _ = stream(f"{server.url}/documents/gen")
                peak = peak_rss_kib(pid)
            finally:
                server.stop()
        print(f"| {n} | {first:.1f} | {ttfb:.2f} | {cached:.2f} | {size / 1e6:.0f} | {before / 1024:.0f} | {peak / 1024:.0f} |", flush=True)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [10000])
