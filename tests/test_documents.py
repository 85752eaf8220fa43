"""Loading, validating and joining documents: pure functions on small files written by each test."""

from __future__ import annotations

import json

import pytest

from smls import documents, spill
from smls.errors import DocumentNotFound, InvalidDocId, InvalidDocument
from tests.helpers import HOSTILE_IDS, P1, P3, PAGES, TEXTS, write


@pytest.fixture(autouse=True, params=["whole", "streamed"])
def reading(request, monkeypatch):
    """Every test here runs twice: texts files read whole, and read as a stream (smls.spill), as files over 32 MiB are."""
    if request.param == "streamed":
        monkeypatch.setattr(spill, "STREAM_ABOVE", 0)
    return request.param




def test_join_keeps_every_field_and_resolves_pages(tmp_path):
    doc = documents.load_document(write(tmp_path), "doc")
    assert doc.doc_id == "doc"
    out = [documents.sentence_json(i, s) for i, s in enumerate(doc.sentences)]
    assert out[0] == {
        "index": 0,
        "text": "The first sentence.",
        "metadata": {"speaker": "narrator", "score": 0.5},
        "pages": [{"id": P1, "number": 1, "metadata": {"chapter": "One", "heading": "Beginnings"}}],
    }
    assert [p["number"] for p in out[1]["pages"]] == [1, 2]
    assert out[1]["pages"][1]["metadata"] == {"chapter": "One", "heading": "Middle, with comma"}
    assert out[1]["metadata"] == {"tags": ["a", "b"]}
    assert out[2]["pages"] == [] and out[2]["metadata"] == {}
    assert out[3]["text"] == "Ünïcode survives, \"quotes\" too." and out[3]["metadata"] == {"nested": {"k": [1, 2]}}


def test_missing_pages_key_means_no_pages_and_bom_is_accepted(tmp_path):
    write(tmp_path, texts=b"\xef\xbb\xbf" + json.dumps([{"text": "no pages key"}]).encode(), pages=b"\xef\xbb\xbf" + PAGES.encode())
    assert documents.load_document(tmp_path, "doc").sentences[0].pages == ()


def test_digest_changes_with_either_file(tmp_path):
    first = documents.load_document(write(tmp_path), "doc").digest
    write(tmp_path, pages=PAGES.replace("Beginnings", "Openings"))
    second = documents.load_document(tmp_path, "doc").digest
    write(tmp_path, texts=TEXTS[:3], pages=PAGES.replace("Beginnings", "Openings"))
    third = documents.load_document(tmp_path, "doc").digest
    assert len({first, second, third}) == 3


def test_file_digest_is_the_documents_digest_read_a_block_at_a_time(tmp_path):
    many = [{"text": "x" * 5000 + str(i), "pages": [P1]} for i in range(400)]  # 2 MB: two blocks and more
    write(tmp_path, texts=many)
    doc = documents.load_document(tmp_path, "doc")
    assert documents.file_digest(tmp_path, "doc") == doc.digest
    assert doc.digest == documents.digest((tmp_path / "texts_doc.json").read_bytes(), (tmp_path / "pages_doc.csv").read_bytes())
    write(tmp_path, texts=many[:399])  # changed: the memo (by size and time) does not answer for it
    assert documents.file_digest(tmp_path, "doc") == documents.load_document(tmp_path, "doc").digest != doc.digest


BAD = [
    # (what, texts, pages, fragment of the message)
    ("texts not JSON", '[{"text": "a", ', PAGES, "texts_doc.json is not valid JSON"),
    ("texts not a list", '{"text": "a"}', PAGES, "texts_doc.json must hold a JSON list"),
    ("item not an object", '["just a string"]', PAGES, "texts_doc.json item 0: a sentence must be an object"),
    ("text missing", [{"pages": [P1]}], PAGES, "texts_doc.json item 0: \"text\" is missing"),
    ("text not a string", [{"text": "ok", "pages": []}, {"text": 5, "pages": []}], PAGES, "item 1: \"text\" must be a string with some text"),
    ("text empty", [{"text": "", "pages": []}], PAGES, "item 0: \"text\" must be a string with some text"),
    ("text blank", [{"text": " \n ", "pages": []}], PAGES, "item 0: \"text\" must be a string with some text"),
    ("pages not a list", [{"text": "a", "pages": P1}], PAGES, "item 0: \"pages\" must be a list"),
    ("page id not a string", [{"text": "a", "pages": [1]}], PAGES, "item 0: \"pages\" must be a list of page id strings"),
    ("unknown page id", [{"text": "a", "pages": [P1]}, {"text": "b", "pages": ["nope"]}], PAGES, "item 1: page id 'nope' is not in the pages file"),
    ("texts not UTF-8", b'[{"text": "caf\xe9", "pages": []}]', PAGES, "texts_doc.json is not UTF-8"),
    ("pages not UTF-8", TEXTS, PAGES.encode() + b"x,9,\xff\xfe,y\n", "pages_doc.csv is not UTF-8: invalid byte at offset"),
    ("pages empty", TEXTS, "", "pages_doc.csv is empty"),
    ("header one column", TEXTS, "page_id\n", "pages_doc.csv line 1: the header has 1 column"),
    ("page number not int", TEXTS, PAGES + "p4,four,Two,x\n", "pages_doc.csv line 5: page number 'four' is not an integer"),
    ("duplicate page number", TEXTS, PAGES + "p4,2,Two,x\n", "pages_doc.csv line 5: page number 2 repeats line 3"),
    ("duplicate page id", TEXTS, PAGES + f"{P1},9,Two,x\n", f"pages_doc.csv line 5: page id '{P1}' repeats line 2"),
    ("empty page id", TEXTS, PAGES + " ,9,Two,x\n", "pages_doc.csv line 5: the page id (column 1) is empty"),
    ("ragged row", TEXTS, PAGES + "p4,4,Two\n", "pages_doc.csv line 5: 3 columns, but the header has 4"),
    ("bad CSV quoting", TEXTS, PAGES + 'p4,4,"Two"x,y\n', "pages_doc.csv is not valid CSV"),
]


