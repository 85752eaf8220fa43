"""The message parser: every accepted form of `message`, and every way it can be wrong."""

from __future__ import annotations

import re

import pytest

from smls import forms, parsing
from smls.errors import InvalidEncoding, InvalidInput, InvalidOption, InvalidText, MissingMessage, TooManyMessages


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("['Hello world!', 'How are you today?']", ["Hello world!", "How are you today?"]),
        ('["Hello world!", "How are you today?"]', ["Hello world!", "How are you today?"]),
        ("  ['padded']  ", ["padded"]),
        ("('a tuple', 'of two')", ["a tuple", "of two"]),
        ("('one',)", ["one"]),
        ("Hello world!", ["Hello world!"]),
        ("  keeps its spaces ", ["  keeps its spaces "]),
        ("[citation needed] is plain text", ["[citation needed] is plain text"]),
        ("(see page 2)", ["(see page 2)"]),
        ("('just parenthesised')", ["('just parenthesised')"]),
        ("""["it's", 'say "hi"', "back\\\\slash"]""", ["it's", 'say "hi"', "back\\slash"]),
        ("""['it\\'s', "tab\\there"]""", ["it's", "tab\there"]),
        ('["caf\\u00e9", "naïve", "日本語", "emoji 🎉"]', ["café", "naïve", "日本語", "emoji 🎉"]),
        ("['naïve', '日本語', '🎉']", ["naïve", "日本語", "🎉"]),
        ("['implicit' ' concatenation']", ["implicit concatenation"]),
        ("{\"message\": 1}", ["{\"message\": 1}"]),
    ],
)
def test_accepted_message_values(value, expected):
    assert parsing.messages_from_form([value], max_messages=10) == expected


def test_repeated_fields_are_one_message_each_verbatim():
    values = ["first", "['not parsed']", "third"]
    assert parsing.messages_from_form(values, max_messages=10) == values


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("[]", "empty list"),
        ("['a', 1]", "item 1 is a number"),
        ('["a", null]', "item 1 is null"),
        ("['a', None]", "item 1 is None \\(not in quotes\\)"),
        ("['a', True]", "item 1 is True \\(not in quotes\\)"),
        ("['a', ...]", "item 1 is '...' \\(not in quotes\\)"),
        ("['a', word]", "item 1 is the bare word word \\(not in quotes\\)"),
        ('["a", true]', "item 1 is a boolean"),
        ("['a', ['nested']]", "item 1 is a nested list"),
        ('[["nested"]]', "item 0 is an array"),
        ("['a', b'bytes']", "item 1 is a bytes"),
        ("['a', __import__('os').system('echo pwned')]", "item 1 is not a quoted string \\(an expression\\)"),
        ("['a', f'{x}']", "item 1 is an f-string"),
        ("['unclosed', ]]", "neither a JSON array nor a Python list"),
        ("[" * 500 + "]" * 500, "item 0 is an array"),
        ("[" * 100_000 + "]" * 100_000, "neither a JSON array nor a Python list"),
        ("['a', '']", "item 1 is an empty string"),
        ("['a', '  ']", "item 1 is only whitespace"),
        ("['a', '\\ud800']", "item 1 is not valid Unicode text: it holds a lone surrogate \\(U\\+D800\\) at character 0"),
        ('["ok", "\\ud800"]', "item 1 is not valid Unicode text"),
        ("  ", "item 0 is only whitespace"),
        ("['a\x00b']", "neither a JSON array nor a Python list literal \\(it holds a NUL character\\)"),
        ("('a', 1)", "item 1 is a number"),
    ],
)
def test_rejected_message_values(value, fragment):
    with pytest.raises(InvalidInput, match=fragment) as info:
        parsing.messages_from_form([value], max_messages=10)
    assert info.value.status == 400


def test_no_message_field():
    with pytest.raises(MissingMessage):
        parsing.messages_from_form([], max_messages=10)


def test_too_many_messages():
    with pytest.raises(TooManyMessages, match="11 texts in message; the limit is 10"):
        parsing.messages_from_form([str(list(map(str, range(11))))], max_messages=10)


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"message": "one text"}, ["one text"]),
        ({"message": ["a", "b"]}, ["a", "b"]),
        ({"message": ["ünïcødé", "quote \" and ' both"]}, ["ünïcødé", "quote \" and ' both"]),
        ({"message": "['a literal stays a string in JSON']"}, ["['a literal stays a string in JSON']"]),
        ({"message": ["x"], "normalize": True}, ["x"]),
    ],
)
def test_json_bodies(doc, expected):
    assert parsing.messages_from_json(doc, max_messages=10) == expected


@pytest.mark.parametrize(
    ("doc", "error", "fragment"),
    [
        ({}, MissingMessage, "'message' is missing"),
        ({"message": None}, MissingMessage, "'message' is null"),
        ({"message": 3}, InvalidInput, "'message' is a number"),
        ({"message": {"a": 1}}, InvalidInput, "'message' is an object"),
        ({"message": []}, InvalidInput, "empty list"),
        ({"message": "   "}, InvalidInput, "item 0 is only whitespace"),
        ({"message": ["a", ["b"]]}, InvalidInput, "item 1 is an array"),
        ({"message": [1]}, InvalidInput, "item 0 is a number"),
        ({"message": [False]}, InvalidInput, "item 0 is a boolean"),
        ({"input": [None]}, InvalidInput, "input item 0 is null"),
    ],
)
def test_bad_json_bodies(doc, error, fragment):
    field = "input" if "input" in doc else "message"
    with pytest.raises(error, match=fragment):
        parsing.messages_from_json(doc, max_messages=10, field=field)


