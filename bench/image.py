"""The container image (`make image`) against the same server outside it: size, cold start, /embed at c=32.

Both servers run the image's default backend (onnx) with their default layout on this
machine's cores, side by side: the loads alternate, inside then outside, for a few
rounds, and the ratio is the median's. Cold start is `podman run -d` to the first 200 of
/ready (the model and its exports baked in). Not run when podman or the image is
missing (`make image` builds it). Run alone: `.venv/bin/python -m bench.image [--short]`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import requests

from bench.procs import free_port
from bench.servers import ROOT, Server, load, smls_server

IMAGE = os.environ.get("SMLS_IMAGE", "localhost/smls:latest")
FULL_IMAGE = os.environ.get("SMLS_IMAGE_FULL", "localhost/smls:full")
# podman's settings for this machine, as `make image` uses them.
PODMAN_ENV = {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(ROOT / "deploy" / "podman" / "containers.conf"))}


def podman(*args: str) -> subprocess.CompletedProcess[str]:
    """Run podman with the repository's containers.conf."""
    return subprocess.run(["podman", *args], capture_output=True, text=True, env=PODMAN_ENV, timeout=300)


def size_mb(image: str) -> float | None:
    """The image's size in MB, None if it is not there."""
    done = podman("image", "inspect", "--format", "{{.Size}}", image)
    return int(done.stdout) / 1e6 if done.returncode == 0 else None


def cold_start(image: str) -> float:
    """Seconds from `podman run -d` to the first 200 of /ready."""
    name, port = f"smls-bench-{uuid.uuid4().hex[:8]}", free_port()
    start = time.perf_counter()
    try:
        if podman("run", "--detach", "--name", name, "--publish", f"127.0.0.1:{port}:8000", image).returncode != 0:
            raise RuntimeError(f"podman run {image} failed")
        while time.perf_counter() - start < 120:
            try:
                if requests.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                    return time.perf_counter() - start
            except requests.RequestException:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"{image} did not get ready in 120 s")
    finally:
        podman("rm", "--force", "--time", "0", name)


def container_server(image: str) -> Server:
    """The image under podman, published on a loopback port: `podman run` in the foreground, so stopping it stops the container."""
    port = free_port()
    cmd = ["podman", "run", "--rm", "--name", f"smls-bench-{uuid.uuid4().hex[:8]}", "--publish", f"127.0.0.1:{port}:8000",
           "--env", "SMLS_ACCESS_LOG=", "--env", "SMLS_LOG_LEVEL=warning", image]
    return Server("smls in the image", cmd, PODMAN_ENV, "/embed", "message", health="/ready", port=port)


def measure(say: Callable[[str], None], work: Path, seconds: float, short: bool) -> None:
    """The table: size, cold start, and /embed c=32 inside the image over outside it."""
    say("## The container image")
    say()
    size = size_mb(IMAGE) if shutil.which("podman") else None
    if size is None:
        say(f"Not run: no podman, or no image {IMAGE} (`make image` builds it).")
        say()
        return
    full = size_mb(FULL_IMAGE)
    starts = sorted(cold_start(IMAGE) for _ in range(1 if short else 5))
    say(f"- {IMAGE}: {size:.0f} MB (ONNX backends, no torch)" + (f"; the full image with torch: {full:.0f} MB" if full else ""))
    say(f"- cold start, `podman run -d` to the first 200 of /ready: median {statistics.median(starts):.2f} s "
        f"(of {len(starts)}: {', '.join(f'{s:.2f}' for s in starts)}); goal <= 2 s")
    say()
    say("| round | inside: sentences/s | p50 ms | errors | outside: sentences/s | p50 ms | errors | inside / outside |")
    say("|---|---|---|---|---|---|---|---|")
    inside, outside = container_server(IMAGE), smls_server("smls outside", SMLS_BACKEND="onnx")
    ratios = []
    try:
        inside.start(work / "image-inside.log")
        outside.start(work / "image-outside.log")
        for server in (inside, outside):
            load(server, 1, 32, 1, work)  # warm-up
        for n in range(1 if short else 3):
            a, b = load(inside, 1, 32, seconds, work), load(outside, 1, 32, seconds, work)
            ratios.append(a["sps"] / b["sps"])
            say(f"| {n + 1} | {a['sps']:.0f} | {a['p50']:.1f} | {a['errors']} | {b['sps']:.0f} | {b['p50']:.1f} | {b['errors']} | {ratios[-1]:.2f} |")
    finally:
        inside.stop()
        outside.stop()
    say()
    say(f"One sentence a request at c=32 (wrk), the image's default backend (onnx) in both. Median ratio {statistics.median(ratios):.2f} "
        "(goal >= 0.95). Both servers stay up throughout; the loads alternate.")
    say()


def main() -> None:
    """Print the table alone."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        measure(print, Path(tmp), 2 if args.short else 10, args.short)


if __name__ == "__main__":
    main()
