"""The SentenceEncoder service on the real embedded model."""

from __future__ import annotations

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_run_returns_float32_matrix(encoder):
    vectors = encoder.run(["Hello world!", "How are you today?"])
    assert vectors.dtype == np.float32
    assert vectors.shape == (2, 384)


def test_info(encoder):
    info = encoder.info()
    assert info["name"] == "all-MiniLM-L6-v2"
    assert info["dimension"] == 384
    assert info["max_seq_length"] == 256
    assert info["path"].endswith("model")


def test_matches_sentence_transformers_encode_in_input_order(encoder):
    # Mixed lengths and a batch size smaller than the input exercise the sort-and-restore path.
    texts = ["short", "a much longer sentence about the weather in the mountains today", "mid length text", "x" * 50] * 5
    small_batches = type(encoder)(model=str(encoder.path), batch_size=3)
    reference = SentenceTransformer(str(encoder.path), device="cpu").encode(texts)
    assert cosine(small_batches.run(texts), reference).min() >= 0.9999
    assert cosine(encoder.run(texts), reference).min() >= 0.9999


def test_truncation_is_counted_and_matches_sentence_transformers(encoder):
    long_text = "word " * 1000
    result = encoder.encode(["short one", long_text, long_text + "more"])
    assert result.truncated == 2
    reference = SentenceTransformer(str(encoder.path), device="cpu").encode([long_text])
    assert cosine(result.vectors[1:2], reference)[0] >= 0.9999


def test_normalize(encoder):
    vectors = encoder.run(["a sentence", "another one"], normalize=True)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_paraphrase_is_closer_than_unrelated(encoder):
    a, b, c = encoder.run(
        ["A man is playing a guitar.", "Someone strums an acoustic guitar.", "The stock market fell sharply on Monday."],
        normalize=True,
    )
    assert float(a @ b) > float(a @ c) + 0.2


def test_rejects_non_strings(encoder):
    with pytest.raises(TypeError):
        encoder.run(["ok", 3])
