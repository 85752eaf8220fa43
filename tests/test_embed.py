"""`python -m smls embed` on this machine: JSONL, Parquet and documents in; Parquet out, whole blocks, re-runs, bad rows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench.corpora import stdlib_sample  # real sentences of mixed lengths: the standard library's docstrings
from smls import documents
from smls.config import Settings
from smls.corpus import sources
from smls.corpus.sources import Fields
from tests.helpers import ROOT, documents_of, server_env, write_document


def smls_embed(env: dict, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smls", "embed", "--no-progress", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def read_output(out: Path):
    return pq.read_table(out)  # (pyarrow skips files whose names start with _ or .: the manifest and bad rows)


@pytest.fixture()
def env(tmp_path):
    return server_env(SMLS_DATA_DIR=str(tmp_path / "data"), SMLS_CACHE_DIR=str(tmp_path / "cache"))


def test_jsonl_rows_get_the_in_process_vectors_in_input_order(tmp_path, env, encoder):
    texts = stdlib_sample(699)
    texts.insert(350, "a paragraph far over the model's 256 tokens, " * 40)
    rows = [{"id": f"t{i}", "text": t, "lang": "en", "n": i} for i, t in enumerate(texts)]
    source = write_jsonl(tmp_path / "corpus.jsonl", rows)
    done = smls_embed(env, str(source), "--out", str(tmp_path / "out"), "--keep", "n,lang", "--block-rows", "256")
    assert done.returncode == 0, done.stderr
    assert "700 rows in 3 blocks written" in done.stdout
    files = sorted(p.name for p in (tmp_path / "out").glob("*.parquet"))
    assert files == ["part-0000-corpus-000000000000.parquet", "part-0000-corpus-000000000256.parquet", "part-0000-corpus-000000000512.parquet"]
    table = read_output(tmp_path / "out").sort_by([("n", "ascending")])
    assert table.column_names == ["id", "text", "vector", "model", "truncated", "n", "lang"]
    assert table.schema.field("vector").type == pa.list_(pa.float32(), 384)
    assert table.column("id").to_pylist() == [r["id"] for r in rows]
    assert table.column("text").to_pylist() == texts
    assert set(table.column("model").to_pylist()) == {"all-MiniLM-L6-v2"}
    vectors = np.array(table.column("vector").to_pylist(), dtype=np.float32)
    # Sorted by length into passes and put back: each row's own vector, as in process (fp32).
    assert np.abs(vectors - encoder.run(texts)).max() <= 1e-5
    flags = encoder.encode(texts).truncated_flags
    assert table.column("truncated").to_pylist() == flags.tolist() and flags.any()


def test_parquet_in_integer_ids_and_a_rerun_does_only_what_is_missing(tmp_path, env, encoder):
    texts = stdlib_sample(300)
    pq.write_table(pa.table({"key": list(range(300)), "body": texts, "score": [i / 2 for i in range(300)]}), tmp_path / "in.parquet", row_group_size=70)
    args = [str(tmp_path / "in.parquet"), "--out", str(tmp_path / "out"), "--id-field", "key", "--text-field", "body", "--keep", "score", "--block-rows", "100"]
    assert smls_embed(env, *args).returncode == 0
    first = read_output(tmp_path / "out")
    assert sorted(first.column("id").to_pylist(), key=int) == [str(i) for i in range(300)]
    assert np.abs(np.array(first.sort_by("score").column("vector").to_pylist()) - encoder.run(texts)).max() <= 1e-5

    out = tmp_path / "out"
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")}
    (out / "part-0000-in-000000000100.parquet").unlink()
    again = smls_embed(env, *args)
    assert again.returncode == 0, again.stderr
    assert "100 rows in 1 blocks written" in again.stdout and "2 blocks were already there" in again.stdout
    for name, stamp in stamps.items():
        if name != "part-0000-in-000000000100.parquet":
            assert (out / name).stat().st_mtime_ns == stamp  # not written again
    assert read_output(out).sort_by("score").equals(first.sort_by("score"))

    # The same folder for another run is refused: it would mix two runs' vectors.
    other = smls_embed(env, *args[:-1], "50")
    assert other.returncode == 2
    assert "holds the output of a different run (its block_rows differ" in other.stderr and "Traceback" not in other.stderr


def test_documents_in_carry_their_pages_and_the_served_vectors(tmp_path, env, encoder):
    data = tmp_path / "data"
    write_document(data, "alpha", 130)
    write_document(data, "beta", 20)
    done = smls_embed(env, "documents", "--out", str(tmp_path / "out"), "--block-rows", "64")
    assert done.returncode == 0, done.stderr
    assert "150 rows in 4 blocks" in done.stdout
    table = read_output(tmp_path / "out").sort_by([("doc_id", "ascending"), ("index", "ascending")])
    doc = documents.load_document(data, "alpha")
    alpha = table.filter(pa.compute.equal(table.column("doc_id"), "alpha"))
    assert alpha.column("id").to_pylist()[:2] == ["alpha/0", "alpha/1"]
    assert alpha.column("pages").to_pylist() == [[p.number for p in s.pages] for s in doc.sentences]
    served = documents_of(encoder, Settings(data_dir=data, cache_dir=tmp_path / "c2"))
    expected = np.concatenate([v for _, v in served.chunks(doc)])
    assert np.abs(np.array(alpha.column("vector").to_pylist()) - expected).max() <= 1e-5

    one = smls_embed(env, "documents/beta", "--out", str(tmp_path / "one"))
    assert one.returncode == 0 and "20 rows in 1 blocks" in one.stdout
    absent = smls_embed(env, "documents/gamma", "--out", str(tmp_path / "none"))
    assert absent.returncode == 2 and "documents/gamma: no such document" in absent.stderr


def test_into_store_caches_documents_where_the_server_finds_them(tmp_path, env, encoder):
    data = tmp_path / "data"
    write_document(data, "alpha", 90)
    done = smls_embed(env, "documents", "--into-store")
    assert done.returncode == 0, done.stderr
    assert "alpha: 90 sentences cached" in done.stdout
    settings = Settings(data_dir=data, cache_dir=tmp_path / "cache")
    assert documents_of(encoder, settings).is_cached(documents.load_document(data, "alpha"))
    refused = smls_embed(env, str(tmp_path / "x.jsonl"), "--into-store")
    assert refused.returncode == 2 and "--into-store takes documents only" in refused.stderr


BAD = [
    {"id": "ok0", "text": "A fine sentence."},
    {"text": "no id here"},
    {"id": "e", "text": "   "},
    "this is not JSON",
    '{"id": "s", "text": "\\ud800 lone"}',
    {"id": "n", "text": 7},
    "",
    ["a", "list"],
    {"id": True, "text": "a boolean id"},
    {"id": "ok1", "text": "Another fine sentence."},
]


def test_bad_rows_stop_the_run_with_file_and_line_or_are_listed_when_skipped(tmp_path, env, encoder):
    source = write_jsonl(tmp_path / "bad.jsonl", BAD)
    stopped = smls_embed(env, str(source), "--out", str(tmp_path / "out"))
    assert stopped.returncode == 2
    assert f"smls: {source}: line 2: no 'text'" not in stopped.stderr
    assert f"smls: {source}: line 2: no 'id' field (the id) (and 7 more in this block); fix the input, or pass --on-bad-row skip" in stopped.stderr
    assert not list((tmp_path / "out").glob("*.parquet"))  # nothing half-written

    skipped = smls_embed(env, str(source), "--out", str(tmp_path / "out2"), "--on-bad-row", "skip")
    assert skipped.returncode == 0, skipped.stderr
    assert "2 rows in 1 blocks" in skipped.stdout and "8 bad rows left out" in skipped.stdout
    assert read_output(tmp_path / "out2").column("id").to_pylist() == ["ok0", "ok1"]
    from smls.corpus import output

    listed = [(b["line"], b["reason"]) for b in output.bad_rows(tmp_path / "out2")]
    assert listed == [
        (2, "no 'id' field (the id)"),
        (3, "the text is empty"),
        (4, listed[2][1]),
        (5, "the text holds a lone surrogate (an escape such as \\ud800 that is not half of a pair)"),
        (6, "the text 'text' is not a string"),
        (7, "an empty line"),
        (8, "not a JSON object"),
        (9, "the id 'id' is not a string or an integer"),
    ]
    assert listed[2][1].startswith("not JSON")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--block-rows", "0"], "--block-rows must be 1 or more"),
        (["--actors", "2"], "add --ray"),
        (["--keep", "id"], "the id and the text are two different fields"),
        (["--text-field", "id"], "the id and the text are two different fields"),
        ([], "--out DIR is needed"),
        (["--out", "{tmp}/o", "--model", "nope"], "no model named 'nope'; SMLS_MODELS has all-MiniLM-L6-v2"),
        (["--out", "{tmp}/o", "--prompt-name", "query"], "prompt_name 'query' is not one of this model's prompts"),
    ],
)
def test_bad_arguments_get_one_line(tmp_path, env, args, message):
    source = write_jsonl(tmp_path / "in.jsonl", BAD[:1])
    done = smls_embed(env, str(source), *[a.format(tmp=tmp_path) for a in args])
    assert done.returncode == 2, done.stdout
    assert message in done.stderr and "Traceback" not in done.stderr


def test_unknown_inputs_are_named(tmp_path, env):
    (tmp_path / "notes.txt").write_text("hello")
    for source, message in [("absent.jsonl", "absent.jsonl: no such file"), (str(tmp_path / "notes.txt"), "unknown kind of file"),
                            (str(tmp_path), "a folder with no .parquet or .jsonl files"), ("documents/../x", "is not a document id")]:
        done = smls_embed(env, source, "--out", str(tmp_path / "o"))
        assert done.returncode == 2 and message in done.stderr, (source, done.stderr)
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    done = smls_embed(env, str(tmp_path / "broken.parquet"), "--out", str(tmp_path / "o"))
    assert done.returncode == 2 and "not a Parquet file" in done.stderr


def test_blocks_are_planned_from_line_offsets(tmp_path):
    source = write_jsonl(tmp_path / "a.jsonl", [{"id": i, "text": "é" * (i + 1)} for i in range(10)])
    blocks = sources.plan([str(source)], 4, [])
    assert [(b.start, b.stop) for b in blocks] == [(0, 4), (4, 8), (8, 10)]
    rows = sources.read(blocks[1], Fields())
    assert rows.ids == ["4", "5", "6", "7"] and rows.texts[0] == "é" * 5


def test_a_models_prompts_and_truncation_apply_to_rows_and_precompute(tmp_path, tiny_models, monkeypatch):
    """An SMLS_MODELS entry's prompts and left cut reach `smls embed`, and precompute caches under the server's key."""
    from smls.serving import engine

    entry = f"tiny={tiny_models['tiny']};prompts=query:q: |passage:p: ;truncation=left"
    env = server_env(SMLS_MODELS=entry, SMLS_DATA_DIR=str(tmp_path / "data"), SMLS_CACHE_DIR=str(tmp_path / "cache"))
    texts = ["alpha beta gamma", "delta " * 400]
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": i, "text": t} for i, t in enumerate(texts)])
    done = smls_embed(env, str(source), "--out", str(tmp_path / "out"), "--prompt-name", "query")
    assert done.returncode == 0, done.stderr
    got = np.array(read_output(tmp_path / "out").sort_by("id").column("vector").to_pylist())
    for name in ("SMLS_MODELS", "SMLS_DATA_DIR", "SMLS_CACHE_DIR"):
        monkeypatch.setenv(name, env[name])
    served = engine.build(Settings.from_env(), None, load_indexes=False)
    tiny = served.embedding(served.model("tiny"))
    want, cuts = tiny.encode(texts, tiny.text_options({"prompt_name": "query"}), "input", 30)
    assert [c.index for c in cuts] == [1]  # the long one was cut, on the left
    assert np.abs(got - want.vectors).max() <= 1e-5

    write_document(tmp_path / "data", "alpha", 30)
    pre = subprocess.run([sys.executable, "-m", "smls", "precompute", "--no-progress"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert pre.returncode == 0, pre.stderr
    # The document that precompute cached is found under the key the server asks for.
    assert tiny.documents.is_cached(documents.load_document(tmp_path / "data", "alpha"))
