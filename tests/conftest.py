"""Shared fixtures: the real model loaded once, an app built from test settings, a live gunicorn."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

import smls
from smls.config import Settings

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))


class StandInEncoder:
    """A test double that keeps the encoder contract (smls.encoders.Encoder); subclasses override encode."""

    kind = "embedding"
    name, backend, fingerprint, path = "stand-in", "stand-in", "0" * 16, Path("/nonexistent")
    dimension, max_seq_length = 384, 256
    batch_size, streams = 8, 1
    parallel_safe = False  # one pass at a time
    sentences_encoded = 0
    on_encoded = None

    def info(self):
        return {"name": self.name, "backend": self.backend, "dimension": self.dimension, "max_seq_length": self.max_seq_length}

    def set_streams(self, n, budget=None):
        assert n == 1

    def prepare(self, texts):
        return None

    def encode(self, texts, *, normalize=False, prepared=None):
        raise NotImplementedError

    def run(self, texts, *, normalize=False):
        return self.encode(texts, normalize=normalize).vectors


@pytest.fixture(scope="session")
def encoder():
    """The real embedded all-MiniLM-L6-v2, loaded once per test session."""
    return smls.ml_services.get("SentenceEncoder")


@pytest.fixture()
def settings(tmp_path) -> Settings:
    """Small limits so that limit errors are cheap to provoke; private data and cache folders."""
    (tmp_path / "data").mkdir()
    return Settings(max_messages=8, max_body_bytes=4096, data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", doc_batch=4)


@pytest.fixture()
def app(settings, encoder):
    """The Flask app over the real encoder, with test settings."""
    return smls.create_app(settings, encoder=encoder)


@pytest.fixture()
def client(app):
    """Flask's test client for fast HTTP-layer tests."""
    return app.test_client()


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LiveServer:
    """A gunicorn process serving smls on a loopback port."""

    url: str
    proc: subprocess.Popen
    access_log: Path
    error_log: Path

    def stop(self) -> None:
        """SIGTERM, then wait; SIGKILL if it does not go."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def server_env(**smls_vars: str) -> dict[str, str]:
    """The environment for a server under test: ours, minus SMLS_* leftovers, plus smls_vars."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMLS_")}
    env.update(smls_vars)
    return env


def start_server(tmp: Path, workers: int = 2, gunicorn_args: tuple[str, ...] = (), **smls_vars: str) -> LiveServer:
    """Start `gunicorn server:app -c gunicorn.conf.py` (and gunicorn_args) and wait until /health answers."""
    port = free_port()
    access_log, error_log = tmp / "access.log", tmp / "error.log"
    env = server_env(SMLS_PORT=str(port), SMLS_WORKERS=str(workers), **smls_vars)
    cmd = [
        GUNICORN, "server:app", "-c", "gunicorn.conf.py",
        "--access-logfile", str(access_log),
        # pid first, so tests can tell which worker answered
        "--access-logformat", '%(p)s "%(r)s" %(s)s',
        "--error-logfile", str(error_log),
        *gunicorn_args,
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = LiveServer(f"http://127.0.0.1:{port}", proc, access_log, error_log)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {proc.returncode}:\n{error_log.read_text()}")
        try:
            if requests.get(server.url + "/health", timeout=2).status_code == 200:
                return server
        except (requests.ConnectionError, requests.Timeout):  # not listening yet, or a worker still warming up
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"gunicorn did not answer /health in time:\n{error_log.read_text()}")


def counter(text: str, line_start: str) -> float:
    """The sum of the Prometheus samples whose line starts with line_start."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start))


def live_counter(url: str, line_start: str) -> float:
    """counter() over a live server's /metrics."""
    return counter(requests.get(url + "/metrics", timeout=30).text, line_start)


def settled_metrics(url: str, ready: Callable[[str], bool], within: float = 5.0) -> str:
    """A live server's /metrics once `ready` holds of it, or as it is after `within` seconds.

    A worker writes its counts every moment (smls.metrics.Tally), after the answers they
    count were sent, so another worker's /metrics may be a moment behind the client.
    """
    deadline = time.monotonic() + within
    while True:
        text = requests.get(url + "/metrics", timeout=30).text
        if ready(text) or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


@pytest.fixture(scope="session")
def live_server(tmp_path_factory):
    """One real gunicorn with 2 workers, shared by the live tests."""
    tmp = tmp_path_factory.mktemp("live")
    server = start_server(tmp, workers=2, SMLS_MAX_MESSAGES="64", SMLS_MAX_BODY_BYTES="65536", SMLS_CACHE_DIR=str(tmp / "cache"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Two tiny random-weight models built here (no download): an embedding model and a cross-encoder."""
    from scripts.tiny_models import build_cross_encoder, build_embedding

    root = tmp_path_factory.mktemp("models")
    return {"tiny": build_embedding(root / "tiny"), "judge": build_cross_encoder(root / "judge")}


@pytest.fixture(scope="session")
def postgres():
    """One PostgreSQL 15 server for the whole run (tests.postgres); each test takes a fresh database of it."""
    from tests.postgres import start_postgres

    server = start_postgres(free_port())
    yield server
    server.stop()
