"""Several models in one server: SMLS_MODELS, model selection on every route, /rerank, the shared stream budget.

In-process (Flask's test client) over three real models: the embedded all-MiniLM-L6-v2 and
two tiny random-weight models built by the tests (an embedding model and a cross-encoder).
tests/test_live_models.py runs the same paths through gunicorn.
"""

from __future__ import annotations

import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import orjson
import pytest

import smls
from smls.catalog import ModelEntry, detect_kind, parse_models
from smls.config import BACKENDS, Settings
from smls.encoders import SentenceEncoder
from smls.encoders.base import BatchResult
from smls.errors import StartupError
from tests.helpers import ROOT, assert_error, assert_openai_error

# --- SMLS_MODELS: syntax and start-up checks ---------------------------------------------


def test_entries_with_paths_settings_and_bare_names():
    entries = parse_models("mini=embedded, mpnet ;backend=torch;batch_size=4,judge=/srv/ce;kind=cross-encoder", BACKENDS)
    assert entries == [
        ModelEntry("mini", "embedded"),
        ModelEntry("mpnet", "", backend="torch", batch_size=4),
        ModelEntry("judge", "/srv/ce", kind="cross-encoder"),
    ]


@pytest.mark.parametrize(
    "raw, says",
    [
        ("mini=embedded,,x=y", "entry 2 is empty"),
        ("bad name=embedded", "the name 'bad name' must be"),
        ("-x=embedded", "the name '-x' must be"),
        ("mini=", "the path after '=' is empty"),
        ("a=embedded,a=/srv/x", "the name 'a' is used twice"),
        ("a=embedded;backend=tensorflow", "backend must be one of torch, onnx, onnx-int8, openvino, openvino-int8, got 'tensorflow'"),
        ("a=embedded;kind=classifier", "kind must be embedding or cross-encoder"),
        ("a=embedded;batch_size=0", "batch_size must be a whole number of at least 1, got '0'"),
        ("a=embedded;threads=2", "'threads=2' is not a setting; use backend=..., kind=..., batch_size=..."),
        ("a=embedded;backend=torch;backend=onnx", "backend is given twice"),
        ("j=/srv/ce;kind=cross-encoder;backend=onnx", "a cross-encoder runs on torch"),
    ],
)
def test_bad_entries_are_one_line_errors_naming_the_entry(raw, says):
    with pytest.raises(StartupError) as err:
        Settings(models=raw)
    assert says in err.value.message and "SMLS_MODELS entry" in err.value.message and "\n" not in err.value.message


def test_models_and_the_single_model_settings_exclude_each_other():
    with pytest.raises(StartupError, match="set SMLS_MODELS or SMLS_MODEL"):
        Settings(models="a=embedded", model="/srv/x")
    with pytest.raises(StartupError, match="SMLS_DEFAULT_MODEL needs SMLS_MODELS"):
        Settings(default_model="a")
    with pytest.raises(StartupError, match=r"SMLS_DEFAULT_MODEL='b' is not in SMLS_MODELS \(a\)"):
        Settings(models="a=embedded", default_model="b")


def test_settings_come_from_the_environment():
    s = Settings.from_env({"SMLS_MODELS": "a=embedded,b=embedded;backend=torch", "SMLS_DEFAULT_MODEL": "b"})
    catalog = s.catalog()
    assert [m.name for m in catalog.models] == ["a", "b"] and catalog.default == "b"
    assert catalog.models[1].backend == "torch" and catalog.models[0].backend is None