@pytest.mark.parametrize(("texts", "pages", "fragment"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_invalid_documents_name_the_file_and_the_item(tmp_path, texts, pages, fragment):
    write(tmp_path, texts=texts, pages=pages)
    with pytest.raises(InvalidDocument) as info:
        documents.load_document(tmp_path, "doc")
    assert fragment in info.value.message
    assert info.value.status == 422


def test_missing_document_or_half_of_one(tmp_path):
    with pytest.raises(DocumentNotFound):
        documents.load_document(tmp_path, "absent")
    write(tmp_path)
    (tmp_path / "pages_doc.csv").unlink()
    with pytest.raises(DocumentNotFound, match="pages_doc.csv is missing"):
        documents.load_document(tmp_path, "doc")





@pytest.mark.parametrize("doc_id", HOSTILE_IDS)
def test_hostile_ids_are_refused_before_touching_the_disk(tmp_path, doc_id):
    write(tmp_path)
    with pytest.raises(InvalidDocId):
        documents.document_paths(tmp_path, doc_id)


def test_symlink_leading_out_of_the_data_folder_is_not_followed(tmp_path):
    outside = write(tmp_path / "outside", "secret")
    data = tmp_path / "data"
    data.mkdir()
    (data / "texts_leak.json").symlink_to(outside / "texts_secret.json")
    (data / "pages_leak.csv").symlink_to(outside / "pages_secret.csv")
    with pytest.raises(DocumentNotFound):
        documents.load_document(data, "leak")


def test_list_and_count(tmp_path):
    write(tmp_path, "alpha")
    write(tmp_path, "beta", texts=TEXTS[:2])
    (tmp_path / "texts_orphan.json").write_text("[]")  # no pages file: not a document
    (tmp_path / "texts_bad id.json").write_text("[]")
    (tmp_path / "pages_bad id.csv").write_text(PAGES)
    assert documents.list_documents(tmp_path) == ["alpha", "beta"]
    assert documents.count_sentences(tmp_path, "alpha") == 4
    assert documents.count_sentences(tmp_path, "beta") == 2
    write(tmp_path, "beta", texts=TEXTS[:3])
    assert documents.count_sentences(tmp_path, "beta") == 3


def test_a_streamed_document_equals_the_same_document_read_whole(tmp_path, monkeypatch):
    many = [{"text": f"sentence {i} with ünïcode", "pages": [P1, P3][: i % 3], "n": i, "f": i / 7} for i in range(1000)]
    write(tmp_path, texts=b"\xef\xbb\xbf" + json.dumps(many, ensure_ascii=False).encode() + b"\n  ")
    monkeypatch.setattr(spill, "STREAM_ABOVE", 10**12)
    whole = documents.load_document(tmp_path, "doc")
    monkeypatch.setattr(spill, "STREAM_ABOVE", 0)
    streamed = documents.load_document(tmp_path, "doc")
    assert isinstance(streamed.sentences, spill.SpilledSentences) and isinstance(whole.sentences, list)
    assert streamed.digest == whole.digest
    assert len(streamed.sentences) == 1000 and list(streamed.sentences) == whole.sentences
    assert streamed.sentences[300:310] == whole.sentences[300:310] and streamed.sentences[-1] == whole.sentences[-1]
    assert documents.count_sentences(tmp_path, "doc") == 1000
    with pytest.raises(IndexError):
        streamed.sentences[1000]
