"""Two trees' servers side by side at c=1: one client alternates single requests between them, and the paired differences say which is faster.

    .venv/bin/python -m bench.experiments.pair                           # this tree against HEAD~1, 3000 pairs, onnx-int8
    .venv/bin/python -m bench.experiments.pair --against 0d142bd --pairs 5000
    .venv/bin/python -m bench.experiments.pair --against HEAD            # an A/A check of the method: expect about 0
    .venv/bin/python -m bench.experiments.pair --set SMLS_INLINE=off     # both servers so: the request threads' path

A change of 0.1-0.2 ms in a 2-10 ms request is far below what this machine's drift lets
two runs one after the other show (bench.rounds: rounds of seconds, and the in-process
p50 moves 20-35% between them). Here both servers are up at once. The client sends one
request to each in turn, on a kept-alive raw socket (no client library in the way), and
flips the order every pair. Each pair then meets the same moment of the machine, and
the median of the paired differences estimates the change. The other tree is checked
out with `git worktree` into a temporary folder and served from there with this tree's
virtual environment (gunicorn imports smls from the folder it runs in). Its ONNX
exports are made afresh there, in its own .cache.

Every RECONNECT pairs both connections are opened anew. Without that, one A/A run
(--against HEAD) read -520 µs: the worker a connection stays with sat, for the whole
run, where the kernel had placed it. With it, A/A runs read -4 and +19 µs, and the
halves of a run within 0.1 ms of each other (docs/benchmarks.org, "Around the pass").
Both servers are started anew halfway, the other one first, so which one started first
weighs on both sides equally.

That resolution depends on the hour. On a busier host (a pass of 7-10 ms, quartiles of
the paired differences +-1 ms) A/A runs read +201 and -234 µs. Run an A/A first: its
result is how small a difference the run after it can show.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
from pathlib import Path

from bench.corpora import demo as corpus
from bench.servers import ROOT, Server, ask, connect, embed_request, smls_server

# Pairs per connection. A kept-alive connection stays with one worker, and the kernel's
# placement of that worker beside or away from the client can persist for a whole run.
RECONNECT = 100


def _session(servers: dict[str, Server], first: str, pairs: int, work: Path) -> dict[str, list[float]]:
    """Start both servers, `first` first; alternate `pairs` pairs of requests between them; stop them. Each one's seconds per request."""
    try:
        for name in sorted(servers, key=lambda name: name != first):
            servers[name].start(work / f"{name}.log")
        requests = [embed_request(t) for t in corpus()]
        socks = {name: connect(server.port) for name, server in servers.items()}
        for i in range(200):  # warm-up: both servers' code and caches
            for sock in socks.values():
                ask(sock, requests[i % len(requests)])
        took: dict[str, list[float]] = {"this": [], "other": []}
        for i in range(pairs):
            if i % RECONNECT == 0:  # a new connection may land on the server's other worker
                for name, sock in socks.items():
                    sock.close()
                    socks[name] = connect(servers[name].port)
            for name in ("this", "other") if i % 2 else ("other", "this"):
                took[name].append(ask(socks[name], requests[i % len(requests)]))
        for sock in socks.values():
            sock.close()
        return took
    finally:
        for server in servers.values():
            server.stop()


def main() -> None:
    """Serve both trees, alternate the requests, print each p50 and the paired differences."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", default="HEAD~1", help="the other tree: any commit git knows")
    parser.add_argument("--pairs", type=int, default=3000)
    parser.add_argument("--backend", default="onnx-int8", choices=("onnx", "onnx-int8", "torch"))
    parser.add_argument("--set", action="append", default=[], metavar="SMLS_NAME=VALUE", help="a setting for both servers (repeatable)")
    args = parser.parse_args()
    if args.pairs < 4:
        parser.error("--pairs must be at least 4")
    settings = {"SMLS_BACKEND": args.backend}
    for setting in args.set:
        name, equals, value = setting.partition("=")
        if not equals or not name.startswith("SMLS_"):
            parser.error(f"--set takes SMLS_NAME=VALUE, not {setting!r}")
        settings[name] = value
    half = args.pairs // 2
    with tempfile.TemporaryDirectory() as tmp:
        work, other_tree = Path(tmp), Path(tmp) / "other"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(other_tree), args.against], check=True)
        try:
            servers = {"this": smls_server("this tree", **settings), "other": smls_server(args.against, **settings)}
            servers["other"].cwd = other_tree
            # An A/A run once read +200 µs, the same sign in both halves, with the same server
            # started first throughout. Whether start order was why is not known (the next A/A
            # read -57 and -350 µs by half), so each half starts the other first, and shows it.
            halves = [_session(servers, first, half, work) for first in ("this", "other")]
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(other_tree)], check=False)
    took = {name: halves[0][name] + halves[1][name] for name in ("this", "other")}
    diffs = [a - b for a, b in zip(took["this"], took["other"], strict=True)]
    p50 = {name: statistics.median(t) * 1000 for name, t in took.items()}
    print(f"# This tree against {args.against}, {', '.join(args.set) or 'default settings'}, {args.backend}, c=1, {len(diffs)} alternated pairs\n")
    print(f"- p50: this tree {p50['this']:.3f} ms, {args.against} {p50['other']:.3f} ms")
    quartiles = ", ".join(f"{q * 1e6:.0f}" for q in statistics.quantiles(diffs, n=4))
    print(f"- paired difference (this - other), median: {statistics.median(diffs) * 1e6:+.1f} µs (quartiles {quartiles} µs)")
    print(f"- by half: this tree started first {statistics.median(diffs[:half]) * 1e6:+.1f} µs, "
          f"{args.against} started first {statistics.median(diffs[half:]) * 1e6:+.1f} µs")


if __name__ == "__main__":
    main()
