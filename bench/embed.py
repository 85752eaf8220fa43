"""`python -m smls embed` against the in-process ceiling of the same backend: here, on one Ray node, on two Ray nodes.

Each run embeds the same corpus from a JSONL file into a fresh folder; its rate is the
one the command prints. Locally that clock starts once the model is loaded; on Ray it
starts before connecting, so the actors' start-up (each loads the model) is part of
Ray's overhead. The ceiling is the model alone in this process on every core, taking the
same texts in blocks of the same size, before and after the runs (the machine drifts).
Two corpora: the standard library's sentences, and its long paragraphs (one to several
hundred tokens, many cut at 256), where padding would show if blocks were not sorted by
length; one of fewer than 4 blocks an actor is taken several times over (BLOCKS_AN_ACTOR). Run alone: `.venv/bin/python -m bench.embed [--short]`.
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
# Ray is for corpora of many blocks. On one of fewer than this many blocks an actor, a run
# measures the actors' start and the last block's tail, not a rate: such a corpus is taken
# several times over (the paragraphs: 2 blocks, so 5 times; the sentences as they are).
BLOCKS_AN_ACTOR = 4


def _run(corpus: Path, out: Path, backend: str, *extra: str, env: dict[str, str] | None = None) -> tuple[float, float | None, float | None]:
    """Rows/s that one smls embed run reports: in all, once running, and the seconds it took to start (Ray only)."""
    base = {**smls_server("x").env, "SMLS_BACKEND": backend, "SMLS_CACHE_DIR": str(ROOT / ".cache/smls"), **(env or {})}
    args = [str(VENV_BIN / "python"), "-m", "smls", "embed", str(corpus), "--out", str(out), "--block-rows", str(BLOCK), "--no-progress", *extra]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env=base, timeout=3600)
    found = re.search(r"([0-9,]+) rows/s", done.stdout)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"smls embed failed: {done.stderr[-2000:]}")
    running = re.search(r"\(([0-9,]+) rows/s once running, \d+ actors?; ([0-9.]+) s to start\)", done.stdout)
    number = lambda text: float(text.replace(",", ""))  # noqa: E731
    return number(found.group(1)), number(running.group(1)) if running else None, number(running.group(2)) if running else None


def by_length_in_blocks(texts: list[str]) -> list[str]:
    """The texts sorted by length within each block: what the ceiling takes, so that it pads as little as smls embed may."""
    return [t for start in range(0, len(texts), BLOCK) for t in sorted(texts[start : start + BLOCK], key=len, reverse=True)]


def measure(say: Callable[[str], None], backend: str, work: Path, short: bool) -> None:
    """The table: smls embed here, on Ray (one node of every core; one-CPU nodes), each over the ceiling."""
    say(f"## python -m smls embed ({backend}), here and on Ray")
    say()
    say("| corpus | run | rows/s in all | once running | to start (s) | ceiling: before, after | ratio in all | ratio once running |")
    say("|---|---|---|---|---|---|---|---|")
    n_cores = cores()
    for name, texts in (("stdlib sentences", stdlib()), ("stdlib paragraphs", paragraphs())):
        texts = texts[: 1500 if short else None]
        times = 1 if short else -(-BLOCKS_AN_ACTOR * n_cores * BLOCK // len(texts))
        name, texts = (name if times == 1 else f"{name}, {len(texts):,} x {times}"), texts * times
        corpus = work / f"embed-{name.replace(' ', '-')}.jsonl"
        corpus.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)), encoding="utf-8")
        # The model alone on every core (its best layout), taking the texts in passes of 32, sorted by length within each block.
        before, layout = corpus_ceiling(backend, by_length_in_blocks(texts), 32)
        runs = {"here, every core": _run(corpus, work / f"{corpus.stem}-local", backend)}
        for label, nodes, cpus in ((f"Ray, 1 node x {n_cores} CPUs", 1, n_cores), (f"Ray, {n_cores} nodes x 1 CPU", n_cores, 1)):
            with Cluster(nodes=nodes, cpus=cpus) as cluster:
                runs[label] = _run(corpus, work / f"{corpus.stem}-{nodes}", backend, "--ray", cluster.address, env=cluster.auth)
        after, _ = corpus_ceiling(backend, by_length_in_blocks(texts), 32)
        ceiling = (before + after) / 2
        for label, (whole, running, start) in runs.items():
            steady = running or whole  # (here the clock starts once the model is loaded)
            say(f"| {name} ({len(texts):,}) | {label} | {whole:.0f} | {steady:.0f} | {start if start is not None else '-'} | "
                f"{before:.0f}, {after:.0f} ({layout}) | {whole / ceiling:.2f} | {steady / ceiling:.2f} |")
    say()
    say(f"Blocks of {BLOCK} rows; a corpus of fewer than {BLOCKS_AN_ACTOR} blocks an actor is taken several times over (a rate, "
        "not a start and a tail). Goals: here >= 0.9 of the ceiling, Ray >= 0.85 once running. Here the clock starts once the "
        "model is loaded; on Ray it starts before connecting, so 'in all' includes starting the actors (each loads the model), "
        "a fixed cost that a long run does not notice.")
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
