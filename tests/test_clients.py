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

from tests.helpers import chromium, start_server

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.clients, pytest.mark.live]


@pytest.fixture(scope="module")
def live_server(tmp_path_factory, tiny_models):
    """Three models, as a user with SMLS_MODELS has them: the embedded one (the default, under its
    usual name), a tiny embedding model on torch and a tiny cross-encoder (both built by the tests)."""
    tmp = tmp_path_factory.mktemp("clients")
    models = f"all-MiniLM-L6-v2=embedded,tiny={tiny_models['tiny']};backend=torch,judge={tiny_models['judge']}"
    server = start_server(tmp, workers=2, SMLS_MODELS=models, SMLS_CACHE_DIR=str(tmp / "cache"))
    yield server
    server.stop()


# What every client prints about the models of that server. The cross-encoder's weights are
# random, so its order is only checked to be an order of the three documents; the default
# model's cosine puts the cat sentence first.
MODEL_LINES = [
    "models: all-MiniLM-L6-v2 (embedding), tiny (embedding), judge (cross-encoder)",
    "model tiny: dimension 32",
    r"rerank \(judge, cross-encoder\): [012] [012] [012]",
    r"rerank \(all-MiniLM-L6-v2, cosine\): 1 2 0",
]


# What every client prints of /tokenize: the default model's ids for "Hello world!" ([CLS] hello world ! [SEP]).
TOKENS = "tokens: 5 [101, 7592, 2088, 999, 102]"
TOKENS_JSON = '{"count":5,"ids":[101,7592,2088,999,102]}'


def assert_model_lines(lines: list[str]) -> None:
    assert lines[0] == MODEL_LINES[0] and lines[1] == MODEL_LINES[1], lines
    assert re.fullmatch(MODEL_LINES[2], lines[2]) and sorted(lines[2].split(": ")[1].split()) == ["0", "1", "2"], lines[2]
    assert re.fullmatch(MODEL_LINES[3], lines[3]), lines[3]


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
    assert len(lines) == 11, lines
    assert lines[10] == TOKENS_JSON
    assert lines[6:8] == [MODEL_LINES[0], '{"model":"tiny","dimension":32}']
    assert re.fullmatch(r'\{"model":"judge","scorer":"cross-encoder","order":\[[012],[012]\]\}', lines[8]), lines[8]
    assert re.fullmatch(r'\{"model":"all-MiniLM-L6-v2","scorer":"cosine","order":\[1,2,0\],"best":0\.\d+\}', lines[9]), lines[9]
    lines = lines[:6]
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
    assert "uploaded: lisp-notes, 1 sentence(s)\nsearch: lisp-notes, sentence 0, page 7\ndeleted: yes\n" in out
    assert out.splitlines()[-1] == TOKENS
    assert_model_lines(out.splitlines()[3:])
    same, other = similarities(out)
    assert same > 0.5 > other  # real vectors: the two cat sentences are close, the markets one is not


def test_emacs_lisp_url_and_json(live_server):
    need("emacs")
    out = run(["emacs", "--batch", "-Q", "-l", "clients/emacs/smls.el", "-f", "smls-demo"], live_server)
    assert "vectors: 3, dimension: 384" in out
    assert "uploaded: emacs-notes, 1 sentence(s)\nsearch: emacs-notes, sentence 0, page 7\ndeleted: yes\n" in out
    assert out.splitlines()[-1] == TOKENS
    assert_model_lines(out.splitlines()[3:])
    same, other = similarities(out)
    assert same > 0.5 > other


def test_python_requests(live_server):
    out = run([sys.executable, "clients/python/embed_requests.py", live_server.url], live_server).splitlines()
    assert out[0] == "model: all-MiniLM-L6-v2, vectors: 2, dimension: 384"
    assert out[1].startswith("int8 base64: ")
    assert len(out) == 10 and all(re.match(r"0\.\d{3}  \S", line) for line in out[2:5])
    assert_model_lines(out[5:9])
    assert out[9] == TOKENS


def test_python_openai_package(live_server):
    out = run([sys.executable, "clients/python/embed_openai.py", live_server.url], live_server).splitlines()
    assert out[0] == "models: all-MiniLM-L6-v2, tiny, judge"
    assert re.fullmatch(r"model: all-MiniLM-L6-v2, vectors: 2, dimension: 384, tokens: \d+", out[1]), out[1]
    assert out[2:] == ["dimensions=128: 128 values, norm 1.000", "model tiny: dimension 32"]


def test_cohere_and_infinity_rerank_clients_unchanged(live_server):
    out = run([sys.executable, "clients/python/rerank_clients.py", live_server.url], live_server).splitlines()
    assert re.fullmatch(r"cohere v1: [012] '.{20}', [012] '.{20}'", out[0]), out[0]  # top_n=2 of the cross-encoder
    assert re.fullmatch(r"cohere v2: [012] [012] [012]", out[1]), out[1]
    assert re.fullmatch(r"infinity: [012] '.{20}', [012] '.{20}', [012] '.{20}'", out[2]), out[2]


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
    assert {"/embed", "/v1/embeddings", "/rerank", "/documents/{doc_id}", "/metrics", "/ready"} <= paths, sorted(paths)
    assert "opblock-summary-method" in dom