def test_folders_kinds_and_the_default_are_checked_against_the_files(tmp_path, tiny_models):
    models = tmp_path / "data" / "models"
    shutil.copytree(tiny_models["tiny"], models / "tiny")
    s = Settings(models=f"judge={tiny_models['judge']},tiny", data_dir=tmp_path / "data")
    catalog = s.catalog()
    # The first entry is a cross-encoder, so the default is the first embedding model.
    assert [(m.name, m.kind) for m in catalog.models] == [("judge", "cross-encoder"), ("tiny", "embedding")]
    assert catalog.default == "tiny" and catalog.models[1].path == (models / "tiny").resolve()
    # A bare folder name is looked for in data/models too.
    assert Settings(models="t=tiny", data_dir=tmp_path / "data").catalog().models[0].path == (models / "tiny").resolve()
    with pytest.raises(StartupError, match=r"model path .*models/gone.* \(from SMLS_MODELS entry 'gone'\) does not exist"):
        Settings(models="gone", data_dir=tmp_path / "data").catalog()
    with pytest.raises(StartupError, match="SMLS_DEFAULT_MODEL='judge' is a cross-encoder"):
        Settings(models=f"tiny,judge={tiny_models['judge']}", data_dir=tmp_path / "data", default_model="judge").catalog()
    with pytest.raises(StartupError, match="has no embedding model"):
        Settings(models=f"judge={tiny_models['judge']}").catalog()
    with pytest.raises(StartupError, match="declared kind=cross-encoder, but .* holds a embedding model|declared kind=cross-encoder"):
        Settings(models=f"t={tiny_models['tiny']};kind=cross-encoder").catalog()
    with pytest.raises(StartupError, match="is a cross-encoder; serve it beside an embedding model with SMLS_MODELS"):
        Settings(model=str(tiny_models["judge"])).catalog()


def test_kind_is_found_in_the_folder(tiny_models, encoder):
    assert detect_kind(tiny_models["tiny"]) == "embedding"
    assert detect_kind(tiny_models["judge"]) == "cross-encoder"
    assert detect_kind(encoder.path) == "embedding"


def test_a_bad_entry_stops_gunicorn_with_one_line(tmp_path):
    from tests.helpers import run_gunicorn_expecting_failure

    result = run_gunicorn_expecting_failure(tmp_path, SMLS_MODELS="mini=embedded,x=/no/such/folder")
    assert result.returncode != 0
    assert "smls: model path '/no/such/folder' (from SMLS_MODELS entry 'x') does not exist" in result.stderr


# --- one app, three models -----------------------------------------------------------------


@pytest.fixture(scope="module")
def three(tmp_path_factory, tiny_models):
    """An app serving mini (embedded, default), tiny (embedding) and judge (cross-encoder), with the demo document."""
    tmp = tmp_path_factory.mktemp("three")
    (tmp / "data").mkdir()
    for name in ("texts_demo.json", "pages_demo.csv"):
        shutil.copy(ROOT / "data" / name, tmp / "data" / name)
    settings = Settings(
        models=f"mini=embedded,tiny={tiny_models['tiny']},judge={tiny_models['judge']};kind=cross-encoder",
        data_dir=tmp / "data",
        cache_dir=tmp / "cache",
        max_messages=8,
        doc_batch=64,
    )
    return smls.create_app(settings)


@pytest.fixture()
def c(three):
    return three.test_client()


def embed_model(response) -> tuple[str, int]:
    body = orjson.loads(response.data)
    assert response.status_code == 200, body
    return body["model"], len(body["embeddings"][0])


def test_embed_picks_the_model_from_json_form_multipart_or_query(c):
    assert embed_model(c.post("/embed", json={"message": "hi"})) == ("mini", 384)
    assert embed_model(c.post("/embed", json={"message": "hi", "model": "tiny"})) == ("tiny", 32)
    assert embed_model(c.post("/embed", json={"message": "hi", "model": None})) == ("mini", 384)  # null: not given
    assert embed_model(c.post("/embed", data={"message": "hi", "model": "tiny"})) == ("tiny", 32)
    assert embed_model(c.post("/embed", data={"message": "hi", "model": "tiny"}, content_type="multipart/form-data")) == ("tiny", 32)
    assert embed_model(c.post("/embed?model=tiny", data={"message": "hi"})) == ("tiny", 32)
    assert embed_model(c.post("/embed?model=tiny", json={"message": "hi", "model": "tiny"})) == ("tiny", 32)


def test_the_two_models_give_their_own_vectors(c, encoder):
    mini = orjson.loads(c.post("/embed", json={"message": "a cat", "model": "mini"}).data)["embeddings"][0]
    np.testing.assert_allclose(mini, encoder.run(["a cat"])[0], atol=1e-4)
    tiny = orjson.loads(c.post("/embed", json={"message": "a cat", "model": "tiny"}).data)["embeddings"][0]
    again = orjson.loads(c.post("/embed", json={"message": ["a dog", "a cat"], "model": "tiny"}).data)["embeddings"][1]
    np.testing.assert_allclose(tiny, again, atol=1e-5)


