"""`python -m smls embed` against the in-process ceiling of the same backend: here, on one Ray node, on two Ray nodes.

Each run embeds the same corpus from a JSONL file into a fresh folder; its rate is the
one the command prints. Locally that clock starts once the model is loaded; on Ray it
starts before connecting, so the actors' start-up (each loads the model) is part of
Ray's overhead. The ceiling is the model alone in this process on every core, taking the
same texts in blocks of the same size, before and after the runs (the machine drifts).
Two corpora: the standard library's sentences, and its long paragraphs (one to several
hundred tokens, many cut at 256), where padding would show if blocks were not sorted by
length. Run alone: `.venv/bin/python -m bench.embed [--short]`.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench.corpora import paragraphs, stdlib
from bench.inprocess import cores, corpus_ceiling
from bench.servers import ROOT, VENV_BIN, smls_server
from scripts.ray_cluster import Cluster

BLOCK = 1024  # rows a block (smls embed --block-rows)


def _run(corpus: Path, out: Path, backend: str, *extra: str, env: dict[str, str] | None = None) -> float:
    """Rows/s that one smls embed run reports."""
    base = {**smls_server("x").env, "SMLS_BACKEND": backend, "SMLS_CACHE_DIR": str(ROOT / ".cache/smls"), **(env or {})}
    args = [str(VENV_BIN / "python"), "-m", "smls", "embed", str(corpus), "--out", str(out), "--block-rows", str(BLOCK), "--no-progress", *extra]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env=base, timeout=3600)
    found = re.search(r"([0-9,]+) rows/s", done.stdout)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"smls embed failed: {done.stderr[-2000:]}")
    return float(found.group(1).replace(",", ""))


def measure(say: Callable[[str], None], backend: str, work: Path, short: bool) -> None:
    """The table: smls embed here, on Ray (one node of every core; two nodes of one core each), each over the ceiling."""
    say(f"## python -m smls embed ({backend}), here and on Ray")
    say()
    say("| corpus | run | rows/s | ceiling (layout) | ratio |")
    say("|---|---|---|---|---|")
    n_cores = cores()
    for name, texts in (("stdlib sentences", stdlib()), ("stdlib paragraphs", paragraphs())):
        texts = texts[: 1500 if short else None]
        corpus = work / f"embed-{name.replace(' ', '-')}.jsonl"
        corpus.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)), encoding="utf-8")
        before, layout = corpus_ceiling(backend, texts, BLOCK)
        rates = {"here, every core": _run(corpus, work / f"{corpus.stem}-local", backend)}
        for label, nodes, cpus in ((f"Ray, 1 node x {n_cores} CPUs", 1, n_cores), (f"Ray, {n_cores} nodes x 1 CPU", n_cores, 1)):
            with Cluster(nodes=nodes, cpus=cpus) as cluster:
                rates[label] = _run(corpus, work / f"{corpus.stem}-{nodes}", backend, "--ray", cluster.address, env=cluster.auth)
        after, _ = corpus_ceiling(backend, texts, BLOCK)
        ceiling = (before + after) / 2
        for label, rate in rates.items():
            say(f"| {name} ({len(texts):,}) | {label} | {rate:.0f} | {ceiling:.0f} ({layout}; {before:.0f} before, {after:.0f} after) | {rate / ceiling:.2f} |")
    say()
    say(f"Blocks of {BLOCK} rows. Goals: here >= 0.9 of the ceiling; Ray >= 0.85 (its clock includes connecting and "
        "starting the actors, each loading the model).")
    say()


def main() -> None:
    """Print the table alone."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--short", action="store_true", help="1,500 texts a corpus")
    parser.add_argument("--backend", default="onnx-int8")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        measure(print, args.backend, Path(work), args.short)


if __name__ == "__main__":
    main()