@pytest.mark.parametrize(("doc", "fragment"), [([], "JSON body is an array"), ("text", "JSON body is a string"), (None, "JSON body is null")])
def test_a_json_body_must_be_an_object(doc, fragment):
    with pytest.raises(InvalidInput, match=fragment) as info:
        parsing.json_object(doc, "{}")
    assert info.value.code == "invalid_json"


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (b'{"message": ["fine", "bad \\ud800 here"]}', "message item 1"),
        (b'{"input": "\\udfff"}', "input"),
        (b'{"texts": [{"text": "ok"}, {"text": "x", "speaker": "\\ud800"}]}', "texts item 1, field 'speaker'"),
        (b'{"pages": [{"id": "p1", "\\ud800": 1}]}', "a field name in pages item 0"),
        (b'["ok", ["\\ud800"]]', "item 1 item 0"),
        (b'"\\ud800"', "the JSON body"),
    ],
)
def test_a_lone_surrogate_anywhere_in_a_json_body_is_invalid_text_naming_where(body, where):
    """Every route that takes JSON reads it through parse_json_body: the one place the rule is kept for them."""
    with pytest.raises(InvalidText, match=f"^{re.escape(where)} is not valid Unicode text.*U\\+D[89A-F][0-9A-F]{{2}}\\) at character"):
        parsing.parse_json_body(body)


def test_json_body_decoding():
    assert parsing.parse_json_body('{"message": "é"}'.encode()) == {"message": "é"}
    with pytest.raises(InvalidEncoding):
        parsing.parse_json_body(b'{"message": "\xff"}')
    with pytest.raises(InvalidInput, match="not valid JSON") as info:
        parsing.parse_json_body(b'{"message": ')
    assert info.value.code == "invalid_json"


def test_urlencoded_is_strict_utf8():
    assert forms.parse_urlencoded("message=caf%C3%A9&x=ü".encode(), 10) == [("message", "café"), ("x", "ü")]
    with pytest.raises(InvalidEncoding):
        forms.parse_urlencoded(b"message=%FF", 10)
    with pytest.raises(InvalidEncoding):
        forms.parse_urlencoded(b"message=\xff", 10)
    with pytest.raises(TooManyMessages):
        forms.parse_urlencoded(b"&".join([b"message=a"] * 11), 10)


def test_query_strings_are_strict_utf8():
    assert forms.parse_query("q=caf%C3%A9&k=2") == [("q", "café"), ("k", "2")]
    assert forms.parse_query("q=café".encode().decode("latin-1")) == [("q", "café")]  # raw bytes, as WSGI hands them over
    for bad in ("q=%ED%A0%80", "q=%FF", "q=\xff"):
        with pytest.raises(InvalidEncoding, match="query string"):
            forms.parse_query(bad)


@pytest.mark.parametrize(("value", "expected"), [(True, True), ("1", True), ("TRUE", True), ("on", True), (False, False), ("0", False), ("no", False)])
def test_parse_bool(value, expected):
    assert parsing.parse_bool("normalize", value) is expected


@pytest.mark.parametrize(("value", "shown"), [("maybe", '"maybe"'), (2, "2"), (None, "null"), ([True], "an array"), ("", '""'), ({}, "an object")])
def test_parse_bool_rejects_in_json_words(value, shown):
    with pytest.raises(InvalidOption) as info:
        parsing.parse_bool("normalize", value)
    assert info.value.message == f"option 'normalize' must be true or false, got {shown}"


def test_multipart_parts_are_read_strictly():
    body = (
        b'--B\r\nContent-Disposition: form-data; name="message"\r\n\r\ncaf\xc3\xa9\r\n'
        b'--B\r\nContent-Disposition: form-data; name="message"; filename="a.txt"\r\n\r\none\ntwo\n\r\n--B--\r\n'
    )
    parts = forms.parse_multipart(body, "B", 10)
    assert [(p.name, p.filename, p.text()) for p in parts] == [("message", None, "café"), ("message", "a.txt", "one\ntwo\n")]
    assert parsing.messages_from_parts(parts, 10) == ["café", "one", "two"]
    with pytest.raises(InvalidEncoding, match="form field 'message' is not valid UTF-8"):
        forms.parse_multipart(body.replace(b"caf\xc3\xa9", b"caf\xe9"), "B", 10)[0].text()
    with pytest.raises(InvalidInput, match="ends before its closing boundary") as cut:
        forms.parse_multipart(body[:-8], "B", 10)
    assert cut.value.code == "invalid_multipart"
    with pytest.raises(InvalidInput, match="no boundary"):
        forms.parse_multipart(body, "", 10)
    with pytest.raises(TooManyMessages):
        forms.parse_multipart(body, "B", 1)
    assert forms.parse_multipart(b'--B\r\nContent-Disposition: form-data\r\n\r\nx\r\n--B--\r\n', "B", 10)[0].name == ""


def test_a_message_file_is_one_text_per_line_and_a_field_beside_it_is_one_text():
    parts = [forms.Part("message", "t.txt", b"first\r\n\r\n  \r\nsecond"), forms.Part("message", None, b"['not', 'parsed']")]
    assert parsing.messages_from_parts(parts, 10) == ["first", "second", "['not', 'parsed']"]
    with pytest.raises(MissingMessage, match="message=@file.txt"):
        parsing.messages_from_parts([forms.Part("normalize", None, b"1")], 10)