def test_options_are_checked_against_the_chosen_models_dimension(c):
    assert orjson.loads(c.post("/embed", json={"message": "hi", "model": "tiny", "dimensions": 16}).data)["dimension"] == 16
    body = assert_error(c.post("/embed", json={"message": "hi", "model": "tiny", "dimensions": 64}), 400, "invalid_option")
    assert "32" in body["message"]
    assert c.post("/embed", json={"message": "hi", "dimensions": 64}).status_code == 200  # mini has 384


def test_model_errors_on_embed(c):
    body = assert_error(c.post("/embed", json={"message": "hi", "model": "nope"}), 404, "model_not_found")
    assert body["message"] == "model 'nope' is not served here; GET /models lists: mini, tiny, judge"
    assert_error(c.post("/embed?model=nope", data={"message": "hi"}), 404, "model_not_found")
    body = assert_error(c.post("/embed", json={"message": "hi", "model": "judge"}), 400, "wrong_model_kind")
    assert "POST /rerank" in body["message"] and "mini, tiny" in body["message"]
    body = assert_error(c.post("/embed", json={"message": "hi", "model": 3}), 400, "invalid_option")
    assert "got 3" in body["message"]
    body = assert_error(c.post("/embed?model=mini", json={"message": "hi", "model": "tiny"}), 400, "conflicting_option")
    assert '"mini"' in body["message"] and '"tiny"' in body["message"]
    assert_error(c.post("/embed", json={"message": "hi", "modle": "tiny"}), 400, "unknown_field")


def test_openai_embeddings_pick_the_model(c):
    body = orjson.loads(c.post("/v1/embeddings", json={"input": "hi", "model": "tiny"}).data)
    assert body["model"] == "tiny" and len(body["data"][0]["embedding"]) == 32
    assert orjson.loads(c.post("/v1/embeddings", json={"input": "hi"}).data)["model"] == "mini"
    err = assert_openai_error(c.post("/v1/embeddings", json={"input": "hi", "model": "nope"}), 404, "model_not_found")
    assert "GET /v1/models lists: mini, tiny, judge" in err["message"]
    assert_openai_error(c.post("/v1/embeddings", json={"input": "hi", "model": "judge"}), 400, "wrong_model_kind")
    assert_openai_error(c.post("/v1/embeddings", json={"input": "hi", "model": "tiny", "dimensions": 33}), 400, "invalid_option")


def test_model_lists(c):
    listed = orjson.loads(c.get("/models").data)
    assert listed["default"] == "mini"
    assert [(m["name"], m["kind"], m["dimension"], m["default"]) for m in listed["models"]] == [
        ("mini", "embedding", 384, True),
        ("tiny", "embedding", 32, False),
        ("judge", "cross-encoder", 0, False),
    ]
    assert [m["backend"] for m in listed["models"]] == ["onnx", "onnx", "torch"]
    assert [m["max_seq_length"] for m in listed["models"]] == [256, 128, 128]
    assert listed["models"][2]["routes"] == ["/rerank"]
    v1 = orjson.loads(c.get("/v1/models").data)["data"]
    assert [(m["id"], m["object"], m["kind"]) for m in v1] == [("mini", "model", "embedding"), ("tiny", "model", "embedding"), ("judge", "model", "cross-encoder")]
    index = orjson.loads(c.get("/").data)
    assert index["models"] == ["mini", "tiny", "judge"] and index["model"]["name"] == "mini"
    metrics = c.get("/metrics").get_data(as_text=True)
    assert 'smls_http_requests_total{method="GET",model="",route="/",status="200"}' in metrics  # describing a model is not running it


def test_documents_and_search_take_the_model(c):
    header = orjson.loads(c.get("/documents/demo?model=tiny&dimensions=8").data)
    assert header["model"] == "tiny" and header["dimension"] == 8 and len(header["sentences"][0]["embedding"]) == 8
    mini = orjson.loads(c.get("/documents/demo").data)
    assert mini["model"] == "mini" and len(mini["sentences"][0]["embedding"]) == 384
    # The cache is keyed by model: each model's vectors are its own.
    again = orjson.loads(c.get("/documents/demo?model=tiny").data)
    assert again["cached"] and len(again["sentences"][0]["embedding"]) == 32
    found = orjson.loads(c.get("/documents/demo/search?q=fire+safety&k=2&model=tiny").data)
    assert found["model"] == "tiny" and len(found["results"]) == 2
    assert_error(c.get("/documents/demo?model=nope"), 404, "model_not_found")
    assert_error(c.get("/documents/demo/search?q=x&model=judge"), 400, "wrong_model_kind")
    assert_error(c.get("/documents/demo?model=tiny&model=mini"), 400, "conflicting_option")


