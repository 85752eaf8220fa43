"""A server's processes from outside: ports, workers, which workers accept connections, memory."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid: int) -> list[int]:
    """The direct children of a process (a gunicorn master's workers)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def rss_mb(pid: int) -> float:
    """A process's resident set size in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def accepting(port: int, pids: list[int], tries: int = 8) -> set[int]:
    """Those of `pids` that accept connections now: the ones holding one of `tries` fresh connections, each answered.

    A gunicorn worker accepts only once it has warmed up (post_worker_init), and /ready or
    /health answers for one worker only: load sent right after the first 200 goes, kept
    alive, to the workers that were up then, and the others sit idle for the whole run.
    """
    clients = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(tries)]
    try:
        for client in clients:
            client.sendall(b"GET /health HTTP/1.1\r\nHost: bench\r\n\r\n")
        ours = set()
        for client in clients:
            client.recv(4096)  # answered, so accepted by some worker
            ours.add(client.getsockname()[1])
        held = held_connections(port, pids, ours)
        return {pid for pid in pids if held[pid]}
    finally:
        for client in clients:
            client.close()


def held_connections(port: int, pids: list[int], remote_ports: set[int] | None = None) -> dict[int, int]:
    """How many client connections to `port` each of `pids` holds (only those from `remote_ports`, if given)."""
    # The server's side of each connection: local port `port` (hex in /proc/net/tcp), in any
    # state but listening (0A). A sync worker closes its end right after answering: it still
    # holds it, half-closed, for a moment.
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] != "0A":
            if remote_ports is None or int(fields[2].split(":")[1], 16) in remote_ports:
                inodes.add(f"socket:[{fields[9]}]")
    held = {}
    for pid in pids:
        held[pid] = 0
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                held[pid] += os.readlink(fd) in inodes
            except OSError:  # closed meanwhile
                continue
    return held


def wait_accepting(port: int, master: int, workers: int, seconds: float = 120) -> float:
    """Wait until `workers` workers of `master` all accept connections; the seconds it took (TimeoutError past `seconds`)."""
    began = time.monotonic()
    while True:
        pids = children(master)
        if len(pids) >= workers and accepting(port, pids) == set(pids):
            return time.monotonic() - began
        if time.monotonic() - began > seconds:
            raise TimeoutError(f"only {len(accepting(port, pids))} of {workers} workers accept connections after {seconds:g} s")
        time.sleep(0.2)
