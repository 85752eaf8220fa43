"""What a pause, or another process's work, before a forward pass costs the pass: part of the c=1 floor no server code can remove.

    .venv/bin/python -m bench.experiments.gap                          # onnx-int8, 3,000 passes
    .venv/bin/python -m bench.experiments.gap --backend onnx --passes 5000

The in-process p50 of `make bench` runs one pass after another, with no pause between.
A server at c=1 waits for each next request, while its client reads the answer and
writes the request. bench.bare_server's c=1 p50 over the in-process p50 ("the
machine's share" in bench.rounds) includes that. This runs the same encoder as that
reference (one stream of one thread) on each sentence six times running, with, before
each of the six passes, no pause; a pause of 0.3 ms or 1 ms, spent asleep or spinning;
or a pass run by another process (a forked child sharing the session, woken through a
pipe while this one waits, as a server waits while its client works). Each pass's time
is paired with the same sentence's pass that had no pause, moments apart, so the host's
drift cancels. Spinning keeps the CPU busy, so it shows whether a cost comes from the
core going idle (a sleep state, the hypervisor descheduling it); the other process
shows what another program's work on the cores does to the caches.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from functools import partial

from bench.corpora import demo as corpus
from bench.inprocess import encoder
from smls.encoders.base import Encoder


def _pause(seconds: float, spin: bool) -> None:
    if spin:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass
    else:
        time.sleep(seconds)


class _OtherProcess:
    """A forked child that runs a pass of its own each time it is asked, while this process waits for it (as a server waits for its client)."""

    def __init__(self, enc: Encoder, text: str) -> None:
        self._go_r, self._go_w = os.pipe()
        self._done_r, self._done_w = os.pipe()
        self.pid = os.fork()  # (the encoder's session, made here with one thread, is shared as gunicorn's workers share it)
        if self.pid == 0:
            try:
                os.close(self._go_w)
                os.close(self._done_r)
                while os.read(self._go_r, 1) == b"g":
                    enc.run([text])
                    os.write(self._done_w, b"x")
            finally:
                os._exit(0)
        os.close(self._go_r)
        os.close(self._done_w)  # (so that a child gone for good reads as the end of this pipe, not a hang)

    def run(self) -> None:
        """Let the child run one pass; return once it has."""
        os.write(self._go_w, b"g")
        if not os.read(self._done_r, 1):
            raise RuntimeError("the other process ended before its pass was done")

    def close(self) -> None:
        """Stop the child."""
        try:
            os.write(self._go_w, b"q")
        except BrokenPipeError:
            pass  # (it ended already)
        os.waitpid(self.pid, 0)


def measure(backend: str, passes: int) -> dict[str, list[float]]:
    """Seconds of each one-sentence pass, by what came before it, the kinds taken in turn."""
    enc = encoder(backend, 1, 1)
    texts = corpus()
    other = _OtherProcess(enc, texts[0])
    before: dict[str, Callable[[], None] | None] = {
        "no pause": None,
        "0.3 ms asleep": partial(_pause, 0.0003, False),
        "0.3 ms spinning": partial(_pause, 0.0003, True),
        "1 ms asleep": partial(_pause, 0.001, False),
        "1 ms spinning": partial(_pause, 0.001, True),
        "another process's pass": other.run,
    }
    kinds = list(before)
    took: dict[str, list[float]] = {kind: [] for kind in kinds}
    try:
        for i in range(passes - passes % len(kinds)):
            kind = kinds[i % len(kinds)]
            do = before[kind]
            if do is not None:
                do()
            began = time.perf_counter()
            enc.run([texts[i // len(kinds) % len(texts)]])  # (each sentence once after every kind)
            took[kind].append(time.perf_counter() - began)
    finally:
        other.close()
    return took


def main() -> None:
    """Print each kind's p50 and its median paired difference against no pause."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="onnx-int8", choices=("onnx", "onnx-int8", "torch"))
    parser.add_argument("--passes", type=int, default=3000)
    args = parser.parse_args()
    if args.passes < 12:
        parser.error("--passes must be at least 12")
    took = measure(args.backend, args.passes)
    alone = took["no pause"]
    print(f"# Before each one-sentence pass, {args.backend}, one thread, {len(alone)} passes each\n")
    print("| before the pass | p50 ms | median paired difference against no pause |")
    print("|---|---|---|")
    for kind, times in took.items():
        paired = statistics.median(t - a for t, a in zip(times, alone, strict=True)) * 1e6
        print(f"| {kind} | {statistics.median(times) * 1000:.3f} | {paired:+.0f} µs |")


if __name__ == "__main__":
    main()