# --- /rerank -------------------------------------------------------------------------------


def rerank(c, **body):
    response = c.post("/rerank", json=body)
    assert response.status_code == 200, response.data
    return orjson.loads(response.data)


def test_rerank_uses_the_cross_encoder_by_default_and_says_so(c, tiny_models):
    from sentence_transformers import CrossEncoder

    docs = ["Cats sleep most of the day.", "The stock market fell.", "Paris is in France."]
    got = rerank(c, query="how long do cats sleep", documents=docs)
    assert got["object"] == "rerank" and got["model"] == "judge" and got["scorer"] == "cross-encoder"
    reference = CrossEncoder(str(tiny_models["judge"]), local_files_only=True).predict([("how long do cats sleep", d) for d in docs])
    assert [r["index"] for r in got["results"]] == list(np.argsort(-reference, kind="stable"))
    np.testing.assert_allclose([r["relevance_score"] for r in got["results"]], sorted(reference, reverse=True), atol=1e-5)
    assert all(0 < r["relevance_score"] < 1 for r in got["results"])  # the model's sigmoid
    assert "document" not in got["results"][0] and got["usage"]["total_tokens"] > 0 and got["id"]
    raw = rerank(c, query="how long do cats sleep", documents=docs, raw_scores=True)
    logits = np.log(reference / (1 - reference))
    np.testing.assert_allclose(sorted(r["relevance_score"] for r in raw["results"]), sorted(logits), atol=1e-4)


def test_rerank_with_an_embedding_model_is_cosine(c, encoder):
    docs = ["The stock market fell.", "Cats sleep most of the day.", "Paris is in France."]
    got = rerank(c, query="how long do cats sleep", documents=docs, model="mini")
    assert got["scorer"] == "cosine" and got["model"] == "mini"
    vectors = encoder.run(["how long do cats sleep", *docs], normalize=True)
    expected = vectors[1:] @ vectors[0]
    assert [r["index"] for r in got["results"]] == list(np.argsort(-expected))
    np.testing.assert_allclose([r["relevance_score"] for r in got["results"]], sorted(expected, reverse=True), atol=1e-4)
    tokens = sum(encoder.encode(["how long do cats sleep", *docs]).token_counts)
    assert got["usage"] == {"prompt_tokens": int(tokens), "total_tokens": int(tokens)}


def test_rerank_options_top_n_documents_texts_and_objects(c):
    docs = ["alpha", {"text": "beta", "id": "b"}, "gamma"]
    got = rerank(c, query="beta", documents=docs, model="mini", top_n=2, return_documents=True)
    assert len(got["results"]) == 2
    assert got["results"][0] == {"index": 1, "relevance_score": got["results"][0]["relevance_score"], "document": {"text": "beta", "id": "b"}}
    assert isinstance(got["results"][1]["document"], str)
    assert len(rerank(c, query="beta", texts=["alpha", "beta"], top_n=10, return_text=True)["results"]) == 2  # TEI's names
    assert rerank(c, query="q", documents=["x"], top_n=None, model=None)["model"] == "judge"  # null: not given


