"""The container image (`make image`), run by podman: it serves with its key, keeps documents on
its /data volume, finishes in-flight requests when stopped, runs read-only and as any uid.

Run by `make test-image` (marker "image") once `make image` has built it; SMLS_IMAGE names it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pytest
import requests

import smls
from tests.helpers import container as manifest_container
from tests.helpers import free_port, manifests

pytestmark = pytest.mark.image

IMAGE = os.environ.get("SMLS_IMAGE", "localhost/smls:latest")
FULL_IMAGE = os.environ.get("SMLS_IMAGE_FULL", "localhost/smls:full")  # make image-full: torch and cross-encoders too
KEY = "image-test-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
LOGBOOK = (
    [{"text": "The ships sailed at dawn from the northern harbour.", "pages": ["p1"]},
     {"text": "A storm broke the mast on the third night.", "pages": ["p2"]}],
    "page_id,page_number,chapter\np1,1,One\np2,2,One\n",
)


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run podman (with the Makefile's CONTAINERS_CONF), failing the test with its output if asked to."""
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        pytest.fail(f"podman {' '.join(args)} exited with {done.returncode}:\n{done.stdout}{done.stderr}")
    return done


def built(name: str, target: str) -> str:
    """The image's name if podman has it; else skip, or fail under SMLS_REQUIRE_CLIENTS (make test-image)."""
    missing = "podman is not installed" if shutil.which("podman") is None else None
    if missing is None and podman("image", "exists", name, check=False).returncode != 0:
        missing = f"no image {name} (make {target} builds it)"
    if missing:
        if os.environ.get("SMLS_REQUIRE_CLIENTS"):
            pytest.fail(missing)
        pytest.skip(missing)
    return name


@pytest.fixture(scope="module")
def image() -> str:
    """The image under test (make image)."""
    return built(IMAGE, "image")


@contextmanager
def volume() -> Iterator[str]:
    """A new named podman volume, removed afterwards."""
    name = f"smls-test-{uuid.uuid4().hex[:8]}"
    podman("volume", "create", name)
    try:
        yield name
    finally:
        podman("volume", "rm", "--force", name, check=False)


@dataclass
class Container:
    """A running container of the image, published on a loopback port."""

    name: str
    url: str
    started: float  # seconds from `podman run` to /ready answering 200

    def exit_code(self) -> int:
        """The container's exit code (once it has stopped)."""
        return int(podman("inspect", "--format", "{{.State.ExitCode}}", self.name).stdout.strip())


