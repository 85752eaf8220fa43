"""The search index: recall against exact search, removal, growth, catching up with the cache, saving and loading."""

from __future__ import annotations

import numpy as np
import pytest

from smls.index import AnnIndex, SearchIndex, labels, split
from smls.store.sqlite_vectors import VectorCache


def clustered(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    """Unit vectors around 50 centres: closer to real sentence vectors than uniform noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(50, dim))
    points = centres[rng.integers(0, 50, n)] + 0.3 * rng.normal(size=(n, dim))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def test_labels_round_trip():
    keys = labels(7, 3)
    assert [split(int(k)) for k in keys] == [(7, 0), (7, 1), (7, 2)]
    assert split(int(labels(2**31, 1)[0])) == (2**31, 0)


def test_recall_against_exact_search():
    data, queries = clustered(5000), clustered(100, seed=1)
    ann = AnnIndex(32)
    ann.add(np.arange(5000, dtype=np.uint64), data)
    exact = np.argsort(-(queries @ data.T), axis=1)[:, :10]
    found = [set(ann.search(q, 10)[0].tolist()) for q in queries]
    recall = np.mean([len(f & set(e.tolist())) / 10 for f, e in zip(found, exact, strict=True)])
    assert recall >= 0.95
    keys, scores = ann.search(queries[0], 3)
    assert np.allclose(scores, data[keys.astype(np.int64)] @ queries[0], atol=1e-5)  # cosine similarity, best first
    assert list(scores) == sorted(scores, reverse=True)


def test_removed_vectors_are_never_found_and_their_places_are_reused():
    data = clustered(300)
    ann = AnnIndex(32)
    ann.add(np.arange(300, dtype=np.uint64), data)
    ann.remove(np.arange(0, 300, 2, dtype=np.uint64))
    assert len(ann) == 150
    for q in data[:20]:
        keys, _ = ann.search(q, 10)
        assert all(int(k) % 2 == 1 for k in keys)
    capacity = ann.index.get_max_elements()
    ann.add(np.arange(1000, 1150, dtype=np.uint64), clustered(150, seed=3))
    assert ann.index.get_max_elements() == capacity and len(ann) == 300
    assert len(ann.search(data[1], 1000)[0]) <= 300  # never more than it holds


def fill(cache: VectorCache, doc_id: str, vectors: np.ndarray, model: str = "m") -> str:
    key = f"key-{doc_id}-{len(vectors)}"
    cache.begin(key, doc_id, model + ":opts", len(vectors), vectors.shape[1])
    for number, start in enumerate(range(0, len(vectors), 4)):
        cache.put(key, number, vectors[start : start + 4])
    cache.finish(key)
    cache.publish(model, doc_id, key)
    return key


def two_documents(tmp_path):
    """A cache with documents a (10 vectors) and b (7), and an index that has not caught up yet."""
    cache = VectorCache(tmp_path / "c.sqlite3")
    a, b = clustered(10, seed=5), clustered(7, seed=6)
    fill(cache, "a", a)
    fill(cache, "b", b)
    return cache, a, b, SearchIndex(cache, "m", 32, tmp_path / "index")


def test_search_index_catches_up_with_the_cache_and_survives_a_restart(tmp_path):
    cache, a, b, index = two_documents(tmp_path)
    assert index.sync() == 2 and len(index.ann) == 17
    hit = index.search(b[3], 1)[0]
    assert cache.published("m")[hit.version][0] == "b" and hit.index == 3 and hit.score == pytest.approx(1.0, abs=1e-5)
    # Another process replaces b and deletes a: this one follows at its next sync.
    fill(cache, "b", clustered(5, seed=7))
    cache.drop("a")
    assert index.sync() == 3 and len(index.ann) == 5  # old b and a out, new b in
    assert {cache.published("m")[n.version][0] for n in index.search(a[0], 5)} == {"b"}
    index.save()
    again = SearchIndex(cache, "m", 32, tmp_path / "index")
    again.load()
    assert again.held == index.held and again.sync() == 0
    assert [(n.version, n.index) for n in again.search(b[0], 3)] == [(n.version, n.index) for n in index.search(b[0], 3)]


def test_a_version_put_back_by_an_older_snapshot_keeps_its_vectors_and_goes_out_cleanly(tmp_path):
    """Two searches in one worker sync with snapshots of the published versions read at different times.

    The older one puts back a version the newer one took out. Its keys must take back their
    own removed places: hnswlib would otherwise give them others, and later reuse of the old
    places dropped the live keys, so taking the version out failed ("Label not found", a 500
    in make soak).
    """
    cache, a, b, index = two_documents(tmp_path)
    old = cache.published("m")
    index.sync(old)
    cache.unpublish("m", "a")  # (its vectors stay cached: an older snapshot can still read them)
    index.sync(cache.published("m"))  # the newer snapshot: a out
    index.sync(old)  # the older one, late: a back
    assert len(index.ann) == 17
    version_a = next(v for v, row in old.items() if row[0] == "a")
    assert [h.index for h in index.exact(a[3], [version_a], 1)] == [3]
    for seed in range(4):  # churn that reuses every removed place
        fill(cache, f"c{seed}", clustered(10, seed=20 + seed))
        index.sync(cache.published("m"))
    index.sync(cache.published("m"))  # a out for good: every key of it is found and removed
    assert version_a not in index.held and len(index.ann) == 7 + 40
    index.save()
    again = SearchIndex(cache, "m", 32, tmp_path / "index")
    again.load()
    assert version_a in again.removed  # kept with the saved index: another worker that loads it takes back the same way
    again.sync(old)
    again.sync(cache.published("m"))
    assert len(again.ann) == 7 + 40


def test_keys_that_return_take_back_their_own_places():
    ann = AnnIndex(8)
    first, second, third = (np.array([v << 32 | i for i in range(3)], dtype=np.uint64) for v in (1, 2, 3))
    ann.add(first, clustered(3, 8, seed=1))
    ann.add(second, clustered(3, 8, seed=2))
    ann.remove(first)
    ann.remove(second)
    ann.add(first, clustered(3, 8, seed=3), returning=True)
    ann.add(third, clustered(3, 8, seed=4))  # takes the places left: second's
    ann.remove(first)  # every key of first is still there
    ann.remove(third)
    assert len(ann) == 0
    without = AnnIndex(8)  # the same steps without returning=True fail: what the test above guards
    without.add(first, clustered(3, 8, seed=1))
    without.add(second, clustered(3, 8, seed=2))
    without.remove(first)
    without.remove(second)
    without.add(first, clustered(3, 8, seed=3))
    without.add(third, clustered(3, 8, seed=4))
    with pytest.raises(RuntimeError, match="Label not found"):
        without.remove(first)


def test_exact_search_over_some_versions(tmp_path):
    cache, a, b, index = two_documents(tmp_path)
    index.sync()
    version_b = next(v for v, row in cache.published("m").items() if row[0] == "b")
    hits = index.exact(a[0], [version_b], 3)
    assert all(h.version == version_b for h in hits)
    assert [h.index for h in hits] == list(np.argsort(-(b @ a[0]))[:3])


def test_a_damaged_index_file_is_rebuilt_from_the_cache(tmp_path):
    cache = VectorCache(tmp_path / "c.sqlite3")
    fill(cache, "a", clustered(10))
    index = SearchIndex(cache, "m", 32, tmp_path / "index")
    index.sync()
    index.save()
    for path in (tmp_path / "index").glob("*.hnsw"):
        path.write_bytes(b"garbage")
    again = SearchIndex(cache, "m", 32, tmp_path / "index")
    again.load()
    assert again.held == {} and again.sync() == 1 and len(again.ann) == 10


def _fill_at_once(path, barrier, results):
    cache = VectorCache(path)
    barrier.wait()  # every process opens the fresh file at the same moment
    try:
        fill(cache, "doc", np.ones((8, 4), np.float32))
        results.put("ok")
    except Exception as exc:  # noqa: BLE001 - reported to the test
        results.put(repr(exc))


def test_processes_that_open_a_fresh_cache_at_once_all_succeed(tmp_path):
    """Switching a new file to WAL answered 'database is locked' at once to one of several processes (a server and precompute)."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    for attempt in range(8):
        path = tmp_path / f"cache-{attempt}.sqlite3"
        barrier, results = context.Barrier(3), context.Queue()
        procs = [context.Process(target=_fill_at_once, args=(path, barrier, results)) for _ in range(3)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [results.get(timeout=5) for _ in procs] == ["ok"] * 3
        assert VectorCache(path).published("m")  # and the file is whole