@pytest.mark.parametrize(
    "body, status, code, says",
    [
        ({"documents": ["a"]}, 400, "missing_query", "'query' is missing"),
        ({"query": 7, "documents": ["a"]}, 400, "missing_query", "'query' is a number"),
        ({"query": "  ", "documents": ["a"]}, 400, "invalid_message", "query item 0 is only whitespace"),
        ({"query": "q"}, 400, "missing_documents", "'documents' is missing"),
        ({"query": "q", "documents": []}, 400, "invalid_message", "documents is an empty list"),
        ({"query": "q", "documents": "a"}, 400, "missing_documents", "'documents' is a string; it must be a list"),
        ({"query": "q", "documents": ["a", 3]}, 400, "invalid_message", "documents item 1 is a number"),
        ({"query": "q", "documents": ["a", {"txt": "b"}]}, 400, "invalid_message", "documents item 1 is an object without \"text\""),
        ({"query": "q", "documents": ["a", ""]}, 400, "invalid_message", "documents item 1 is an empty string"),
        ({"query": "q", "documents": ["a"] * 9}, 413, "too_many_messages", "9 texts in documents; the limit is 8"),
        ({"query": "q", "documents": ["a"], "texts": ["b"]}, 400, "conflicting_option", "both 'documents' and 'texts'"),
        ({"query": "q", "documents": ["a"], "top_n": 0}, 400, "invalid_option", "'top_n' must be a whole number of at least 1, got 0"),
        ({"query": "q", "documents": ["a"], "top_n": "2"}, 400, "invalid_option", "got \"2\""),
        ({"query": "q", "documents": ["a"], "return_documents": "yes"}, 400, "invalid_option", "'return_documents' must be true or false"),
        ({"query": "q", "documents": ["a"], "return_documents": True, "return_text": False}, 400, "conflicting_option", "disagree"),
        ({"query": "q", "documents": ["a"], "model": "nope"}, 404, "model_not_found", "GET /models lists: mini, tiny, judge"),
        ({"query": "q", "documents": ["a"], "top_k": 2}, 400, "unknown_field", "did you mean 'top_n'?"),
        ({"query": "q", "documents": ["word " * 300], "truncate": False}, 400, "input_too_long", "the query with documents item 0 is longer"),
        ({"query": "q", "documents": ["ok", "word " * 300], "truncate": False, "model": "mini"}, 400, "input_too_long", "documents item 1 is 302 tokens"),
    ],
)
def test_rerank_bad_input_is_a_clear_error(c, body, status, code, says):
    error = assert_error(c.post("/rerank", json=body), status, code)
    assert says in error["message"], error["message"]


def test_rerank_truncates_long_texts_unless_told_not_to(c):
    got = rerank(c, query="q", documents=["word " * 300, "short"])
    assert len(got["results"]) == 2
    assert_error(c.post("/rerank", data={"query": "q"}), 415, "unsupported_media_type")


# (query, the relevant passage's index, passages): the relevant one is not always first or last.
QUALITY = [
    ("How do I reset my password?", 1, ["Our office is closed on public holidays.", "To reset your password, open Settings and choose 'Forgot password'.", "The cafeteria serves lunch from noon."]),
    ("What is the capital of Japan?", 2, ["Mount Fuji is the highest mountain in Japan.", "Sushi is a popular Japanese dish.", "Tokyo is the capital city of Japan."]),
    ("symptoms of the flu", 0, ["Influenza typically causes fever, cough, sore throat and body aches.", "The flight was delayed by two hours.", "Flu vaccines are updated every year."]),
    ("how to boil an egg", 1, ["Chickens lay eggs most days.", "Place the egg in boiling water and cook it for about nine minutes.", "Eggplant is a purple vegetable."]),
    ("Wer hat die Relativitätstheorie entwickelt?", 1, ["Berlin ist die Hauptstadt Deutschlands.", "Albert Einstein entwickelte die Relativitätstheorie.", "Die Sonne ist ein Stern."]),
    ("fire exits in the building", 2, ["The building has four floors.", "Fire trucks are usually red.", "In case of fire, leave by the nearest emergency exit, marked in green."]),
    ("Which planet is known as the red planet?", 0, ["Mars is often called the Red Planet because of its reddish surface.", "Red wine is made from dark grapes.", "Jupiter is the largest planet."]),
]


@pytest.mark.parametrize("query, relevant, documents", QUALITY)
def test_the_default_model_ranks_the_relevant_passage_first(c, query, relevant, documents):
    got = rerank(c, query=query, documents=documents, model="mini")
    assert got["results"][0]["index"] == relevant, got["results"]


# --- in-process services -------------------------------------------------------------------


def test_reranker_service_in_process(tiny_models):
    cosine = smls.ml_services.get("Reranker")
    assert cosine.scorer == "cosine" and cosine is smls.ml_services.get("Reranker", model=None)
    assert cosine.rank("capital of Japan", ["Sushi", "Tokyo is the capital of Japan"])[0][0] == 1
    cross = smls.ml_services.get("Reranker", model=str(tiny_models["judge"]))
    assert cross.scorer == "cross-encoder" and cross is smls.ml_services.get("Reranker", model=tiny_models["judge"])
    ranked = cross.rank("q", ["a", "b", "c"], top_n=2)
    assert len(ranked) == 2 and ranked[0][1] >= ranked[1][1]
    with pytest.raises(StartupError, match="is a cross-encoder: it scores pairs"):
        smls.ml_services.get("SentenceEncoder", model=str(tiny_models["judge"]))
    with pytest.raises(TypeError, match="Reranker does not take top_k"):
        smls.ml_services.get("Reranker", top_k=3)