@contextmanager
def running(image: str, *options: str) -> Iterator[Container]:
    """`podman run -d` the image with options, wait for /ready, and remove the container afterwards."""
    name, port = f"smls-test-{uuid.uuid4().hex[:8]}", free_port()
    start = time.monotonic()
    podman("run", "--detach", "--name", name, "--publish", f"127.0.0.1:{port}:8000", "--env", f"SMLS_API_KEY={KEY}", *options, image)
    try:
        url = f"http://127.0.0.1:{port}"
        while True:
            try:
                if requests.get(url + "/ready", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            state = podman("inspect", "--format", "{{.State.Running}}", name).stdout.strip()
            if state != "true" or time.monotonic() - start > 60:
                pytest.fail(f"the container never got ready (running: {state}):\n{podman('logs', name, check=False).stderr}")
            time.sleep(0.1)
        yield Container(name, url, time.monotonic() - start)
    finally:
        podman("rm", "--force", "--time", "0", name, check=False)


def upload(container: Container, doc_id: str) -> None:
    """PUT a two-sentence document over HTTP, its vectors computed."""
    texts, pages = LOGBOOK
    files = {"texts": ("t.json", json.dumps(texts)), "pages": ("p.csv", pages)}
    put = requests.put(f"{container.url}/documents/{doc_id}?compute=true", files=files, headers=AUTH, timeout=60)
    assert put.status_code == 201, put.text


def search_hit(container: Container) -> dict:
    """The best hit across every document for a query about the storm."""
    found = requests.get(f"{container.url}/search", params={"q": "bad weather at sea", "k": 1}, headers=AUTH, timeout=30)
    assert found.status_code == 200, found.text
    return found.json()["results"][0]


def test_it_serves_as_the_server_does_and_stops_cleanly(image, encoder):
    """Key required, curl's vectors equal in-process ones, search has page citations, no torch; SIGTERM finishes in-flight work, exit 0."""
    with volume() as data, running(image, "--volume", f"{data}:/data") as box:
        assert requests.post(box.url + "/embed", data={"message": "hello"}, timeout=10).status_code == 401
        # README's first example, with the key.
        curl = subprocess.run(
            ["curl", "-s", "-H", f"Authorization: Bearer {KEY}", "-d", "message=['Hello world!', 'How are you today?']", "-X", "POST", f"{box.url}/embed"],
            capture_output=True, text=True, timeout=30, check=True,
        )
        served = np.array(json.loads(curl.stdout)["embeddings"], dtype=np.float32)
        assert np.abs(served - encoder.encode(["Hello world!", "How are you today?"]).vectors).max() <= 1e-5

        upload(box, "logbook")
        hit = search_hit(box)
        assert (hit["doc_id"], hit["text"], [p["number"] for p in hit["pages"]]) == ("logbook", LOGBOOK[0][1]["text"], [2])

        # Serving ONNX files needs no torch: the runtime stage leaves it out.
        no_torch = podman("exec", box.name, "python", "-c", "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is not None)", check=False)
        assert no_torch.returncode == 0, "torch is installed in the runtime image"

        # A request in flight when `podman stop` sends SIGTERM is answered in full; then exit 0.
        sentences = [f"Sentence number {i} of a long request, about ships and storms." for i in range(1500)]
        answer: dict[str, requests.Response] = {}
        sender = threading.Thread(target=lambda: answer.update(r=requests.post(
            box.url + "/embed", json={"message": sentences}, headers=AUTH, timeout=120)))
        sender.start()
        time.sleep(0.5)
        podman("stop", "--time", "60", box.name)
        sender.join(timeout=120)
        assert answer["r"].status_code == 200 and len(answer["r"].json()["embeddings"]) == len(sentences)
        assert box.exit_code() == 0
        assert "Shutting down: Master" in podman("logs", box.name).stderr


def test_read_only_it_serves_the_documents_its_volume_kept(image):
    """A read-only root with only /tmp and /data writable (as the Kubernetes manifest runs it): the volume's documents are searched after a restart."""
    with volume() as data:
        with running(image, "--volume", f"{data}:/data") as first:
            upload(first, "logbook")
        with running(image, "--read-only", "--read-only-tmpfs=false", "--tmpfs", "/tmp", "--volume", f"{data}:/data") as second:
            assert search_hit(second)["doc_id"] == "logbook"  # kept on the volume, not uploaded again
            upload(second, "logbook2")  # and the volume is still written
            assert requests.post(second.url + "/embed", data={"message": "x"}, headers=AUTH, timeout=10).status_code == 200


def test_it_runs_as_an_arbitrary_uid(image):
    """Any uid in group 0 (OpenShift's way), read-only: it starts, stores and searches."""
    with volume() as data, running(image, "--user", "4242:0", "--read-only", "--volume", f"{data}:/data") as box:
        assert podman("exec", box.name, "id", "-u").stdout.strip() == "4242"
        upload(box, "logbook")
        assert search_hit(box)["doc_id"] == "logbook"


def test_the_kubernetes_manifest_runs_the_image_as_it_is_built(image):
    """The Deployment's user, port and data folder are the image's own, so the two cannot drift."""
    config = json.loads(podman("image", "inspect", image).stdout)[0]["Config"]
    image_env = dict(item.split("=", 1) for item in config["Env"])
    spec = manifest_container()
    assert config["User"] == str(manifests()["Deployment"]["spec"]["template"]["spec"]["securityContext"]["runAsUser"])
    assert "8000/tcp" in config["ExposedPorts"]
    assert {p["containerPort"] for p in spec["ports"]} == {8000}
    assert "/data" in config["Volumes"] and {m["mountPath"] for m in spec["volumeMounts"]} == {"/data", "/tmp"}
    for name in ("SMLS_HOST", "SMLS_DATA_DIR", "SMLS_CACHE_DIR"):
        assert {e["name"]: e.get("value") for e in spec["env"]}.get(name, image_env[name]) == image_env[name], name


def test_the_full_image_serves_torch_and_a_cross_encoder(tiny_models, tmp_path):
    """make image-full: the torch backend's vectors equal in-process ones, and a cross-encoder (mounted read-only) reranks."""
    full = built(FULL_IMAGE, "image-full")
    models = tmp_path / "models"
    shutil.copytree(tiny_models["judge"], models / "judge")
    for path in (tmp_path, models, *models.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)  # readable by the container's user
    settings = ("--env", "SMLS_MODELS=mini=embedded;backend=torch,judge=/models/judge;kind=cross-encoder", "--volume", f"{models}:/models:ro")
    with running(full, *settings) as box:
        got = requests.post(box.url + "/embed", data={"message": "How do I reset my password?"}, headers=AUTH, timeout=30)
        assert got.status_code == 200 and got.json()["model"] == "mini", got.text
        torch_encoder = smls.ml_services.get("SentenceEncoder", backend="torch")
        expected = torch_encoder.encode(["How do I reset my password?"]).vectors[0]
        assert np.abs(np.array(got.json()["embeddings"][0], dtype=np.float32) - expected).max() <= 1e-5
        ranked = requests.post(box.url + "/rerank", json={"model": "judge", "query": "storm", "documents": ["a storm at sea", "tax forms"]},
                               headers=AUTH, timeout=30)
        assert ranked.status_code == 200, ranked.text
        assert sorted(r["index"] for r in ranked.json()["results"]) == [0, 1]
