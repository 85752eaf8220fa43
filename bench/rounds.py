"""The cells whose goals sit near their thresholds (one sentence at c=32 and c=1, 32 at c=32), in interleaved rounds: the median and the spread.

    .venv/bin/python -m bench.rounds                       # 5 rounds, every backend
    .venv/bin/python -m bench.rounds --rounds 9 --backends onnx-int8
    .venv/bin/python -m bench.rounds --against HEAD~3       # this tree and that commit's, side by side

One full `make bench` measures each cell once, and this machine's speed drifts by 20 to
35% from one minute to the next: a single ratio near 0.9 can land on either side of it.
Here every backend's server stays up while each round measures, for every backend in
turn, its ceiling, its server at c=32 and at c=1, and its ceiling again; each round's
ratio is against the mean of the ceilings just before and just after it. The ceiling is
the best batch and layout that `make bench`'s first table found, measured alone; taking
it afresh as the best of many layouts every round would bias it upwards.

Beside each c=1 cell, the same cell on bench.bare_server (the least any Python server
does around the same pass), the two in turn, their order swapped every round (on this
machine the first of two like cells ran slower). The c=1 ratio then splits in two: the
bare server's p50 over the in-process p50 is the machine's share (loopback, wake-ups,
the load generator), smls's p50 over the bare server's is smls's own.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.inprocess import ceilings, recheck
from bench.servers import ROOT, Server, bare_server, load, settle, smls_server


@dataclass(frozen=True)
class Round:
    """One round of one backend: the server's cells and the ceilings around them."""

    c32_sps: float
    c1_p50_ms: float
    ceiling_sps: tuple[float, float]  # before, after
    one_thread_p50_ms: tuple[float, float]
    bulk_sps: float  # 32 sentences per request, c=32
    at32_sps: tuple[float, float]  # the ceiling at batch 32, before and after
    bare_c1_p50_ms: float | None = None  # bench.bare_server's c=1 p50, beside the server's (None: it did not start)

    @property
    def c32_ratio(self) -> float:
        """One-sentence sentences/s at c=32 over the mean ceiling of the round."""
        return self.c32_sps / statistics.fmean(self.ceiling_sps)

    @property
    def bulk_ratio(self) -> float:
        """32-sentence requests' sentences/s at c=32 over the mean ceiling at batch 32 of the round."""
        return self.bulk_sps / statistics.fmean(self.at32_sps)

    @property
    def c1_ratio(self) -> float:
        """c=1 p50 over the mean one-thread in-process p50 of the round."""
        return self.c1_p50_ms / statistics.fmean(self.one_thread_p50_ms)

    @property
    def bare_ratio(self) -> float | None:
        """The bare server's c=1 p50 over the mean one-thread in-process p50 of the round: the machine's share."""
        return None if self.bare_c1_p50_ms is None else self.bare_c1_p50_ms / statistics.fmean(self.one_thread_p50_ms)

    @property
    def over_bare(self) -> float | None:
        """smls's c=1 p50 over the bare server's, measured beside it: smls's own share."""
        return None if self.bare_c1_p50_ms is None else self.c1_p50_ms / self.bare_c1_p50_ms


def measure(
    say: Callable[[str], None], backends: list[str], ceil: dict[str, dict], work: Path, rounds: int, seconds: int, against: tuple[str, Path] | None = None
) -> dict[str, list[Round]]:
    """Run `rounds` interleaved rounds over `backends` and print one table: per backend, the median and range of each ratio.

    With `against` (a name and another checkout of smls), each backend is also served from
    that tree, its cells taken beside this tree's in every round, against the same
    ceilings, the two trees' order swapped each round: a before and after side by side.
    """
    trees = {"": None} if against is None else {"": None, f" @ {against[0]}": against[1]}
    servers: dict[str, Server] = {}
    bare: dict[str, Server] = {}
    rows: dict[str, list[str]] = {}  # backend -> its rows' labels (the backend, then the other tree's)
    out: dict[str, list[Round]] = {}
    try:
        for b in backends:
            for suffix, tree in trees.items():
                label = b + suffix
                srv = smls_server(f"smls {label} (rounds)", tree=tree, SMLS_BACKEND=b)
                try:
                    srv.start(work / f"rounds-{label.replace(' ', '')}.log")
                except RuntimeError as exc:
                    say(f"{srv.name}: could not start ({exc}); no rounds for it")
                    srv.stop()
                    continue
                servers[label], out[label] = srv, []
                rows.setdefault(b, []).append(label)
            if b not in rows:
                continue
            floor = bare[b] = bare_server(b)
            try:
                floor.start(work / f"bare-{b}.log")
                load(floor, 1, 1, 1, work)  # warm-up, as the smls server's warm_up
            except RuntimeError as exc:
                say(f"{floor.name}: could not start ({exc}); the c=1 cells go without it")
                floor.stop()
                del bare[b]
        ceiling_s = max(1.0, seconds / 3)
        for k in range(rounds):
            for b, labels in rows.items():
                # Encoders made afresh each time, as recheck does: torch's thread count is one
                # per process, so a one-thread encoder kept beside the best layout's would slow it.
                before = recheck(b, ceil[b], ceiling_s)
                cells = {}
                for label in labels if k % 2 == 0 else labels[::-1]:
                    c32 = load(servers[label], 1, 32, seconds, work)
                    settle(servers[label])
                    c1, bare_c1 = _c1_cells(servers[label], bare.get(b), seconds, work, smls_first=k % 2 == 0)
                    bulk = load(servers[label], 32, 32, seconds, work)
                    settle(servers[label])  # up to 32 requests of 32 sentences still queued: not beside the ceiling
                    cells[label] = (c32, c1, bare_c1, bulk)
                after = recheck(b, ceil[b], ceiling_s)
                for label, (c32, c1, bare_c1, bulk) in cells.items():
                    out[label].append(Round(c32["sps"], c1["p50"], (before["best"], after["best"]),
                                            (before["p50_ms_one_thread"], after["p50_ms_one_thread"]), bulk["sps"], (before["at32"], after["at32"]),
                                            bare_c1["p50"] if bare_c1 else None))
    finally:
        for srv in [*servers.values(), *bare.values()]:
            srv.stop()
    _report(say, out, seconds)
    return out


