"""Requests answered on the event loop, each in a greenlet: their texts run as shared passes, each gets its own vectors, in order."""

from __future__ import annotations

import numpy as np
import pytest

from smls.batching import MicroBatcher
from smls.encoders import Encoded
from smls.errors import Overloaded
from smls.turns import LoopRequests, loop_requests, own_pass
from smls.web.endpoints import ENDPOINTS
from smls.worker import inline_size
from tests.helpers import StandInEncoder

# The paths the app declares fast (the worker reads the same set from the app).
PATHS = frozenset(e.rule.encode() for e in ENDPOINTS if e.fast)


class Recording(StandInEncoder):
    """Each text's vector is its length in every dimension; records the passes it was asked for."""

    def __init__(self, fail: bool = False) -> None:
        self.passes: list[list[str]] = []
        self.fail = fail

    def encode(self, texts, *, normalize=False, prepared=None):
        self.passes.append(list(texts))
        if self.fail:
            raise RuntimeError("the model failed")
        vectors = np.array([[float(len(t))] * 3 for t in texts], np.float32)
        return Encoded(vectors, np.zeros(len(texts), bool), np.full(len(texts), 2, np.int64))


def run_all(loop: LoopRequests) -> None:
    """What the worker's loop does between turns, until nothing is parked."""
    while loop.waiting:
        loop.run_next()


def test_parked_requests_share_passes_and_each_gets_its_own_vectors():
    encoder = Recording()
    batcher = MicroBatcher(encoder, max_batch=4, streams=1)
    requests = [["a"], ["bb", "ccc"], ["dddd"], ["eeeee"], ["ffffff", "g"]]
    answers: dict[int, np.ndarray] = {}
    loop = LoopRequests()
    for i, texts in enumerate(requests):
        loop.start(lambda i=i, texts=texts: answers.__setitem__(i, batcher.encode(texts).vectors))
    assert answers == {} and loop.waiting == 5  # every request waits for its pass
    loop.run_next()  # one pass per turn of the loop: at most max_batch sentences, whole requests, in order
    assert encoder.passes == [["a", "bb", "ccc", "dddd"]] and sorted(answers) == [0, 1, 2]
    run_all(loop)
    assert encoder.passes == [["a", "bb", "ccc", "dddd"], ["eeeee", "ffffff", "g"]]
    for i, texts in enumerate(requests):
        assert answers[i][:, 0].tolist() == [float(len(t)) for t in texts]
    assert batcher.batches == 2 and batcher.largest_batch == 4


def test_a_request_bigger_than_a_pass_runs_alone_and_keeps_its_place():
    encoder = Recording()
    batcher = MicroBatcher(encoder, max_batch=2, streams=1)
    loop = LoopRequests()
    for texts in (["a"], ["b", "c", "d"], ["e"]):
        loop.start(lambda texts=texts: batcher.encode(texts))
    run_all(loop)
    assert encoder.passes == [["a"], ["b", "c", "d"], ["e"]]


def test_a_request_may_ask_its_model_twice_and_one_that_needs_none_finishes_at_once():
    encoder = Recording()
    batcher = MicroBatcher(encoder, max_batch=16, streams=1)
    seen: list[str] = []

    def twice() -> None:
        first = batcher.encode(["one"]).vectors
        second = batcher.encode(["three"]).vectors
        seen.append(f"twice {first[0, 0]:.0f} {second[0, 0]:.0f}")

    loop = LoopRequests()
    loop.start(twice)
    loop.start(lambda: seen.append("no model"))
    assert seen == ["no model"]
    run_all(loop)
    assert seen == ["no model", "twice 3 5"]
    assert encoder.passes == [["one"], ["three"]]


def test_each_model_gets_its_own_passes():
    first, second = Recording(), Recording()
    batchers = [MicroBatcher(first, streams=1), MicroBatcher(second, streams=1)]
    loop = LoopRequests()
    for i in range(4):
        loop.start(lambda i=i: batchers[i % 2].encode([f"text {i}"]))
    run_all(loop)
    assert first.passes == [["text 0", "text 2"]] and second.passes == [["text 1", "text 3"]]


