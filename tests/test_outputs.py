"""Output options: dimensions, normalisation, precision and base64, against sentence-transformers' own quantiser."""

from __future__ import annotations

import base64

import numpy as np
import orjson
import pytest
from sentence_transformers.util.quantization import quantize_embeddings

from smls import outputs
from tests.helpers import assert_error


def test_truncation_keeps_the_first_dimensions_and_renormalises():
    vectors = np.arange(1, 13, dtype=np.float32).reshape(2, 6)
    cut = outputs.truncate_and_normalize(vectors, 4, normalize=True)
    assert cut.shape == (2, 4)
    assert np.allclose(np.linalg.norm(cut, axis=1), 1.0)
    assert np.allclose(cut[0], vectors[0, :4] / np.linalg.norm(vectors[0, :4]))
    assert np.array_equal(outputs.truncate_and_normalize(vectors, None, normalize=False), vectors)


@pytest.mark.parametrize("precision", ["int8", "uint8", "binary", "ubinary"])
def test_quantize_matches_sentence_transformers(encoder, precision):
    texts = outputs.calibration_texts()
    vectors = encoder.run(texts[:40])
    ranges = np.stack([vectors.min(axis=0), vectors.max(axis=0)])  # every value in range: no clipping
    ours = outputs.quantize(vectors, precision, ranges)
    theirs = quantize_embeddings(vectors, precision=precision, ranges=ranges)
    assert ours.dtype == theirs.dtype
    assert np.array_equal(ours, theirs)


def test_out_of_range_values_are_clipped_not_wrapped():
    ranges = np.array([[0.0, 0.0], [1.0, 1.0]], dtype=np.float32)
    codes = outputs.quantize(np.array([[-5.0, 9.0]], dtype=np.float32), "uint8", ranges)
    assert codes.tolist() == [[0, 255]]
    assert outputs.quantize(np.array([[-5.0, 9.0]], dtype=np.float32), "int8", ranges).tolist() == [[-128, 127]]


@pytest.mark.parametrize(("precision", "dtype"), [("float32", "<f4"), ("int8", "i1"), ("uint8", "u1"), ("ubinary", "u1")])
def test_base64_is_the_little_endian_bytes_of_each_vector(precision, dtype):
    vectors = np.array([[1.5, -2.0, 3.25, 0.0], [0.5, 0.25, -1.0, 2.0]], dtype=np.float32).astype(dtype)
    encoded = outputs.encode_vectors(vectors, precision, "base64")
    assert len(encoded) == 2
    assert base64.b64decode(encoded[0]) == vectors[0].astype(dtype).tobytes()
    assert np.array_equal(outputs.decode_base64(encoded[1], precision), vectors[1])


def test_calibration_is_computed_once_and_read_back_from_the_cache(encoder, tmp_path):
    first = outputs.Calibration(encoder, tmp_path)
    ranges = first.ranges(None, False)
    assert ranges.shape == (2, 384) and (ranges[0] < ranges[1]).all()
    assert first.path.exists()
    before = encoder.sentences_encoded
    second = outputs.Calibration(encoder, tmp_path)
    assert np.array_equal(second.ranges(None, False), ranges)
    assert encoder.sentences_encoded == before  # read from disk, not recomputed
    assert second.ranges(64, True).shape == (2, 64)


def embed(client, **body):
    response = client.post("/embed", json=body)
    assert response.status_code == 200, response.get_data(as_text=True)
    return orjson.loads(response.data)


def test_int8_codes_do_not_depend_on_the_rest_of_the_batch(client):
    alone = embed(client, message=["A lighthouse keeper watched the storm."], precision="int8")
    crowd = embed(client, message=["Totally different words here.", "A lighthouse keeper watched the storm.", "x"], precision="int8")
    assert alone["embeddings"][0] == crowd["embeddings"][1]
    assert all(-128 <= c <= 127 for c in alone["embeddings"][0])


def test_embed_options_over_http(client, encoder):
    texts = ["Hello world!", "How are you today?"]
    plain = embed(client, message=texts)
    assert (plain["precision"], plain["encoding"], plain["dimension"], plain["normalized"]) == ("float32", "json", 384, False)
    cut = embed(client, message=texts, dimensions=128, normalize=True)
    assert cut["dimension"] == 128 and len(cut["embeddings"][0]) == 128
    assert np.allclose(np.linalg.norm(np.array(cut["embeddings"]), axis=1), 1.0, atol=1e-5)
    expected = outputs.truncate_and_normalize(encoder.run(texts), 128, True)
    assert np.allclose(np.array(cut["embeddings"]), expected, atol=1e-5)
    packed = embed(client, message=texts, precision="ubinary")
    assert len(packed["embeddings"][0]) == 48 and packed["dimension"] == 384
    b64 = embed(client, message=texts, encoding="base64")
    assert np.allclose(outputs.decode_base64(b64["embeddings"][0], "float32"), np.array(plain["embeddings"][0]), atol=1e-6)
    form = client.post("/embed", data={"message": "Hello world!", "dimensions": "16", "precision": "uint8", "encoding": "base64"})
    assert form.status_code == 200
    assert len(base64.b64decode(orjson.loads(form.data)["embeddings"][0])) == 16
    query = client.post("/embed?normalize=true&dimensions=8", data={"message": "Hello world!"})
    assert len(orjson.loads(query.data)["embeddings"][0]) == 8


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"dimensions": 0}, "between 1 and 384"),
        ({"dimensions": 385}, "between 1 and 384"),
        ({"dimensions": "ten"}, "must be an integer"),
        ({"dimensions": True}, "must be an integer"),
        ({"dimensions": 1.5}, "must be an integer"),
        ({"precision": "int4"}, "must be one of float32, int8, uint8, binary, ubinary"),
        ({"encoding": "hex"}, "must be one of json, base64"),
        ({"normalize": "perhaps"}, "true or false"),
    ],
)
def test_bad_options_are_400_invalid_option(client, options, fragment):
    response = client.post("/embed", json={"message": "hi", **options})
    assert fragment in assert_error(response, 400, "invalid_option")["message"]
