"""A 1 GB texts file through a real server: validated, embedded and streamed with bounded memory (make bench runs this).

    .venv/bin/python -m bench.bigdoc            # 1 GB: 100,000 sentences, each with ~10 KB of metadata
    .venv/bin/python -m bench.bigdoc --short    # 40 MB (still over the 32 MiB at which smls streams)

The sentences are real (the stdlib corpus, repeated); the size is in each sentence's own
metadata (a "notes" field of about 10 KB), which the response carries back too, so
the file is 1 GB without asking the model for a day of work. One worker; its peak RSS
(VmHWM) is read after a small document has brought inference to its plateau, and again
after the big one was listed, fetched (streamed, first GET: computed) and fetched again
(cached).
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import requests

from bench.corpora import stdlib, write_document
from bench.servers import smls_server


def write_big(data: Path, doc_id: str, sentences: int, notes_bytes: int = 10_000) -> int:
    """texts_<doc_id>.json of `sentences` items written as a stream; its size in bytes."""
    texts = stdlib()
    words = " ".join(texts[:400]).split()
    rng = random.Random(7)
    per_page = 40
    pages = -(-sentences // per_page)
    (data / f"pages_{doc_id}.csv").write_text("page_id,page_number\n" + "".join(f"p{n},{n}\n" for n in range(1, pages + 1)))
    path = data / f"texts_{doc_id}.json"
    with path.open("w", encoding="utf-8") as f:
        f.write("[")
        for i in range(sentences):
            start = rng.randrange(len(words) - 2000)
            notes = " ".join(words[start : start + 2000])[:notes_bytes]
            f.write(("," if i else "") + json.dumps({"text": texts[i % len(texts)], "pages": [f"p{1 + i // per_page}"], "notes": notes}))
        f.write("]\n")
    return path.stat().st_size


def peak_rss_mb(pid: int) -> float:
    """The process's highest resident set size so far."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(say: Callable[[str], None], short: bool, sentences: int | None = None) -> None:
    """The table for bench/results.md."""
    sentences = sentences or (4_000 if short else 100_000)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = work / "data"
        write_document(data, "warm", stdlib()[:1000])
        began = time.perf_counter()
        size = write_big(data, "big", sentences)
        written = time.perf_counter() - began
        srv = smls_server("smls bigdoc", workers=1, SMLS_DATA_DIR=str(data), SMLS_CACHE_DIR=str(work / "cache"), SMLS_TIMEOUT="3600")
        try:
            srv.start(work / "bigdoc.log")
            master, worker = srv.pids()[:2]
            requests.get(f"{srv.url}/documents/warm", timeout=600).raise_for_status()
            baseline = peak_rss_mb(worker)
            rows = []
            t = time.perf_counter()
            listed = {d["id"]: d["sentences"] for d in requests.get(f"{srv.url}/documents", timeout=3600).json()["documents"]}
            rows.append(("GET /documents (counts the big file as a stream)", time.perf_counter() - t, None, listed.get("big")))
            for label in ("first GET /documents/big (validate, embed, stream)", "second GET /documents/big (cached)"):
                t = time.perf_counter()
                received, count = 0, 0
                with requests.get(f"{srv.url}/documents/big", stream=True, timeout=7200) as r:
                    r.raise_for_status()
                    for block in r.iter_content(1 << 20):
                        received += len(block)
                        count += block.count(b'"index":')
                rows.append((label, time.perf_counter() - t, received, count))
            after = peak_rss_mb(worker)
            master_peak = peak_rss_mb(master)
        finally:
            srv.stop()
    say(f"## A {size / 1e9:.2f} GB texts file ({sentences:,} sentences, ~10 KB of metadata each; written in {written:.0f} s), one worker")
    say()
    say("| request | seconds | response bytes | sentences |")
    say("|---|---|---|---|")
    for label, seconds, received, count in rows:
        say(f"| {label} | {seconds:.1f} | {'-' if received is None else f'{received / 1e9:.2f} GB'} | {count:,} |")
    say()
    say(f"Worker peak RSS: {baseline:.0f} MB after a 1,000-sentence document, {after:.0f} MB after the big one "
        f"(+{after - baseline:.0f} MB for a {size / 1e9:.2f} GB file); master peak {master_peak:.0f} MB.")
    say()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true")
    parser.add_argument("--sentences", type=int, help="another size (10 KB each)")
    args = parser.parse_args()
    measure(print, args.short, args.sentences)


if __name__ == "__main__":
    main()
