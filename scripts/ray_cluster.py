"""A real local Ray cluster for tests and benchmarks: `ray start` nodes on loopback, each in a temporary folder, stopped whole.

Every node is `ray start --block` in a process group of its own, with the cluster's own
RAY_TMPDIR, so that stopping it stops this cluster's processes and no other's (`ray stop`
would stop every cluster on the machine).
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.procs import free_port

RAY = str(Path(sys.executable).parent / "ray")


def pids_with_env(variable: str, value: str, command: bytes = b"") -> list[int]:
    """The processes whose environment sets `variable` to `value` (and whose command line holds `command`)."""
    mark = f"{variable}={value}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and command in (proc / "cmdline").read_bytes() and mark in (proc / "environ").read_bytes().split(b"\0"):
                found.append(int(proc.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


class Cluster:
    """`nodes` nodes of `cpus` CPUs each on loopback; a context manager that stops them whatever happens."""

    def __init__(self, nodes: int = 2, cpus: int = 1) -> None:
        self.nodes, self.cpus = nodes, cpus
        # Short: Ray's socket paths live under it, and a Unix socket's path has at most 107 bytes.
        self.tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
        port = free_port()
        while 10002 <= port <= 19999:  # Ray's default worker ports: the head refuses a GCS port among them
            port = free_port()
        self.port, self.address = port, f"127.0.0.1:{port}"
        # A token of its own: Ray 2.60 turns token authentication on where ~/.ray/auth_token
        # exists, and a cluster started here must not depend on what an earlier one left there.
        self.auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
        self.env = {**os.environ, **self.auth, "RAY_TMPDIR": self.tmp, "RAY_USAGE_STATS_ENABLED": "0"}
        self.procs: list[subprocess.Popen] = []

    def start(self) -> None:
        """Start the head, then each other node, waiting for each to join."""
        common = ["--node-ip-address", "127.0.0.1", "--num-cpus", str(self.cpus), "--block", "--disable-usage-stats"]
        head = [RAY, "start", "--head", "--port", str(self.port), "--temp-dir", self.tmp, "--include-dashboard=false", *common]
        others = [[RAY, "start", "--address", self.address, *common]] * (self.nodes - 1)
        for number, command in enumerate([head, *others], start=1):
            self.procs.append(subprocess.Popen(command, env=self.env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            self._wait_nodes(number)

    def _wait_nodes(self, n: int, within: float = 90) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.procs):
                raise RuntimeError("ray start exited")
            status = subprocess.run([RAY, "status", "--address", self.address], capture_output=True, text=True, env=self.env)
            if status.returncode == 0 and status.stdout.count("node_") >= n:
                return
            time.sleep(1)
        raise RuntimeError(f"the Ray cluster did not reach {n} nodes within {within:g} s")

    def remove_node(self, number: int) -> None:
        """Take node `number` (1: the head) away as a lost machine goes: SIGKILL to its `ray start` and raylet, no goodbye."""
        os.killpg(self.procs[number - 1].pid, signal.SIGKILL)
        self.procs[number - 1].wait()

    def stop(self) -> None:
        """Stop every process of this cluster (and only of this one)."""
        for proc in reversed(self.procs):
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=15)
                    break
                except subprocess.TimeoutExpired:
                    continue
        # Ray's workers start sessions of their own: any process left that runs with this cluster's RAY_TMPDIR goes too.
        for pid in pids_with_env("RAY_TMPDIR", self.tmp):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue

    def __enter__(self) -> Cluster:
        try:
            self.start()
        except BaseException:
            self.stop()  # whatever started before the failure
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