def test_a_served_name_works_in_process_too(monkeypatch, tiny_models):
    monkeypatch.setenv("SMLS_MODELS", f"mini=embedded,tiny={tiny_models['tiny']};backend=torch")
    tiny = smls.ml_services.get("SentenceEncoder", model="tiny")
    assert tiny.name == "tiny" and tiny.backend == "torch" and tiny.dimension == 32


# --- the worker's stream budget ------------------------------------------------------------


class Counting(SentenceEncoder):
    """A parallel-safe encoder whose passes take 30 ms and record how many run at once, over all instances."""

    parallel_safe = True
    lock = threading.Lock()
    running = 0
    most = 0

    def __init__(self, path: Path, name: str) -> None:
        super().__init__(path, name, 8)
        self.dimension, self.max_seq_length = 4, 16

    def _encode_batch(self, texts: list[str], prepared: list | None) -> BatchResult:
        with Counting.lock:
            Counting.running += 1
            Counting.most = max(Counting.most, Counting.running)
        time.sleep(0.03)
        with Counting.lock:
            Counting.running -= 1
        return np.ones((len(texts), 4), dtype=np.float32), [False] * len(texts), [3] * len(texts)


def test_two_busy_models_never_run_more_passes_than_the_worker_has_streams(tmp_path):
    (tmp_path / "m").mkdir()
    a, b = Counting(tmp_path / "m", "a"), Counting(tmp_path / "m", "b")
    app = smls.create_app(Settings(inference_streams=2, max_batch=1, cache_dir=tmp_path / "cache"), models={"a": a, "b": b})
    assert a.streams == 2 and b.streams == 2  # each may use both streams when the other is idle
    Counting.most = 0
    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(lambda i: app.test_client().post("/embed", json={"message": f"t{i}", "model": "ab"[i % 2]}).status_code, range(64)))
    assert codes == [200] * 64
    assert a.sentences_encoded >= 32 and b.sentences_encoded >= 32
    assert Counting.most == 2  # both streams were used, and never more
    Counting.most = 0
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: app.test_client().post("/embed", json={"message": f"t{i}", "model": "a"}).status_code, range(16)))
    assert Counting.most == 2  # one model alone may use the whole budget


def test_the_budget_goes_to_the_model_that_used_least_and_gives_up_after_a_timeout():
    from smls.encoders.slots import Budget, Slots
    from smls.errors import Overloaded

    budget = Budget(1)
    assert budget.acquire("busy")
    assert budget.acquire("small", timeout=0.05) is False  # the one slot is taken
    budget.release("busy", 2.0)  # "busy" ran 2 s lately; "small" nothing
    assert budget.acquire("holder")
    order: list[str] = []
    waiters = [threading.Thread(target=lambda m=m: (budget.acquire(m), order.append(m), budget.release(m, 0.001))) for m in ("busy", "small")]
    for w in waiters:
        w.start()
        time.sleep(0.05)  # "busy" asks first
    budget.release("holder", 0.0)
    for w in waiters:
        w.join(5)
    assert order == ["small", "busy"]  # the least used goes first, whoever asked first
    slots = Slots(1, Budget(1), "m")
    with slots.hold(), pytest.raises(Overloaded, match="no free inference stream within 0.05 s"), slots.hold(timeout=0.05):
        pass


def test_slots_count_passes_and_a_pass_refused_by_the_budget_gives_its_own_slot_back():
    from smls.encoders.slots import Budget, Slots
    from smls.errors import Overloaded

    two = Slots(2)
    first, second = two.acquire(), two.acquire(timeout=0.05)
    with pytest.raises(Overloaded):
        two.acquire(timeout=0.05)  # both taken
    two.release(first)
    two.release(second)
    with two.hold(), two.hold():
        pass  # both free again
    budget = Budget(1)
    assert budget.acquire("other")
    slots = Slots(1, budget, "m")
    with pytest.raises(Overloaded):
        slots.acquire(timeout=0.05)  # its own slot is free, the budget's is not
    budget.release("other", 0.0)
    started = slots.acquire(timeout=0.05)  # its own slot came back with the refusal
    assert started > 0
    slots.release(started)
    assert budget.acquire("other", timeout=0.05)  # and the budget's went back on release
