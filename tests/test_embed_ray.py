"""`python -m smls embed --ray` on a real local Ray cluster of two nodes (one CPU each), started and stopped here."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from bench.corpora import stdlib_sample  # real sentences of mixed lengths: the standard library's docstrings
from scripts.ray_cluster import Cluster, pids_with_env
from smls import documents
from smls.config import Settings
from tests.helpers import ROOT, documents_of, server_env, write_document


@pytest.fixture(scope="module")
def cluster():
    with Cluster(nodes=2, cpus=1) as started:
        yield started


def smls_embed(cluster: Cluster, env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "smls", "embed", "--no-progress", *args, "--ray", cluster.address], cwd=ROOT,
                            env={**env, **cluster.auth}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture()
def corpus(tmp_path):
    texts = stdlib_sample(2000)
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"id": f"s{i}", "text": t}) + "\n" for i, t in enumerate(texts)), encoding="utf-8")
    return path, texts


def wait_for_blocks(out: Path, run: subprocess.Popen, n: int, deadline: float) -> None:
    """Until the run has written n block files (or ended, or the deadline passed)."""
    while len(list(out.glob("part-*.parquet"))) < n and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.1)


def assert_each_row_once(out: Path, stdout: str) -> None:
    """All 20 blocks written, every id of the 2,000-row corpus in the output exactly once, no temporary file left."""
    assert "2,000 rows in 20 blocks written" in stdout
    ids = pq.read_table(out).column("id").to_pylist()
    assert sorted(ids, key=lambda i: int(i[1:])) == [f"s{i}" for i in range(2000)]  # each exactly once
    assert not list(out.glob(".*.tmp"))  # a dead actor's half-written file was removed


def actors_of(cache_dir: Path) -> list[int]:
    """The pids of this run's model actors: processes whose environment has the run's own SMLS_CACHE_DIR."""
    return pids_with_env("SMLS_CACHE_DIR", str(cache_dir), b"MapBatches(EmbedActor)")


def test_two_nodes_give_the_in_process_vectors_each_row_once(cluster, tmp_path, corpus, encoder):
    source, texts = corpus
    env = server_env(SMLS_CACHE_DIR=str(tmp_path / "cache"), SMLS_DATA_DIR=str(tmp_path / "data"))
    run = smls_embed(cluster, env, str(source), "--out", str(tmp_path / "out"), "--block-rows", "250")
    out, err = run.communicate(timeout=600)
    assert run.returncode == 0, err
    assert "2,000 rows in 8 blocks written" in out
    table = pq.read_table(tmp_path / "out")
    ids = table.column("id").to_pylist()
    assert len(ids) == len(set(ids)) == 2000
    order = np.argsort([int(i[1:]) for i in ids])
    vectors = np.array(table.column("vector").to_pylist(), dtype=np.float32)[order]
    assert np.abs(vectors - encoder.run(texts)).max() <= 1e-5
    # Ray's usage reporting is off (smls is offline): Ray Data started no actor to collect it.
    assert not pids_with_env("RAY_TMPDIR", cluster.tmp, b"_UsageCollectionActor")


def test_two_blocks_go_to_two_actors(cluster, tmp_path, corpus):
    """Each actor takes a block while the other runs one: the head's actor (the first up, beside the block list) takes no second."""
    source, _ = corpus
    env = server_env(SMLS_CACHE_DIR=str(tmp_path / "cache"), SMLS_DATA_DIR=str(tmp_path / "data"))
    run = smls_embed(cluster, env, str(source), "--out", str(tmp_path / "out"), "--block-rows", "1000")
    out, err = run.communicate(timeout=600)
    assert run.returncode == 0, err
    assert "2,000 rows in 2 blocks written" in out and "once running, 2 actors;" in out


def test_a_killed_actor_loses_no_row_and_doubles_none(cluster, tmp_path, corpus):
    source, _ = corpus
    cache = tmp_path / "cache"
    env = server_env(SMLS_CACHE_DIR=str(cache), SMLS_DATA_DIR=str(tmp_path / "data"))
    out = tmp_path / "out"
    run = smls_embed(cluster, env, str(source), "--out", str(out), "--block-rows", "100")
    try:
        wait_for_blocks(out, run, 2, time.monotonic() + 300)
        victims = actors_of(cache)
        assert victims, "no actor of this run was found"
        os.kill(victims[0], signal.SIGKILL)  # mid-run: blocks are left, and one is likely in its hands
        written_at_kill = len(list(out.glob("part-*.parquet")))
        stdout, stderr = run.communicate(timeout=600)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, stderr
    assert written_at_kill < 20  # the kill came before the end
    assert_each_row_once(out, stdout)


def test_a_removed_node_loses_no_row_and_doubles_none(tmp_path, corpus):
    """The second node is killed mid-run (raylet and all, as a lost machine): its blocks are done again on the head, each row once."""
    source, _ = corpus
    cache, out = tmp_path / "cache", tmp_path / "out"
    env = server_env(SMLS_CACHE_DIR=str(cache), SMLS_DATA_DIR=str(tmp_path / "data"))
    with Cluster(nodes=2, cpus=1) as own:  # a cluster of its own: this one ends with a node fewer
        run = smls_embed(own, env, str(source), "--out", str(out), "--block-rows", "100")
        try:
            deadline = time.monotonic() + 300
            wait_for_blocks(out, run, 2, deadline)
            assert len(actors_of(cache)) == 2, "the run did not start an actor on each node"
            own.remove_node(2)
            written_at_removal = len(list(out.glob("part-*.parquet")))
            # Its actor goes with it (a worker exits when its raylet is gone); the head has no CPU for a second one.
            while len(actors_of(cache)) > 1 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert len(actors_of(cache)) <= 1 or run.poll() is not None
            stdout, stderr = run.communicate(timeout=600)
        finally:
            if run.poll() is None:
                run.kill()
    assert run.returncode == 0, stderr
    assert written_at_removal < 20  # the node went before the end
    assert_each_row_once(out, stdout)


def test_a_bad_row_on_a_node_stops_the_run_with_its_line(cluster, tmp_path):
    source = tmp_path / "bad.jsonl"
    source.write_text('{"id": "a", "text": "fine"}\n{"id": "b"}\n', encoding="utf-8")
    env = server_env(SMLS_CACHE_DIR=str(tmp_path / "cache"), SMLS_DATA_DIR=str(tmp_path / "data"))
    run = smls_embed(cluster, env, str(source), "--out", str(tmp_path / "out"))
    _, err = run.communicate(timeout=600)
    assert run.returncode == 2
    assert f"smls: {source}: line 2: no 'text' field (the text); fix the input" in err
    assert not list((tmp_path / "out").glob("*.parquet"))


def test_into_the_store_on_ray(cluster, tmp_path, encoder):
    data, cache = tmp_path / "data", tmp_path / "cache"
    write_document(data, "alpha", 200)
    write_document(data, "beta", 50)
    env = server_env(SMLS_CACHE_DIR=str(cache), SMLS_DATA_DIR=str(data))
    run = smls_embed(cluster, env, "documents", "--into-store")
    out, err = run.communicate(timeout=600)
    assert run.returncode == 0, err
    assert "alpha: 200 sentences cached" in out and "beta: 50 sentences cached" in out
    embedder = documents_of(encoder, Settings(data_dir=data, cache_dir=cache))
    for doc_id in ("alpha", "beta"):
        assert embedder.is_cached(documents.load_document(data, doc_id))
