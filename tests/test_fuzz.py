"""Hostile input: property tests (hypothesis) of the parsers and document loaders, and schemathesis against the live API."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smls import documents, forms, parsing
from smls.errors import SmlsError

ROOT = Path(__file__).resolve().parent.parent
texts = st.text(min_size=1, max_size=40).filter(str.strip)  # blank texts are refused (tested elsewhere)
quick = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@quick
@given(st.text(max_size=200))
def test_any_form_value_is_messages_or_a_clear_error(value):
    try:
        result = parsing.messages_from_form([value], 64)
    except SmlsError as exc:
        assert exc.status in (400, 413) and exc.message
        return
    assert all(isinstance(t, str) and t for t in result)
    assert 1 <= len(result) <= 64


@quick
@given(st.lists(texts, min_size=1, max_size=20))
def test_a_json_array_or_python_list_literal_reads_back_exactly(items):
    assert parsing.messages_from_form([json.dumps(items)], 64) == items
    assert parsing.messages_from_form([repr(items)], 64) == items
    assert parsing.messages_from_form(items if len(items) > 1 else items * 2, 64) == (items if len(items) > 1 else items * 2)


@quick
@given(st.text(min_size=1, max_size=80).filter(lambda t: t.strip() and not t.strip().startswith(("[", "("))))
def test_plain_text_is_one_message_verbatim(text):
    assert parsing.messages_from_form([text], 64) == [text]


@quick
@given(st.binary(max_size=300))
def test_any_json_body_bytes_are_a_clear_error_not_a_crash(body):
    try:
        parsing.messages_from_json(parsing.json_object(parsing.parse_json_body(body), "{}"), 64)
    except SmlsError as exc:
        assert exc.status in (400, 413) and exc.message


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)


@quick
@given(json_values)
def test_any_json_message_value_is_messages_or_a_clear_error(value):
    """{"message": <any JSON value>}: either exactly the texts it holds, or a 4xx naming the problem."""
    body = json.dumps({"message": value}).encode()
    try:
        result = parsing.messages_from_json(parsing.json_object(parsing.parse_json_body(body), "{}"), 64)
    except SmlsError as exc:
        assert exc.status in (400, 413) and exc.message
        return
    assert result == ([value] if isinstance(value, str) else value)
    assert all(isinstance(t, str) and t.strip() for t in result)


@quick
@given(st.binary(max_size=300))
def test_any_urlencoded_bytes_are_fields_or_a_clear_error(body):
    try:
        fields = forms.parse_urlencoded(body, 32)
    except SmlsError as exc:
        assert exc.status in (400, 413)
        return
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in fields)


def test_deeply_nested_json_is_a_clear_error_not_a_crash():
    for depth in (1_000, 100_000):
        body = b'{"message": ' + b"[" * depth + b"]" * depth + b"}"
        with pytest.raises(SmlsError) as err:
            parsing.messages_from_json(parsing.parse_json_body(body), 64)
        assert err.value.status == 400


@quick
@given(st.binary(max_size=400))
def test_any_pages_file_is_pages_or_an_invalid_document_error(data):
    try:
        pages = documents.parse_pages(data, "pages_x.csv")
    except SmlsError as exc:
        assert exc.status == 422 and "pages_x.csv" in exc.message
        return
    assert all(isinstance(p.number, int) for p in pages.values())


@quick
@given(st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode())))
def test_any_texts_file_is_sentences_or_an_invalid_document_error(data):
    pages = documents.parse_pages(b"page_id,page_number\np1,1\np2,2\n", "pages_x.csv")
    try:
        sentences = documents.parse_texts(data, "texts_x.json", pages)
    except SmlsError as exc:
        assert exc.status == 422 and "texts_x.json" in exc.message
        return
    assert all(isinstance(s.text, str) and s.text for s in sentences)


@quick
@given(st.lists(st.tuples(texts, st.lists(st.sampled_from(["p1", "p2"]), max_size=2)), min_size=1, max_size=10))
def test_well_formed_documents_load_exactly(rows):
    out = io.StringIO()
    csv.writer(out).writerows([["page_id", "page_number", "note"], ["p1", "1", "x"], ["p2", "2", "y"]])
    pages = documents.parse_pages(out.getvalue().encode(), "pages_x.csv")
    body = json.dumps([{"text": t, "pages": p} for t, p in rows]).encode()
    sentences = documents.parse_texts(body, "texts_x.json", pages)
    assert [s.text for s in sentences] == [t for t, _ in rows]
    assert [[pg.number for pg in s.pages] for s in sentences] == [[int(x[1]) for x in p] for _, p in rows]


@quick
@given(st.text(max_size=120))
def test_no_document_id_escapes_the_data_folder(tmp_path_factory, doc_id):
    data = tmp_path_factory.getbasetemp() / "fuzz-data"
    data.mkdir(exist_ok=True)
    try:
        texts_path, pages_path = documents.document_paths(data, doc_id)
    except SmlsError as exc:
        assert exc.status in (400, 404)
        return
    assert texts_path.parent == data.resolve() and pages_path.parent == data.resolve()


@pytest.mark.live
def test_schemathesis_finds_nothing(live_server):
    """Every operation of /openapi.json, valid and invalid data: no 5xx, no response that breaks the description."""
    examples = os.environ.get("SMLS_FUZZ_EXAMPLES", "40")
    done = subprocess.run(
        # The schemathesis of the venv running the tests, whatever its folder.
        [str(Path(sys.executable).with_name("schemathesis")), "run", live_server.url + "/openapi.json", "--max-examples", examples,
         "--workers", "1", "--seed", os.environ.get("SMLS_FUZZ_SEED", "20261122"), "--no-color"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    summary = re.search(r"(\d+) generated, (.*)", done.stdout)
    assert done.returncode == 0, done.stdout[-6000:]
    assert summary and int(summary.group(1)) > 100, done.stdout[-2000:]
    print(f"schemathesis: {summary.group(0)}")
