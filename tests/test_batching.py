"""Cross-request micro-batching: same vectors as alone, in order, and a bounded queue that refuses at once."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import orjson
import pytest

import smls
from smls.batching import MicroBatcher
from smls.config import Settings
from smls.contract import OVERFLOW_KEY, QUEUE_WAIT_KEY
from smls.encoders import Encoded
from smls.errors import Overloaded, StartupError
from tests.helpers import StandInEncoder, assert_error, counter


class Gated(StandInEncoder):
    """The real encoder behind a gate: encode blocks until the test opens it, and records what it saw."""

    def __init__(self, encoder):
        self.encoder = encoder
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.seen: list[list[str]] = []
        self.name, self.path, self.backend, self.fingerprint = encoder.name, encoder.path, encoder.backend, encoder.fingerprint
        self.dimension, self.max_seq_length = encoder.dimension, encoder.max_seq_length

    def info(self):
        return self.encoder.info()

    def prepare(self, texts):
        return self.encoder.prepare(texts)

    def encode(self, texts, *, normalize=False, prepared=None):
        self.seen.append(list(texts))
        self.entered.set()
        self.gate.wait(30)
        return self.encoder.encode(texts, normalize=normalize, prepared=prepared)


@pytest.mark.parametrize("streams", [1, 2])
def test_concurrent_requests_share_batches_and_get_their_own_vectors_in_order(encoder, streams):
    encoder.set_streams(streams)
    batcher = MicroBatcher(encoder, max_batch=16, max_wait=0.05, queue_size=256, streams=streams)
    requests = [[f"request {i} sentence {j} about {['cats', 'ships', 'tax', 'rain'][(i + j) % 4]}" for j in range(1 + i % 3)] for i in range(48)]

    def one(i):
        return batcher.encode(requests[i], normalize=i % 2 == 0)

    with ThreadPoolExecutor(max_workers=24) as pool:
        results = list(pool.map(one, range(len(requests))))
    assert batcher.batches < len(requests)  # requests really were put together
    assert batcher.largest_batch <= 16
    for i, (texts, result) in enumerate(zip(requests, results, strict=False)):
        alone = encoder.encode(texts, normalize=i % 2 == 0)
        assert result.vectors.shape == (len(texts), 384)
        cos = (result.vectors * alone.vectors).sum(1) / np.linalg.norm(result.vectors, axis=1) / np.linalg.norm(alone.vectors, axis=1)
        assert cos.min() >= 0.9999
        assert result.token_counts.tolist() == alone.token_counts.tolist()


def test_two_streams_run_two_forward_passes_at_once():
    both_inside = threading.Barrier(2, timeout=10)

    class Meeting:
        """Each forward pass waits until another one is running beside it (times out with one stream)."""

        def prepare(self, texts):
            return None

        def encode(self, texts, normalize=False, prepared=None):
            both_inside.wait()
            return Encoded(np.ones((len(texts), 3), np.float32), np.zeros(len(texts), bool), np.ones(len(texts), np.int64))

    batcher = MicroBatcher(Meeting(), max_batch=1, streams=2)
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda t: batcher.encode([t], timeout=20), ["a", "b"]))
    assert [r.vectors.shape for r in results] == [(1, 3), (1, 3)]


def test_a_pass_a_request_runs_itself_wakes_no_idle_batcher_thread(encoder):
    """Waking one for nothing after every such pass cost a thread switch and a turn of the GIL per request."""
    batcher = MicroBatcher(encoder, max_batch=16, streams=2)
    batcher.encode(["starts the batcher threads"])
    woken: list[int] = []
    notify = batcher._cond.notify
    batcher._cond.notify = lambda n=1: (woken.append(n), notify(n))[1]
    for i in range(5):
        assert batcher.encode([f"sentence {i}"]).vectors.shape == (1, 384)
    assert batcher.batches == 6 and woken == []


def test_a_queued_request_runs_once_the_pass_a_request_ran_itself_ends(encoder):
    gated = Gated(encoder)
    batcher = MicroBatcher(gated, max_batch=1, queue_size=4)
    with ThreadPoolExecutor(max_workers=2) as pool:
        running = pool.submit(batcher.encode, ["runs its own pass"])
        assert gated.entered.wait(10)
        queued = pool.submit(batcher.encode, ["waits for the stream"])
        while batcher.depth < 1:
            threading.Event().wait(0.01)
        gated.gate.set()
        assert running.result(10).vectors.shape == queued.result(10).vectors.shape == (1, 384)
    assert gated.seen == [["runs its own pass"], ["waits for the stream"]]


def test_the_torch_backend_refuses_parallel_streams():
    torch_encoder = smls.ml_services.get("SentenceEncoder", backend="torch")
    with pytest.raises(StartupError, match="one forward pass at a time"):
        torch_encoder.set_streams(2)


def test_truncation_is_reported_per_request(encoder):
    batcher = MicroBatcher(encoder, max_batch=64, max_wait=0.05)
    texts = [["short"], ["long " * 400], ["a", "long " * 500, "b"]]
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(batcher.encode, texts))
    assert [r.truncated for r in results] == [0, 1, 1]


def test_a_request_larger_than_max_batch_runs_alone_and_whole(encoder):
    batcher = MicroBatcher(encoder, max_batch=4)
    texts = [f"sentence {i}" for i in range(10)]
    assert np.allclose(batcher.encode(texts).vectors, encoder.run(texts), atol=1e-5)


def test_full_queue_is_refused_at_once(encoder):
    gated = Gated(encoder)
    batcher = MicroBatcher(gated, max_batch=1, queue_size=2)
    pool = ThreadPoolExecutor(max_workers=3)
    running = pool.submit(batcher.encode, ["first, being encoded"])
    assert gated.entered.wait(10)
    waiting = [pool.submit(batcher.encode, [f"queued {i}"]) for i in range(2)]
    while batcher.depth < 2:
        threading.Event().wait(0.01)
    with pytest.raises(Overloaded, match="2 requests waiting") as info:
        batcher.encode(["one too many"], timeout=30)  # would block 30 s if it waited
    assert info.value.status == 503 and info.value.headers == {"Retry-After": "1"}
    gated.gate.set()
    assert running.result(10).vectors.shape == (1, 384)
    assert all(w.result(10).vectors.shape == (1, 384) for w in waiting)
    pool.shutdown()


def test_a_request_past_its_deadline_is_503_and_costs_no_inference(encoder):
    gated = Gated(encoder)
    batcher = MicroBatcher(gated, max_batch=1, queue_size=8)
    pool = ThreadPoolExecutor(max_workers=1)
    running = pool.submit(batcher.encode, ["holding the model"])
    assert gated.entered.wait(10)
    with pytest.raises(Overloaded, match="SMLS_REQUEST_TIMEOUT"):
        batcher.encode(["given up on"], timeout=0.2)
    gated.gate.set()
    running.result(10)
    batcher.encode(["after"])
    assert ["given up on"] not in gated.seen
    pool.shutdown()


def test_overload_over_http_is_503_with_retry_after_in_the_error_shape(encoder):
    gated = Gated(encoder)
    app = smls.create_app(Settings(max_batch=1, queue_size=1, request_timeout=30), encoder=gated)
    client = app.test_client()
    pool = ThreadPoolExecutor(max_workers=2)
    first = pool.submit(app.test_client().post, "/embed", json={"message": "one"})
    assert gated.entered.wait(10)
    second = pool.submit(app.test_client().post, "/embed", json={"message": "two"})
    while app.extensions["smls"].embedding(None).batcher.depth < 1:
        threading.Event().wait(0.01)
    response = client.post("/embed", json={"message": "three"})
    assert_error(response, 503, "overloaded")
    assert response.headers["Retry-After"] == "1"
    gated.gate.set()
    assert first.result(10).status_code == 200 and second.result(10).status_code == 200
    assert len(orjson.loads(second.result().data)["embeddings"]) == 1
    pool.shutdown()


@pytest.mark.parametrize(
    ("stale", "reason"),
    [({QUEUE_WAIT_KEY: 30.5}, "SMLS_REQUEST_TIMEOUT"), ({OVERFLOW_KEY: True, QUEUE_WAIT_KEY: 0.01}, "SMLS_QUEUE_SIZE")],
)
def test_a_request_that_overflowed_or_waited_out_its_deadline_for_a_thread_is_shed_but_health_is_not(client, stale, reason):
    """gunicorn's worker (smls.worker) puts each request's wait for a thread, and whether the queue was full, in the environ."""
    fresh = {QUEUE_WAIT_KEY: 29.0, OVERFLOW_KEY: False}  # SMLS_REQUEST_TIMEOUT is 30 s: one second left
    before = counter(client.get("/metrics").get_data(as_text=True), "smls_shed_requests_total")
    response = client.post("/embed", json={"message": "hello"}, environ_base=stale)
    assert_error(response, 503, "overloaded")
    assert response.headers["Retry-After"] == "1" and reason in response.get_json()["error"]["message"]
    openai = client.post("/v1/embeddings", json={"input": "hello"}, environ_base=stale)
    assert openai.status_code == 503 and openai.get_json()["error"]["type"] == "server_error"
    assert client.get("/documents/nothing-here", environ_base=stale).status_code == 503  # shed before any file is read
    assert client.post("/embed", json={"message": "hello"}, environ_base=fresh).status_code == 200
    for path in ("/health", "/metrics", "/openapi.json"):
        assert client.get(path, environ_base=stale).status_code == 200
    assert counter(client.get("/metrics").get_data(as_text=True), "smls_shed_requests_total") == before + 3


def test_the_wait_for_a_thread_counts_against_the_request_deadline(encoder):
    gated = Gated(encoder)
    app = smls.create_app(Settings(request_timeout=30), encoder=gated)
    pool = ThreadPoolExecutor(max_workers=1)
    running = pool.submit(app.test_client().post, "/embed", json={"message": "holding the model"})
    assert gated.entered.wait(10)  # the worker's one stream is busy: the next request has to wait
    started = time.monotonic()
    response = app.test_client().post("/embed", json={"message": "late"}, environ_base={QUEUE_WAIT_KEY: 29.8})
    assert_error(response, 503, "overloaded")
    assert "no result within 0.2 s" in response.get_json()["error"]["message"]
    assert time.monotonic() - started < 5  # the 0.2 s left, not a fresh 30
    gated.gate.set()
    assert running.result(10).status_code == 200
    pool.shutdown()


# ---------------------------------------------------------------- the bulk lane (document chunks)


class Passes(StandInEncoder):
    """Records every forward pass (its texts) in order; each pass waits for the test to let it through."""

    def __init__(self):
        self.passes: list[list[str]] = []
        self.turnstile = threading.Semaphore(0)
        self.inside = threading.Semaphore(0)

    def encode(self, texts, *, normalize=False, prepared=None):
        self.passes.append(list(texts))
        self.inside.release()
        assert self.turnstile.acquire(timeout=30)
        vectors = np.array([[len(t), i, 1.0] for i, t in enumerate(texts)], dtype=np.float32)
        return Encoded(vectors, np.zeros(len(texts), bool), np.full(len(texts), 3))

    def let_through(self, n=1):
        for _ in range(n):
            assert self.inside.acquire(timeout=10)
            self.turnstile.release()


def test_a_bulk_job_runs_on_every_stream_at_once():
    both_inside = threading.Barrier(2, timeout=10)

    class Meeting(StandInEncoder):
        def encode(self, texts, *, normalize=False, prepared=None):
            both_inside.wait()  # times out unless two pieces run side by side
            return Encoded(np.ones((len(texts), 3), np.float32), np.zeros(len(texts), bool), np.ones(len(texts), np.int64))

    batcher = MicroBatcher(Meeting(), streams=2, piece_size=4)
    assert batcher.submit_bulk([f"sentence {i}" for i in range(8)]).wait(20).vectors.shape == (8, 3)
    assert batcher.pieces_run == 2


def test_a_bulk_job_gives_the_same_vectors_as_the_encoder_in_input_order(encoder):
    encoder.set_streams(2)
    batcher = MicroBatcher(encoder, streams=2, piece_size=3)
    texts = [("a long sentence about ships and harbours " * (i % 5 + 1)).strip() + f" {i}" for i in range(20)]
    result = batcher.submit_bulk(texts).wait(60)
    alone = encoder.encode(texts)
    assert np.allclose(result.vectors, alone.vectors, atol=1e-5)
    assert result.token_counts.tolist() == alone.token_counts.tolist()
    assert batcher.pieces_run == 7  # 20 sentences in pieces of 3, longest first
    encoder.set_streams(1)


def test_short_requests_and_bulk_pieces_take_turns():
    passes = Passes()
    batcher = MicroBatcher(passes, streams=1, max_batch=1, piece_size=1)
    job = batcher.submit_bulk([f"piece {i}" for i in range(6)])
    assert passes.inside.acquire(timeout=10)  # the first piece is running; requests arrive behind the rest
    pool = ThreadPoolExecutor(max_workers=3)
    asked = [pool.submit(batcher.encode, [f"request {i}"]) for i in range(3)]
    while batcher.depth < 3:
        threading.Event().wait(0.01)
    passes.turnstile.release()
    passes.let_through(8)
    assert [r.result(10).vectors.shape for r in asked] == [(1, 3)] * 3
    assert job.wait(10).vectors.shape == (6, 3)
    kinds = ["r" if p[0].startswith("request") else "b" for p in passes.passes]
    # A request waits for at most one piece, and the document still gets every other pass.
    assert "".join(kinds) == "brbrbrbbb"
    pool.shutdown()


def test_a_cancelled_bulk_job_runs_no_more_pieces():
    passes = Passes()
    batcher = MicroBatcher(passes, streams=1, piece_size=2)
    job = batcher.submit_bulk([f"piece {i}" for i in range(10)])
    assert passes.inside.acquire(timeout=10)
    canceller = threading.Thread(target=job.cancel)
    canceller.start()
    canceller.join(0.2)
    assert canceller.is_alive()  # cancel returns only once the running piece is done
    passes.turnstile.release()
    canceller.join(10)
    assert not canceller.is_alive()
    pool = ThreadPoolExecutor(max_workers=1)
    after = pool.submit(batcher.encode, ["after"])
    passes.let_through()
    assert after.result(10).vectors.shape == (1, 3)
    assert passes.passes == [["piece 0", "piece 1"], ["after"]]  # the other four pieces never ran
    pool.shutdown()


def test_a_failing_piece_fails_the_job_with_its_error():
    class Broken(StandInEncoder):
        def encode(self, texts, *, normalize=False, prepared=None):
            if "bad" in texts:
                raise RuntimeError("the model broke")
            return Encoded(np.ones((len(texts), 3), np.float32), np.zeros(len(texts), bool), np.ones(len(texts), np.int64))

    batcher = MicroBatcher(Broken(), piece_size=1)
    with pytest.raises(RuntimeError, match="the model broke"):
        batcher.submit_bulk(["good", "bad", "good too"]).wait(10)
    assert batcher.encode(["still serving"], timeout=10).vectors.shape == (1, 3)