def _c1_cells(srv: Server, floor: Server | None, seconds: int, work: Path, smls_first: bool) -> tuple[dict, dict | None]:
    """The server's c=1 cell and the bare server's (None without one), one after the other in the order asked."""
    if floor is None:
        return load(srv, 1, 1, seconds, work), None
    if smls_first:
        c1 = load(srv, 1, 1, seconds, work)
        return c1, load(floor, 1, 1, seconds, work)
    bare_c1 = load(floor, 1, 1, seconds, work)
    return load(srv, 1, 1, seconds, work), bare_c1


def _spread(values: list[float]) -> str:
    """'median (min to max)' of values, two decimals."""
    return f"{statistics.median(values):.2f} ({min(values):.2f} to {max(values):.2f})"


def _report(say: Callable[[str], None], out: dict[str, list[Round]], seconds: int) -> None:
    n = len(next(iter(out.values()), []))
    say(f"## The near-threshold cells, {n} interleaved rounds")
    say("")
    say(f"Each round measures every backend in turn: its ceiling (best batch and layout, its rate at batch 32, and the one-thread p50), "
        f"its server for {seconds:g} s at c=32 and at c=1 (one sentence per request) and at c=32 with 32 sentences per request, then its "
        "ceiling again. A ratio is against the mean of the two ceilings. The goals are judged on the median; the range shows what one run "
        "alone could have said.")
    say("")
    say("| smls backend | c=32, 1 sentence / ceiling: median (range) | c=1 p50 / 1-thread p50: median (range) "
        "| c=32, 32 sentences / ceiling at batch 32: median (range) | every round, c=32 | every round, c=1 | every round, 32 sentences "
        "| ceiling sent/s: median (range) |")
    say("|---|---|---|---|---|---|---|---|")
    for b, rs in out.items():
        if not rs:
            continue
        c32, c1, bulk = [r.c32_ratio for r in rs], [r.c1_ratio for r in rs], [r.bulk_ratio for r in rs]
        ceilings_seen = [x for r in rs for x in r.ceiling_sps]
        each = " | ".join(" / ".join(f"{x:.2f}" for x in ratios) for ratios in (c32, c1, bulk))
        say(f"| {b} | {_spread(c32)} | {_spread(c1)} | {_spread(bulk)} | {each} "
            f"| {statistics.median(ceilings_seen):.0f} ({min(ceilings_seen):.0f} to {max(ceilings_seen):.0f}) |")
    say("")
    _report_c1(say, out)


def _report_c1(say: Callable[[str], None], out: dict[str, list[Round]]) -> None:
    """The c=1 ratio split in two: the bare server's share (the machine's) and smls's own, round by round."""
    split = {b: rs for b, rs in out.items() if rs and all(r.bare_c1_p50_ms is not None for r in rs)}
    if not split:
        return
    say("The c=1 ratio split in two: bench.bare_server (a bare Python HTTP server around the same pass, no checks, no options) "
        "at c=1 beside smls's cell in every round, the two in turn, the order swapped each round.")
    say("")
    say("| smls backend | smls c=1 p50 / 1-thread p50 | bare server c=1 p50 / 1-thread p50 (the machine's share) "
        "| smls c=1 p50 / bare server's (smls's own share) | every round: smls / bare | p50 ms, every round: smls / bare |")
    say("|---|---|---|---|---|---|")
    for b, rs in split.items():
        bare_ratios = [r.bare_ratio for r in rs if r.bare_ratio is not None]
        over = [r.over_bare for r in rs if r.over_bare is not None]
        each = " / ".join(f"{x:.2f}" for x in over)
        ms = ", ".join(f"{r.c1_p50_ms:.2f} / {r.bare_c1_p50_ms:.2f}" for r in rs)
        say(f"| {b} | {_spread([r.c1_ratio for r in rs])} | {_spread(bare_ratios)} | {_spread(over)} | {each} | {ms} |")
    say("")


def main() -> None:
    """Find each backend's best layout, then run the rounds and print their table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=8, help="seconds per server cell")
    parser.add_argument("--backends", default="onnx,onnx-int8,torch")
    parser.add_argument("--against", metavar="REF", help="also serve each backend from this git commit (a worktree), side by side in every round")
    args = parser.parse_args()
    if args.rounds < 1 or args.seconds <= 0:
        parser.error("--rounds must be at least 1 and --seconds above 0")
    backends = args.backends.split(",")
    ceil = ceilings(backends, 2)
    with tempfile.TemporaryDirectory() as tmp:
        against = None
        if args.against:
            tree = Path(tmp) / "against"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(tree), args.against], check=True)
            against = (args.against, tree)
        try:
            measure(print, backends, ceil, Path(tmp), args.rounds, args.seconds, against)
        finally:
            if against:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(against[1])], check=False)


if __name__ == "__main__":
    main()
