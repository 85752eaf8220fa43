"""Bulk /embed on long, varied text: 32 texts a request at c=32 against the in-process ceiling on the same texts.

Two corpora nothing in smls was tuned on (bench/corpora.py): the sentences of the
standard library's docstrings (technical English of every length), and its paragraphs of
200 to 2,000 characters (one to several hundred tokens, many cut at 256). A request of 32
paragraphs is seconds of work, so 32 connections keep a queue of about a thousand: the
window is a minute, after a warm-up that fills the queue, and the ceiling (the model
alone on every core, taking the same texts 32 at a time, its best layout) is measured
before and after. Run alone: `.venv/bin/python -m bench.longtext [--short] [--backend onnx-int8]`.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench.corpora import paragraphs, stdlib
from bench.inprocess import corpus_ceiling
from bench.servers import load, settle, smls_server


def measure(say: Callable[[str], None], backend: str, work: Path, short: bool) -> None:
    """The table: per corpus, one server, one window, the ceiling on each side of it."""
    seconds, warm = (3, 2) if short else (60, 15)
    say(f"## Bulk /embed on long text ({backend})")
    say()
    say("| corpus | texts/s at c=32 | p50 s | errors | ceiling: before, after (layout) | ratio |")
    say("|---|---|---|---|---|---|")
    for name, texts in (("stdlib sentences", stdlib()), ("stdlib paragraphs", paragraphs())):
        texts = texts[: 600 if short else 3000]
        before, layout = corpus_ceiling(backend, texts, 32)
        server = smls_server(f"smls {name.replace(' ', '-')} {backend}", SMLS_BACKEND=backend)
        server.texts = texts
        try:
            server.start(work / f"longtext-{backend}.log")
            load(server, 32, 32, warm, work)  # fills the queue: what the window sees is the steady state
            settle(server)
            cell = load(server, 32, 32, seconds, work)
        finally:
            server.stop()
        after, _ = corpus_ceiling(backend, texts, 32)
        say(f"| {name} ({len(texts):,}) | {cell['sps']:.1f} | {cell['p50'] / 1000:.1f} | {cell['errors']} | {before:.1f}, {after:.1f} ({layout}) | "
            f"{cell['sps'] / ((before + after) / 2):.2f} |")
    say()
    say(f"32 texts a request, {seconds} s after a {warm} s warm-up. Goal: >= 0.9 of the ceiling.")
    say()


def main() -> None:
    """Print the table alone."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true")
    parser.add_argument("--backend", default="onnx-int8")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        measure(print, args.backend, Path(tmp), args.short)


if __name__ == "__main__":
    main()
