"""The clients under clients/, each run as a user would, against a live server on the demo data.

`make test-clients` installs what they need (Debian packages) and runs these with
SMLS_REQUIRE_CLIENTS=1, so a missing tool fails instead of skipping.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.clients, pytest.mark.live]


def need(*tools: str) -> None:
    """Skip (or fail, under make test-clients) when a tool is not installed."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        message = f"not installed: {', '.join(missing)} (make test-clients installs them)"
        if os.environ.get("SMLS_REQUIRE_CLIENTS"):
            pytest.fail(message)
        pytest.skip(message)


def run(cmd: list[str], server, timeout: float = 300) -> str:
    env = {**os.environ, "SMLS_URL": server.url}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd[0]} exited {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done.stdout


def test_shell_curl_and_jq(live_server):
    need("curl", "jq")
    lines = run(["sh", "clients/shell/embed.sh"], live_server).splitlines()
    assert re.fullmatch(r'\{"model":"all-MiniLM-L6-v2","dimension":384,"vectors":2,"first":\[[-0-9.e]+,[-0-9.e]+,[-0-9.e]+\]\}', lines[0]), lines[0]
    assert lines[1] == '{"dimension":64,"normalized":true,"lengths":[64,64]}'
    assert lines[2] == "demo: 239 sentences"
    assert len(lines) == 6
    rows = [re.fullmatch(r"(\d)\tpages ([\d,]*)\t.+", line) for line in lines[3:]]
    assert all(rows), lines[3:]
    assert [r.group(1) for r in rows] == ["0", "1", "2"]
    assert any(r.group(2) for r in rows)  # the heading has no page, the sentences under it do


def similarities(output: str) -> tuple[float, float]:
    same = float(re.search(r"cosine\(cat, cat\): ([0-9.]+)", output).group(1))
    other = float(re.search(r"cosine\(cat, markets\): (-?[0-9.]+)", output).group(1))
    return same, other


def test_common_lisp_sbcl_drakma_yason(live_server):
    need("sbcl")
    for system in ("drakma", "yason"):
        if not list(Path("/usr/share/common-lisp").glob(f"*/**/{system}.asd")):
            need(f"{system} (Debian cl-{system})")
    out = run(["sbcl", "--script", "clients/lisp/embed.lisp", live_server.url], live_server)
    assert "vectors: 4, dimension: 384" in out
    same, other = similarities(out)
    assert same > 0.5 > other  # real vectors: the two cat sentences are close, the markets one is not


def test_emacs_lisp_url_and_json(live_server):
    need("emacs")
    out = run(["emacs", "--batch", "-Q", "-l", "clients/emacs/smls.el", "-f", "smls-demo"], live_server)
    assert "vectors: 3, dimension: 384" in out
    same, other = similarities(out)
    assert same > 0.5 > other


def test_python_requests(live_server):
    out = run([sys.executable, "clients/python/embed_requests.py", live_server.url], live_server).splitlines()
    assert out[0] == "model: all-MiniLM-L6-v2, vectors: 2, dimension: 384"
    assert out[1].startswith("int8 base64: ")
    assert len(out) == 5 and all(re.match(r"0\.\d{3}  \S", line) for line in out[2:])


def test_python_openai_package(live_server):
    out = run([sys.executable, "clients/python/embed_openai.py", live_server.url], live_server).splitlines()
    assert re.fullmatch(r"model: all-MiniLM-L6-v2, vectors: 2, dimension: 384, tokens: \d+", out[0]), out[0]
    assert out[1] == "dimensions=128: 128 values, norm 1.000"


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return name
    need("chromium")
    return ""


def test_docs_page_renders_the_endpoints_in_headless_chromium(live_server, tmp_path):
    browser = chromium()
    cmd = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
        "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=15000",
        "--dump-dom", live_server.url + "/docs",
    ]
    dom = run(cmd, live_server, timeout=120)
    # Swagger UI built the page from /openapi.json: one operation block per endpoint.
    paths = set(re.findall(r'data-path="([^"]+)"', dom))
    assert {"/embed", "/v1/embeddings", "/documents/{doc_id}", "/metrics", "/ready"} <= paths, sorted(paths)
    assert "opblock-summary-method" in dom
