"""The c=1 goal's ratio in short blocks taken in turn: smls, bench.bare_server and the in-process reference, moments apart.

    .venv/bin/python -m bench.c1                          # onnx-int8, 60 rotations of 3 blocks of 25
    .venv/bin/python -m bench.c1 --backends onnx,torch --rotations 100

bench.rounds divides a c=1 cell's p50 by in-process p50s taken before and after the
backend's cells, seconds to a minute apart. On a host whose speed swings (one evening's
five rounds saw the onnx-int8 ceiling anywhere from 158 to 277 sentences/s) that ratio
moves with the host as much as with the server. Here one process takes three kinds of
block in turn, the order rotating: `--size` single-sentence passes one after another in
this process (the reference, as make bench's one-thread p50 takes it: the same encoder,
one stream of one thread, back to back), as many requests to smls at c=1, and as many to
bench.bare_server. A rotation's three blocks run the same sentences; each rotation moves
on through the demo corpus. Requests go on a kept-alive raw socket opened for the block
(a connection stays with one worker, and a worker's place beside or away from the client
can last: bench.pair). The first pass or request of each block is not timed: it is the
one that meets the caches the other blocks left.

Each rotation gives smls's p50 over the in-process p50 (the goal's ratio), the bare
server's over the in-process (the machine's share) and smls's over the bare server's
(smls's own); the medians over the rotations, and their quartiles, are printed.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.corpora import demo as corpus
from bench.inprocess import encoder
from bench.servers import Server, ask, bare_server, connect, embed_request, smls_server

KINDS = ("in process", "smls", "bare server")


def _block(kind: str, texts: list[str], enc, servers: dict[str, Server]) -> list[float]:
    """Seconds of each pass or request of one block, its first (untimed) left out."""
    if kind == "in process":
        enc.run([texts[0]])
        took = []
        for text in texts[1:]:
            began = time.perf_counter()
            enc.run([text])
            took.append(time.perf_counter() - began)
        return took
    sock: socket.socket = connect(servers[kind].port)
    try:
        ask(sock, embed_request(texts[0]))
        return [ask(sock, embed_request(text)) for text in texts[1:]]
    finally:
        sock.close()


def measure(backend: str, rotations: int, size: int, work: Path) -> list[dict[str, float]]:
    """Each rotation's p50 (seconds) per kind of block."""
    enc = encoder(backend, 1, 1)
    texts = corpus()
    servers = {"smls": smls_server("smls", SMLS_BACKEND=backend), "bare server": bare_server(backend)}
    out = []
    try:
        for name, server in servers.items():
            server.start(work / f"{name}.log")
        for kind in ("smls", "bare server"):  # warm-up: both servers' code and caches
            _block(kind, texts[:100], enc, servers)
        for r in range(rotations):
            start = r * (size + 1) % len(texts)
            block = (texts + texts)[start : start + size + 1]
            order = KINDS[r % 3 :] + KINDS[: r % 3]
            out.append({kind: statistics.median(_block(kind, block, enc, servers)) for kind in order})
    finally:
        for server in servers.values():
            server.stop()
    return out


def _summary(values: list[float]) -> str:
    q1, _, q3 = statistics.quantiles(values, n=4)
    return f"{statistics.median(values):.2f} ({q1:.2f} to {q3:.2f})"


def report(say: Callable[[str], None], backends: list[str], rotations: int, size: int, work: Path) -> None:
    """Measure each backend's rotations and say one table: the three ratios' medians (quartiles) and the p50s."""
    rows = {b: measure(b, rotations, size, work) for b in backends}
    say(f"## c=1 in blocks taken in turn ({rotations} rotations of 3 blocks of {size}, bench.c1)")
    say("")
    say("In each rotation, the same sentences: single-sentence passes back to back in process, smls at c=1 and "
        "bench.bare_server at c=1, the order rotating; each block's p50 against its rotation's others, so the host's "
        "drift between blocks a second apart cancels. Median over rotations (quartiles).")
    say("")
    say("| smls backend | smls / in process (the goal, <= 1.3) | bare server / in process (the machine's share) "
        "| smls / bare server (smls's own) | p50 ms: in process; smls; bare server |")
    say("|---|---|---|---|---|")
    for b, rounds in rows.items():
        ratios = [_summary([r[x] / r[y] for r in rounds]) for x, y in (("smls", "in process"), ("bare server", "in process"), ("smls", "bare server"))]
        p50s = "; ".join(f"{statistics.median(r[kind] for r in rounds) * 1000:.2f}" for kind in KINDS)
        say(f"| {b} | {' | '.join(ratios)} | {p50s} |")
    say("")


def main() -> None:
    """Run the rotations for each backend and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="onnx-int8", help="comma-separated: onnx, onnx-int8, torch")
    parser.add_argument("--rotations", type=int, default=60)
    parser.add_argument("--size", type=int, default=25, help="timed passes or requests per block")
    args = parser.parse_args()
    backends = args.backends.split(",")
    if args.rotations < 3 or not 1 <= args.size < len(corpus()):
        parser.error(f"--rotations must be at least 3, and --size from 1 to {len(corpus()) - 1} (the demo corpus's sentences, less one)")
    if not set(backends) <= {"onnx", "onnx-int8", "torch"}:
        parser.error(f"--backends: {args.backends!r} names a backend other than onnx, onnx-int8, torch")
    with tempfile.TemporaryDirectory() as tmp:
        report(print, backends, args.rotations, args.size, Path(tmp))


if __name__ == "__main__":
    main()
