"""What the tests share that is not a fixture: a live gunicorn, error-shape checks, documents written to disk, a stand-in encoder.

Fixtures are in conftest.py; no test module imports another, they import from here.
"""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
import requests
import yaml

from smls.config import Settings
from smls.doc_vectors import DocumentEmbedder
from smls.serving import engine

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))


# ---------------------------------------------------------------- a stand-in encoder, documents of the models


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


def documents_of(encoder, settings: Settings) -> DocumentEmbedder:
    """The document embedder the serving layer builds for `encoder` under `settings` (on the encoder's own streams)."""
    return engine.build(settings, {encoder.name: encoder}, streams=encoder.streams, load_indexes=False).embedders[0].documents


# ---------------------------------------------------------------- the stores a test may run on


STORES = ["sqlite", "postgresql", "postgresql-without-pgvector"]


def store_for(request, kind: str) -> str | None:
    """SMLS_STORE for one of STORES: None (SQLite), or a fresh database on the session's server of that kind (conftest's fixtures)."""
    if kind == "sqlite":
        return None
    return request.getfixturevalue("postgres" if kind == "postgresql" else "postgres_without_pgvector").fresh_database()


# ---------------------------------------------------------------- a live gunicorn


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


def run_gunicorn_expecting_failure(tmp_path, **smls_vars: str) -> subprocess.CompletedProcess:
    env = server_env(SMLS_PORT=str(free_port()), SMLS_WORKERS="1", **smls_vars)
    return subprocess.run([GUNICORN, "server:app", "-c", "gunicorn.conf.py"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


# ---------------------------------------------------------------- the error shapes


def assert_error(response, status: int, code: str) -> dict:
    """Every error: the status, JSON, and exactly {"error": {"status", "code", "message"}}."""
    assert response.status_code == status, response.data
    assert response.mimetype == "application/json"
    body = orjson.loads(response.data)
    assert set(body) == {"error"}
    assert set(body["error"]) == {"status", "code", "message"}
    assert body["error"]["status"] == status
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and len(body["error"]["message"]) > 10
    return body["error"]


def assert_openai_error(response, status: int, code: str) -> dict:
    """OpenAI's error shape: {"error": {"message", "type", "param", "code"}}."""
    assert response.status_code == status, response.data
    body = orjson.loads(response.data)
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == code and len(body["error"]["message"]) > 10
    return body["error"]


# ---------------------------------------------------------------- documents on disk


P1, P2, P3 = "0b7e5b1c-4c44-4a8c-9d3e-1f2a3b4c5d6e", "6f1d2e3c-8b9a-4d7e-a1b2-c3d4e5f60718", "a1b2c3d4-e5f6-4789-8abc-def012345678"
PAGES = f"page_id,page_number,chapter,heading\n{P1},1,One,Beginnings\n{P2},2,One,\"Middle, with comma\"\n{P3},3,Two,End\n"
TEXTS = [
    {"text": "The first sentence.", "pages": [P1], "speaker": "narrator", "score": 0.5},
    {"text": "It runs over a page break.", "pages": [P1, P2], "tags": ["a", "b"]},
    {"text": "A heading with no page.", "pages": []},
    {"text": "Ünïcode survives, \"quotes\" too.", "pages": [P3], "nested": {"k": [1, 2]}},
]


HOSTILE_IDS = [
    "..", ".", "../doc", "..%2Fdoc", "/etc/passwd", "doc/../doc", "a/b", "a\\b", "~root", "doc\x00", " doc", "doc ",
    "\u2024\u2024", "doc\u2215x", "ｄｏｃ", "dóc", "-doc", ".hidden", "a..b", "x" * 101, "", "%2e%2e", "doc;rm", "$(id)",
]


def write(data: Path, doc_id: str = "doc", texts=None, pages: str | bytes = PAGES) -> Path:
    data.mkdir(exist_ok=True)
    body = texts if isinstance(texts, (str, bytes)) else json.dumps(TEXTS if texts is None else texts)
    (data / f"texts_{doc_id}.json").write_bytes(body if isinstance(body, bytes) else body.encode())
    (data / f"pages_{doc_id}.csv").write_bytes(pages if isinstance(pages, bytes) else pages.encode())
    return data


WORDS = (
    "river mountain letter garden engine winter market harbour lantern signal orchard meadow "
    "captain council station library bridge forest candle mirror ledger thunder village castle "
    "quietly slowly briskly carefully always never often seldom bright heavy ancient modern "
    "carries finds builds opens follows watches counts paints measures gathers answers crosses"
).split()


def write_document(data_dir: Path, doc_id: str, n_sentences: int, *, per_page: int = 40, seed: int = 7) -> None:
    """Write a document of n_sentences short random sentences, per_page sentences a page."""
    rng = random.Random(seed)
    data_dir.mkdir(parents=True, exist_ok=True)
    n_pages = max(1, -(-n_sentences // per_page))
    page_ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(n_pages)]
    with open(data_dir / f"pages_{doc_id}.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["page_id", "page_number", "section"])
        for number, page_id in enumerate(page_ids, start=1):
            writer.writerow([page_id, number, f"section {1 + (number - 1) // 10}"])
    sentences = [
        {"text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14))) + f" ({i}).", "pages": [page_ids[i // per_page]], "n": i}
        for i in range(n_sentences)
    ]
    (data_dir / f"texts_{doc_id}.json").write_text(json.dumps(sentences), encoding="utf-8")


# ---------------------------------------------------------------- a headless browser


def chromium() -> str:
    """The Chromium binary; a skip (a failure under make test-clients, which installs it) where there is none."""
    import shutil

    import pytest

    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return name
    message = "not installed: chromium (make test-clients installs it)"
    if os.environ.get("SMLS_REQUIRE_CLIENTS"):
        pytest.fail(message)
    pytest.skip(message)


class Browser:
    """Headless Chromium driven over its DevTools protocol: open a page, run script in it, hand its file inputs files, read what it shows."""

    def __init__(self, binary: str, profile: Path) -> None:
        import websocket  # websocket-client (requirements-dev.txt)

        profile.mkdir(parents=True, exist_ok=True)
        args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage", "--disable-background-networking"]
        self.proc = subprocess.Popen(
            [binary, *args, f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        port_file = profile / "DevToolsActivePort"  # Chromium writes the port it chose here
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError("headless Chromium did not start")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        page = next(t for t in requests.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json() if t["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=60, suppress_origin=True)
        self._id = 0

    def send(self, method: str, **params: object) -> dict:
        """One DevTools command and its result (events in between are skipped)."""
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self._id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def open(self, url: str) -> None:
        """Load url and wait until the page has loaded."""
        self.send("Page.enable")
        self.send("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete' && location.href !== 'about:blank'")

    def evaluate(self, expression: str) -> object:
        """The value of a script expression in the page (a promise is awaited)."""
        result = self.send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60.0) -> object:
        """Poll an expression until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"never true in the page: {expression}")
            time.sleep(0.1)

    def set_files(self, selector: str, *files: Path) -> None:
        """Give a file input these files, as a user choosing them would."""
        root = self.send("DOM.getDocument")["root"]["nodeId"]
        node = self.send("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
        self.send("DOM.setFileInputFiles", nodeId=node, files=[str(f) for f in files])

    def close(self) -> None:
        """Stop the browser."""
        if getattr(self, "ws", None) is not None:
            self.ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# ---------------------------------------------------------------- deploy/kubernetes/


MANIFESTS = ROOT / "deploy" / "kubernetes"


def manifests() -> dict[str, dict]:
    """Every resource of deploy/kubernetes/ by kind, from its own files (as kustomize reads them)."""
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    found = {}
    for name in kustomization["resources"]:
        doc = yaml.safe_load((MANIFESTS / name).read_text())
        found[doc["kind"]] = doc
    return found


def container() -> dict:
    """The Deployment's smls container."""
    return manifests()["Deployment"]["spec"]["template"]["spec"]["containers"][0]
