"""What a pause before a forward pass costs the pass, in process: part of the c=1 floor no server code can remove.

    .venv/bin/python -m bench.gap                          # onnx-int8, 2,500 passes
    .venv/bin/python -m bench.gap --backend onnx --passes 5000

The in-process p50 of `make bench` runs one pass after another, with no pause between.
A server at c=1 waits for each next request, while its client reads the answer and
writes the request. bench.bare_server's c=1 p50 over the in-process p50 ("the
machine's share" in bench.rounds) includes that. This runs the same encoder as that
reference (one stream of one thread) on each sentence five times running, with, before
each of the five passes, no pause, or a pause of 0.3 ms or 1 ms, spent asleep or
spinning. Each pass's time is paired with the same sentence's pass that had no pause,
moments apart, so the host's drift cancels. Spinning keeps the CPU
busy, so it shows whether the cost comes from the core going idle (a sleep state, the
hypervisor descheduling it) or from the caches the pause lets go cold.
"""

from __future__ import annotations

import argparse
import statistics
import time

from bench.run import _encoder, corpus

# (seconds, spin): none, then each pause asleep and spinning.
PAUSES = ((0.0, False), (0.0003, False), (0.0003, True), (0.001, False), (0.001, True))


def _pause(seconds: float, spin: bool) -> None:
    if spin:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass
    elif seconds:
        time.sleep(seconds)


def measure(backend: str, passes: int) -> dict[tuple[float, bool], list[float]]:
    """Seconds of each one-sentence pass, by the pause before it, the pauses taken in turn."""
    enc = _encoder(backend, 1, 1)
    texts = corpus()
    took: dict[tuple[float, bool], list[float]] = {p: [] for p in PAUSES}
    for i in range(passes - passes % len(PAUSES)):
        pause = PAUSES[i % len(PAUSES)]
        _pause(*pause)
        began = time.perf_counter()
        enc.run([texts[i // len(PAUSES) % len(texts)]])  # (each sentence once after every kind of pause)
        took[pause].append(time.perf_counter() - began)
    return took


def main() -> None:
    """Print each pause's p50 and its median paired difference against no pause."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="onnx-int8", choices=("onnx", "onnx-int8", "torch"))
    parser.add_argument("--passes", type=int, default=2500)
    args = parser.parse_args()
    if args.passes < 2 * len(PAUSES):
        parser.error(f"--passes must be at least {2 * len(PAUSES)}")
    took = measure(args.backend, args.passes)
    alone = took[PAUSES[0]]
    print(f"# A pause before each one-sentence pass, {args.backend}, one thread, {len(alone)} passes each\n")
    print("| before the pass | p50 ms | median paired difference against no pause |")
    print("|---|---|---|")
    for (seconds, spin), times in took.items():
        what = "no pause" if not seconds else f"{seconds * 1000:g} ms {'spinning' if spin else 'asleep'}"
        paired = statistics.median(t - a for t, a in zip(times, alone, strict=True)) * 1e6
        print(f"| {what} | {statistics.median(times) * 1000:.3f} | {paired:+.0f} µs |")


if __name__ == "__main__":
    main()
