"""The HTTP layer through Flask's test client: accepted requests and one error shape on every error path."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

import smls
from smls.config import Settings
from tests.helpers import StandInEncoder, assert_error

FORM = "application/x-www-form-urlencoded"




def test_form_list_literal(client, encoder):
    r = client.post("/embed", data={"message": "['Hello world!', 'How are you today?']"})
    assert r.status_code == 200
    body = orjson.loads(r.data)
    assert body["model"] == "all-MiniLM-L6-v2"
    assert body["dimension"] == 384
    assert body["truncated"] == 0
    assert body["normalized"] is False
    vectors = np.array(body["embeddings"], dtype=np.float32)
    assert vectors.shape == (2, 384)
    assert np.allclose(vectors, encoder.run(["Hello world!", "How are you today?"]), atol=1e-6)


def test_json_body_and_order(client, encoder):
    texts = ["third is longest of them all by far", "first", "second one"]
    r = client.post("/embed", json={"message": texts})
    assert r.status_code == 200
    assert np.allclose(np.array(orjson.loads(r.data)["embeddings"]), encoder.run(texts), atol=1e-6)


def test_repeated_fields_and_multipart(client):
    r = client.post("/embed", data="message=one&message=two&message=three", content_type=FORM)
    assert len(orjson.loads(r.data)["embeddings"]) == 3
    r = client.post("/embed", data={"message": ["a", "b"]}, content_type="multipart/form-data")
    assert len(orjson.loads(r.data)["embeddings"]) == 2


@pytest.mark.parametrize(
    "request_kwargs",
    [
        {"data": {"message": "hi", "normalize": "true"}},
        {"json": {"message": "hi", "normalize": True}},
        {"query_string": {"normalize": "1"}, "json": {"message": "hi"}},
    ],
)
def test_normalize_option(client, request_kwargs):
    body = orjson.loads(client.post("/embed", **request_kwargs).data)
    assert body["normalized"] is True
    assert abs(np.linalg.norm(body["embeddings"][0]) - 1) < 1e-5


def test_truncation_is_reported(client):
    body = orjson.loads(client.post("/embed", json={"message": ["short", "long " * 600]}).data)
    assert body["truncated"] == 1
    assert len(body["embeddings"]) == 2


def test_index_and_health(client):
    index = orjson.loads(client.get("/").data)
    assert index["name"] == "smls" and index["version"] == smls.__version__
    assert index["model"]["dimension"] == 384
    assert "POST /embed" in index["endpoints"]
    assert orjson.loads(client.get("/health").data) == {"status": "ok"}


ERROR_CASES = [
    # (id, request kwargs, status, code)
    ("empty list", {"data": {"message": "[]"}}, 400, "invalid_message"),
    ("non-string item", {"data": {"message": "['a', 2]"}}, 400, "invalid_message"),
    ("nested list", {"data": {"message": "['a', ['b']]"}}, 400, "invalid_message"),
    ("invalid literal", {"data": {"message": "['a', 'b'"  "]]"}}, 400, "invalid_message"),
    ("code in literal", {"data": {"message": "[__import__('os').getcwd()]"}}, 400, "invalid_message"),
    ("empty string", {"data": {"message": ""}}, 400, "invalid_message"),
    ("missing message (form)", {"data": {"normalize": "true"}}, 400, "missing_message"),
    ("unknown form field", {"data": {"text": "hi"}}, 400, "unknown_field"),
    ("missing message (json)", {"json": {"normalize": True}}, 400, "missing_message"),
    ("no body at all", {}, 400, "missing_message"),
    ("invalid json", {"data": b'{"message": [', "content_type": "application/json"}, 400, "invalid_json"),
    ("json not an object", {"json": ["a"]}, 400, "invalid_json"),
    ("unknown json field", {"json": {"message": "a", "nromalize": True}}, 400, "unknown_field"),
    ("json message wrong type", {"json": {"message": 42}}, 400, "invalid_message"),
    ("json nested", {"json": {"message": [["a"]]}}, 400, "invalid_message"),
    ("bad normalize", {"json": {"message": "a", "normalize": "perhaps"}}, 400, "invalid_option"),
    ("non-utf8 json", {"data": b'{"message": "\xff\xfe"}', "content_type": "application/json"}, 400, "invalid_encoding"),
    ("non-utf8 form raw", {"data": b"message=caf\xe9", "content_type": FORM}, 400, "invalid_encoding"),
    ("non-utf8 form escaped", {"data": b"message=caf%E9", "content_type": FORM}, 400, "invalid_encoding"),
    ("text/plain", {"data": "hello", "content_type": "text/plain"}, 415, "unsupported_media_type"),
    ("latin-1 charset", {"data": "message=a", "content_type": FORM + "; charset=latin-1"}, 415, "unsupported_media_type"),
    ("too many messages", {"json": {"message": [str(i) for i in range(9)]}}, 413, "too_many_messages"),
    ("too many form fields", {"data": "&".join(["message=a"] * 30), "content_type": FORM}, 413, "too_many_messages"),
    ("body too large (json)", {"json": {"message": "x" * 5000}}, 413, "body_too_large"),
    ("body too large (form)", {"data": {"message": "x" * 5000}}, 413, "body_too_large"),
    ("body too large (multipart)", {"data": {"message": "x" * 5000}, "content_type": "multipart/form-data"}, 413, "body_too_large"),
]


@pytest.mark.parametrize(("kwargs", "status", "code"), [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES])
def test_embed_errors_have_one_shape(client, kwargs, status, code):
    assert_error(client.post("/embed", **kwargs), status, code)


def test_routing_errors_have_the_same_shape(client):
    assert_error(client.get("/no/such/thing"), 404, "not_found")
    error = assert_error(client.get("/embed"), 405, "method_not_allowed")
    assert "POST" in error["message"]
    assert "POST" in client.get("/embed").headers["Allow"]
    assert_error(client.delete("/health"), 405, "method_not_allowed")


def test_unexpected_failure_is_a_500_in_the_same_shape_and_leaks_nothing(encoder):
    class Exploding(StandInEncoder):
        def encode(self, texts, *, normalize=False, prepared=None):
            raise RuntimeError("secret internal detail")

    client = smls.create_app(Settings(), encoder=Exploding()).test_client()
    error = assert_error(client.post("/embed", json={"message": "hi"}), 500, "internal_error")
    assert "secret" not in error["message"]