def test_a_failed_pass_fails_each_of_its_requests():
    batcher = MicroBatcher(Recording(fail=True), max_batch=16, streams=1)
    errors: list[str] = []

    def request(texts: list[str]) -> None:
        try:
            batcher.encode(texts)
        except RuntimeError as exc:
            errors.append(str(exc))

    loop = LoopRequests()
    loop.start(lambda: request(["x"]))
    loop.start(lambda: request(["y", "z"]))
    run_all(loop)
    assert errors == ["the model failed", "the model failed"]


def test_outside_the_loop_s_requests_the_batcher_works_as_before():
    assert loop_requests() is None
    encoder = Recording()
    assert MicroBatcher(encoder, streams=1).encode(["abc"]).vectors[0, 0] == 3.0
    inside: list[object] = []
    loop = LoopRequests()
    loop.start(lambda: inside.append(loop_requests()))
    assert inside == [loop] and loop.waiting == 0


BODY = b'{"message": ["hello"]}'


@pytest.mark.parametrize(
    ("data", "answered_on_the_loop"),
    [
        (b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Length: 22\r\n\r\n" + BODY, True),
        (b"POST /v1/embeddings?x=1 HTTP/1.1\r\ncontent-length: 22\r\n\r\n" + BODY, True),
        (b"POST /rerank HTTP/1.0\r\nContent-Length: 22\r\n\r\n" + BODY + b"POST /embed", True),  # the next request may follow
        (b"POST /embed HTTP/1.1\r\nContent-Length: 22\r\n\r\n" + BODY[:-1], False),  # the body is not all here yet
        (b"POST /embed HTTP/1.1\r\nContent-Length: 22\r\n", False),  # nor the head
        (b"POST /embed HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", False),
        (b"POST /embed HTTP/1.1\r\nContent-Length: 22\r\nContent-Length: 22\r\n\r\n" + BODY, False),
        (b"POST /embed HTTP/1.1\r\nContent-Length: +22\r\n\r\n" + BODY, False),
        (b"POST /embed HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 22\r\n\r\n" + BODY, False),
        (b"POST /embed HTTP/1.1\r\nbroken header\r\nContent-Length: 22\r\n\r\n" + BODY, False),
        (b"POST /embed HTTP/1.1\r\n\r\n", False),  # no length: gunicorn decides
        (b"GET /embed HTTP/1.1\r\n\r\n", False),
        (b"POST /documents HTTP/1.1\r\nContent-Length: 22\r\n\r\n" + BODY, False),  # may stream for minutes
        (b"POST /embed HTTP/1.1\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000, False),  # over SMLS_INLINE_BYTES
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", False),  # a TLS hello
    ],
)
def test_only_whole_small_posts_to_model_routes_are_answered_on_the_loop(data, answered_on_the_loop):
    size = inline_size(data, 4096, PATHS)
    assert (size is not None and len(data) >= size) is answered_on_the_loop


def test_a_small_post_whose_body_is_on_its_way_is_known_by_its_head():
    whole = b"POST /embed HTTP/1.1\r\nContent-Length: 22\r\n\r\n" + BODY
    for cut in (len(whole) - 22, len(whole) - 1, len(whole)):
        assert inline_size(whole[:cut], 4096, PATHS) == len(whole)
    assert inline_size(whole[:20], 4096, PATHS) is None  # the head is not all here
    assert inline_size(b"POST /embed HTTP/1.1\r\nContent-Length: 5000\r\n\r\n", 4096, PATHS) is None


def test_a_request_whose_deadline_passes_before_its_pass_gets_a_503_and_costs_no_pass():
    encoder = Recording()
    shed: list[int] = []
    batcher = MicroBatcher(encoder, max_batch=16, streams=1, on_shed=lambda: shed.append(1))
    outcomes: list[str] = []

    def request(texts: list[str], timeout: float) -> None:
        try:
            batcher.encode(texts, timeout=timeout)
            outcomes.append("vectors")
        except Overloaded as exc:
            outcomes.append(str(exc))

    loop = LoopRequests()
    loop.start(lambda: request(["in time"], 30))
    loop.start(lambda: request(["too late"], 0))
    run_all(loop)
    assert outcomes == ["vectors", "no result within 0 s (SMLS_REQUEST_TIMEOUT); retry shortly"]
    assert encoder.passes == [["in time"]] and shed == [1]


def test_parked_requests_count_in_the_queue_depth_until_their_pass_starts():
    depth: list[int] = [0]
    seen_in_pass: list[int] = []

    class Watching(Recording):
        def encode(self, texts, *, normalize=False, prepared=None):
            seen_in_pass.append(depth[0])
            return super().encode(texts, normalize=normalize, prepared=prepared)

    batcher = MicroBatcher(Watching(), max_batch=2, streams=1, on_depth=lambda n: depth.__setitem__(0, depth[0] + n))
    loop = LoopRequests()
    for texts in (["a"], ["b"], ["c"]):
        loop.start(lambda texts=texts: batcher.encode(texts))
    assert depth == [3]  # smls_queue_depth: waiting for a model, on the loop as in the queue
    run_all(loop)
    assert seen_in_pass == [1, 0] and depth == [0]  # counted out as their pass starts


def test_a_pass_no_one_shares_waits_for_its_turn_and_runs_alone():
    ran: list[str] = []
    answers: list[object] = []

    def score(name: str, left: float) -> str:
        assert 0 < left <= 30
        ran.append(name)
        if name == "bad":
            raise RuntimeError("the model failed")
        return f"scores of {name}"

    def request(name: str) -> None:
        try:
            answers.append(own_pass(lambda left: score(name, left), 30))
        except RuntimeError as exc:
            answers.append(str(exc))

    loop = LoopRequests()
    for name in ("first", "bad", "third"):
        loop.start(lambda name=name: request(name))
    assert ran == [] and loop.waiting == 3  # none holds the loop as it starts
    loop.run_next()
    assert ran == ["first"] and answers == ["scores of first"]  # one pass per turn
    run_all(loop)
    assert answers == ["scores of first", "the model failed", "scores of third"]
    assert own_pass(lambda left: f"now, {left:g} s left", 5) == "now, 5 s left"  # outside the loop: at once


def test_a_pass_of_its_own_whose_deadline_passed_gets_a_503_and_does_not_run():
    outcomes: list[str] = []
    shed: list[int] = []

    def request() -> None:
        try:
            own_pass(lambda left: outcomes.append("ran"), 0, lambda: shed.append(1))
        except Overloaded as exc:
            outcomes.append(str(exc))

    loop = LoopRequests()
    loop.start(request)
    run_all(loop)
    assert outcomes == ["no result within 0 s (SMLS_REQUEST_TIMEOUT); retry shortly"] and shed == [1]  # counted as the batcher's are


def test_a_request_alone_in_its_turn_runs_its_pass_at_once_without_waiting():
    encoder = Recording()
    depth: list[int] = []
    batcher = MicroBatcher(encoder, max_batch=2, streams=1, on_depth=depth.append)
    answers: list[list[float]] = []
    inside: list[object] = []

    def request() -> None:
        inside.append(loop_requests())
        answers.append(batcher.encode(["a", "bb", "ccc"]).vectors[:, 0].tolist())  # bigger than a pass: alone, as in run_next
        answers.append(batcher.encode(["dddd"]).vectors[:, 0].tolist())  # a request may ask twice

    loop = LoopRequests()
    loop.start_alone(request)
    assert answers == [[1.0, 2.0, 3.0], [4.0]] and encoder.passes == [["a", "bb", "ccc"], ["dddd"]]
    assert inside == [loop] and loop_requests() is None and not loop.alone
    assert loop.waiting == 0 and depth == []  # it never waited for a model, so the queue depth never counted it
    assert batcher.batches == 2


def test_a_request_alone_meets_its_deadline_and_the_models_errors_as_a_parked_one_does():
    outcomes: list[str] = []
    shed: list[int] = []
    loop = LoopRequests()

    def request(batcher: MicroBatcher, timeout: float) -> None:
        try:
            batcher.encode(["text"], timeout=timeout)
            outcomes.append("vectors")
        except (Overloaded, RuntimeError) as exc:
            outcomes.append(str(exc))

    loop.start_alone(lambda: request(MicroBatcher(Recording(fail=True), streams=1), 30))
    loop.start_alone(lambda: request(MicroBatcher(Recording(), streams=1, on_shed=lambda: shed.append(1)), 0))
    loop.start_alone(lambda: outcomes.append(own_pass(lambda left: f"own pass, {0 < left <= 5}", 5)))
    assert outcomes == ["the model failed", "no result within 0 s (SMLS_REQUEST_TIMEOUT); retry shortly", "own pass, True"]
    assert shed == [1]
