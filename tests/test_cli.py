"""`python -m smls precompute`: fills the cache, reports broken documents and goes on; two at once are safe."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import numpy as np
import pytest

from smls import documents
from smls.config import Settings
from tests.helpers import ROOT, documents_of, server_env, write, write_document


def run_precompute(env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "smls", "precompute", "--no-progress", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_precompute_one_good_one_broken_twice_at_once(tmp_path, encoder):
    data, cache = tmp_path / "data", tmp_path / "cache"
    write_document(data, "good", 600)
    write(data, "broken", texts=[{"text": "fine", "pages": ["no-such-page"]}])
    env = server_env(SMLS_DATA_DIR=str(data), SMLS_CACHE_DIR=str(cache), SMLS_DOC_BATCH="64")

    procs = [run_precompute(env), run_precompute(env)]  # two processes race on one cache file
    results = [(p.wait(timeout=600), *p.communicate()) for p in procs]
    for code, out, err in results:
        assert code == 1, (out, err)  # one document failed
        assert "broken: error: texts_broken.json item 0: page id 'no-such-page' is not in the pages file" in err
        assert "good: 600 sentences" in out
        assert "Traceback" not in err

    settings = Settings(data_dir=data, cache_dir=cache, doc_batch=64)
    embedder = documents_of(encoder, settings)
    doc = documents.load_document(data, "good")
    assert embedder.is_cached(doc)
    before = encoder.sentences_encoded
    vectors = [v for _, v in embedder.chunks(doc)]
    assert encoder.sentences_encoded == before  # everything came from the cache
    assert sum(len(v) for v in vectors) == 600
    texts = [s.text for s in doc.sentences]
    assert np.allclose(np.concatenate(vectors)[::50], encoder.run(texts[::50]), atol=1e-5)
    db = sqlite3.connect(cache / "documents.sqlite3")
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)

    again = run_precompute(env, "good")
    out, _ = again.communicate(timeout=300)
    assert again.returncode == 0 and "good: 600 sentences, already cached" in out


def test_precompute_unknown_and_hostile_ids(tmp_path):
    env = server_env(SMLS_DATA_DIR=str(tmp_path), SMLS_CACHE_DIR=str(tmp_path / "cache"))
    proc = run_precompute(env, "absent", "../etc")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1
    assert "absent: error: no document 'absent'" in err
    assert "../etc: error: a document id is" in err


@pytest.mark.parametrize("value", ["0", "many"])
def test_precompute_bad_setting_is_one_line(tmp_path, value):
    env = server_env(SMLS_DATA_DIR=str(tmp_path), SMLS_DOC_BATCH=value)
    proc = run_precompute(env)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and err.startswith("smls: SMLS_DOC_BATCH") and "Traceback" not in err


def test_precompute_with_a_named_model_fills_that_models_cache(tmp_path, tiny_models):
    data, cache = tmp_path / "data", tmp_path / "cache"
    write_document(data, "doc", 20)
    env = server_env(SMLS_DATA_DIR=str(data), SMLS_CACHE_DIR=str(cache), SMLS_MODELS=f"mini=embedded,tiny={tiny_models['tiny']}")
    proc = run_precompute(env, "--model", "tiny")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert "doc: 20 sentences cached" in out
    import smls

    tiny = smls.ml_services.get("SentenceEncoder", model=str(tiny_models["tiny"]), name="tiny", cache_dir=str(cache))
    embedder = documents_of(tiny, Settings(data_dir=data, cache_dir=cache))
    assert embedder.is_cached(documents.load_document(data, "doc"))
    bad = run_precompute(env, "--model", "nope")
    _, err = bad.communicate(timeout=600)
    assert bad.returncode == 2 and "smls: no model named 'nope'; SMLS_MODELS has mini, tiny" in err
