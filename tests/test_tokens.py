"""POST /tokenize and /decode: the model's own tokenizer, held to transformers' on real text, and refusing what is not."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from tests.helpers import ROOT, assert_error

DEMO = [s["text"] for s in json.loads((ROOT / "data" / "texts_demo.json").read_text())]


@pytest.fixture()
def settings(settings):
    """The test settings (8 texts a request), with room for the long texts' bodies."""
    from dataclasses import replace

    return replace(settings, max_body_bytes=256 * 1024)


@pytest.fixture(scope="module")
def reference(encoder):
    """transformers' fast tokenizer of the same folder: the ids and counts /tokenize must give."""
    return AutoTokenizer.from_pretrained(str(encoder.path))


def real_texts() -> list[str]:
    """1,000 texts: the demo corpus, standard-library docstrings, non-ASCII and emoji, and texts longer than the model takes."""
    from bench.corpora import stdlib_sample

    odd = ["Ünïcödé naïve café — “quotes”", "日本語のテキストです。", "Emoji: 🙂👍🏽🚀 and ⚓", "Ελληνικά και русский", "tab\tand\nnewline", "x" * 40]
    long = [" ".join(DEMO[i : i + 20]) for i in range(0, 200, 20)]  # 300-700 tokens each
    texts = DEMO + odd + long
    return texts + stdlib_sample(1000 - len(texts))


def tokenize(client, **body):
    r = client.post("/tokenize", json=body)
    assert r.status_code == 200, r.data
    return r.get_json()


def test_tokenize_equals_the_models_tokenizer_on_1000_real_texts(client, reference):
    texts = real_texts()
    assert len(texts) == 1000
    got = []
    for start in range(0, len(texts), 8):  # (the test settings allow 8 texts a request)
        got += tokenize(client, text=texts[start : start + 8])["texts"]
    expected = reference(texts, add_special_tokens=True, truncation=False)["input_ids"]
    assert [t["ids"] for t in got] == expected
    assert [t["count"] for t in got] == [len(ids) for ids in expected]
    assert [t["truncated"] for t in got] == [len(ids) > 256 for ids in expected]
    assert sum(t["truncated"] for t in got) >= 10  # the long ones
    normalize = reference.backend_tokenizer.normalizer.normalize_str
    for text, entry in zip(texts, got, strict=True):
        for token in entry["tokens"]:
            if token["special"] or token["text"] == reference.unk_token:
                continue
            # Each token's offsets point at the characters it came from, as sent.
            assert normalize(text[token["start"] : token["end"]]).strip() == token["text"].removeprefix("##"), (text, token)  # (CJK gets spaces)


def test_decode_is_the_tokenizers_decode(client, reference):
    for text in DEMO[:20] + ["Emoji: 🙂 and café"]:
        ids = reference(text)["input_ids"]
        r = client.post("/decode", json={"ids": ids})
        assert r.status_code == 200 and r.get_json()["text"] == reference.decode(ids, skip_special_tokens=True)
    kept = client.post("/decode", json={"ids": [101, 7592, 102], "skip_special_tokens": False}).get_json()["text"]
    assert kept == "[CLS] hello [SEP]"
    # 7592.0 is JSON's (and JSON Schema's) 7592
    assert client.post("/decode", json={"ids": [101.0, 7592.0, 102]}).get_json()["text"] == "hello"


def test_options(client):
    plain = tokenize(client, text="Hello world!", add_special_tokens=False, return_tokens=False)
    assert plain["texts"] == [{"count": 3, "truncated": False, "ids": [7592, 2088, 999]}]
    assert plain["model"] == "all-MiniLM-L6-v2" and plain["max_seq_length"] == 256


@pytest.mark.parametrize(
    ("path", "body", "status", "code", "fragment"),
    [
        ("/decode", {"ids": [101, "7592"]}, 400, "invalid_token_ids", "ids item 1 is a string"),
        ("/decode", {"ids": [101, 2.5]}, 400, "invalid_token_ids", "ids item 1 is a number"),
        ("/decode", {"ids": [101, -3]}, 400, "invalid_token_ids", "ids item 1 is -3, outside this model's vocabulary (0 to 30521)"),
        ("/decode", {"ids": [101, 30522]}, 400, "invalid_token_ids", "ids item 1 is 30522"),
        ("/decode", {"ids": [True]}, 400, "invalid_token_ids", "ids item 0 is"),
        ("/decode", {"ids": "101"}, 400, "invalid_token_ids", "'ids' is a string"),
        ("/decode", {}, 400, "invalid_token_ids", "'ids' is missing"),
        ("/tokenize", {"text": ["a"] * 9}, 413, "too_many_messages", "9 texts in text"),
        ("/tokenize", {}, 400, "missing_message", "'text' is missing"),
        ("/tokenize", {"text": "x", "add_special_tokens": "maybe"}, 400, "invalid_option", "add_special_tokens"),
        ("/tokenize", {"text": "x", "return_token": False}, 400, "unknown_field", "return_tokens"),
        ("/tokenize", {"text": "x", "model": "nope"}, 404, "model_not_found", "nope"),
        ("/tokenize", {"text": ["ok", ""]}, 400, "invalid_message", "text item 1 is an empty string"),
    ],
)
def test_bad_input_is_a_clear_error(client, path, body, status, code, fragment):
    error = assert_error(client.post(path, json=body), status, code)
    assert fragment in error["message"]


def test_a_lone_surrogate_or_a_body_over_the_limit(client, settings):
    error = assert_error(client.post("/tokenize", data=b'{"text": ["ok", "\\ud800"]}', content_type="application/json"), 400, "invalid_text")
    assert error["message"].startswith("text item 1 is not valid Unicode text")
    assert_error(client.post("/tokenize", json={"text": "x" * settings.max_body_bytes}), 413, "body_too_large")
