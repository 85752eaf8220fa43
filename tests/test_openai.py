"""POST /v1/embeddings and GET /v1/models: OpenAI's shapes, real token counts, and the real openai package."""

from __future__ import annotations

import base64

import numpy as np
import orjson
import pytest

from smls import outputs
from tests.helpers import assert_openai_error


def post(client, body, **kwargs):
    return client.post("/v1/embeddings", data=orjson.dumps(body), content_type="application/json", **kwargs)




def test_a_list_of_texts_gives_unit_vectors_in_order_with_real_token_counts(client, encoder):
    texts = ["Hello world!", "How are you today?", "A much longer sentence about lighthouses and the sea at night."]
    response = post(client, {"input": texts, "model": encoder.name})
    assert response.status_code == 200
    body = orjson.loads(response.data)
    assert body["object"] == "list" and body["model"] == encoder.name
    assert [d["index"] for d in body["data"]] == [0, 1, 2] and {d["object"] for d in body["data"]} == {"embedding"}
    vectors = np.array([d["embedding"] for d in body["data"]])
    assert np.allclose(vectors, encoder.run(texts, normalize=True), atol=1e-5)
    tokens = int(encoder.encode(texts).token_counts.sum())
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    assert tokens > 3 * 2  # special tokens and words, not characters or texts


def test_a_single_string_and_no_model_are_accepted(client):
    body = orjson.loads(post(client, {"input": "Hello world!"}).data)
    assert len(body["data"]) == 1 and len(body["data"][0]["embedding"]) == 384


def test_base64_and_dimensions(client, encoder):
    body = orjson.loads(post(client, {"input": ["Hello world!"], "encoding_format": "base64", "dimensions": 96}).data)
    vector = np.frombuffer(base64.b64decode(body["data"][0]["embedding"]), dtype="<f4")
    assert vector.shape == (96,)
    assert np.isclose(np.linalg.norm(vector), 1.0, atol=1e-5)
    assert np.allclose(vector, outputs.truncate_and_normalize(encoder.run(["Hello world!"]), 96, True)[0], atol=1e-5)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({}, 400, "missing_message"),
        ({"input": []}, 400, "invalid_message"),
        ({"input": ""}, 400, "invalid_message"),
        ({"input": [1, 2, 3]}, 400, "invalid_message"),
        ({"input": [[1, 2], [3]]}, 400, "invalid_message"),
        ({"input": {"a": 1}}, 400, "invalid_message"),
        ({"input": "hi", "model": "text-embedding-3-small"}, 404, "model_not_found"),
        ({"input": "hi", "encoding_format": "hex"}, 400, "invalid_option"),
        ({"input": "hi", "dimensions": 0}, 400, "invalid_option"),
        ({"input": "hi", "dimensions": 1000}, 400, "invalid_option"),
        ({"input": "hi", "temperature": 1}, 400, "unknown_field"),
        ({"input": "hi", "user": 5}, 400, "invalid_option"),
        ([1], 400, "invalid_json"),
    ],
)
def test_errors_come_in_openai_shape(client, body, status, code):
    error = assert_openai_error(post(client, body), status, code)
    assert error["type"] == "invalid_request_error"


def test_protocol_errors_on_v1_routes_are_openai_shaped_too(client):
    assert_openai_error(client.post("/v1/embeddings", data=b"{not json", content_type="application/json"), 400, "invalid_json")
    assert_openai_error(client.post("/v1/embeddings", data={"input": "hi"}), 415, "unsupported_media_type")
    assert_openai_error(client.get("/v1/embeddings"), 405, "method_not_allowed")
    assert_openai_error(client.get("/v1/nothing"), 404, "not_found")
    too_many = [f"text {i}" for i in range(9)]  # the test settings allow 8
    assert_openai_error(post(client, {"input": too_many}), 413, "too_many_messages")


def test_v1_models_lists_the_served_model(client, encoder):
    body = orjson.loads(client.get("/v1/models").data)
    assert body["object"] == "list" and [m["id"] for m in body["data"]] == [encoder.name]


@pytest.mark.live
def test_the_openai_package_against_a_live_server(live_server, encoder):
    from openai import BadRequestError, NotFoundError, OpenAI

    client = OpenAI(base_url=live_server.url + "/v1", api_key="none", max_retries=0)
    assert [m.id for m in client.models.list().data] == [encoder.name]
    texts = ["Hello world!", "Grüße aus Köln — ça va?"]
    # The package asks for base64 by default and decodes it itself.
    result = client.embeddings.create(model=encoder.name, input=texts)
    vectors = np.array([d.embedding for d in result.data])
    assert np.allclose(vectors, encoder.run(texts, normalize=True), atol=1e-5)
    assert result.usage.prompt_tokens == int(encoder.encode(texts).token_counts.sum())
    floats = client.embeddings.create(model=encoder.name, input="Hello world!", encoding_format="float", dimensions=32)
    assert len(floats.data[0].embedding) == 32
    with pytest.raises(NotFoundError) as missing:
        client.embeddings.create(model="no-such-model", input="hi")
    assert missing.value.body["code"] == "model_not_found"
    with pytest.raises(BadRequestError):
        client.embeddings.create(model=encoder.name, input=[])
