"""The message parser: every accepted form of `message`, and every way it can be wrong."""

from __future__ import annotations

import pytest

from smls import parsing
from smls.errors import InvalidEncoding, InvalidInput, InvalidOption, MissingMessage, TooManyMessages


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
        ('["a", null]', "item 1 is a null"),
        ('["a", true]', "item 1 is a boolean"),
        ("['a', ['nested']]", "item 1 is a list"),
        ('[["nested"]]', "item 0 is a list"),
        ("['a', b'bytes']", "item 1 is a bytes"),
        ("['a', __import__('os').system('echo pwned')]", "item 1 is an expression"),
        ("['a', f'{x}']", "item 1 is an expression"),
        ("['unclosed', ]]", "neither a JSON array nor a Python list"),
        ("[" * 500 + "]" * 500, "item 0 is a list"),
        ("[" * 100_000 + "]" * 100_000, "neither a JSON array nor a Python list"),
        ("['a', '']", "item 1 is an empty string"),
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
    with pytest.raises(TooManyMessages, match="11 messages.*limit is 10"):
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
        ([], InvalidInput, "JSON body is a list"),
        ("text", InvalidInput, "JSON body is a str"),
        ({}, MissingMessage, "no 'message'"),
        ({"mesage": "typo"}, InvalidInput, "unknown field"),
        ({"message": 3}, InvalidInput, "'message' is a number"),
        ({"message": {"a": 1}}, InvalidInput, "'message' is a object"),
        ({"message": []}, InvalidInput, "empty list"),
        ({"message": ["a", ["b"]]}, InvalidInput, "item 1 is a list"),
        ({"message": [1]}, InvalidInput, "item 0 is a number"),
    ],
)
def test_bad_json_bodies(doc, error, fragment):
    with pytest.raises(error, match=fragment):
        parsing.messages_from_json(doc, max_messages=10)


def test_json_body_decoding():
    assert parsing.parse_json_body('{"message": "é"}'.encode()) == {"message": "é"}
    with pytest.raises(InvalidEncoding):
        parsing.parse_json_body(b'{"message": "\xff"}')
    with pytest.raises(InvalidInput, match="not valid JSON") as info:
        parsing.parse_json_body(b'{"message": ')
    assert info.value.code == "invalid_json"


def test_urlencoded_is_strict_utf8():
    assert parsing.parse_urlencoded("message=caf%C3%A9&x=ü".encode(), 10) == [("message", "café"), ("x", "ü")]
    with pytest.raises(InvalidEncoding):
        parsing.parse_urlencoded(b"message=%FF", 10)
    with pytest.raises(InvalidEncoding):
        parsing.parse_urlencoded(b"message=\xff", 10)
    with pytest.raises(TooManyMessages):
        parsing.parse_urlencoded(b"&".join([b"message=a"] * 11), 10)


@pytest.mark.parametrize(("value", "expected"), [(True, True), ("1", True), ("TRUE", True), ("on", True), (False, False), ("0", False), ("no", False)])
def test_parse_bool(value, expected):
    assert parsing.parse_bool("normalize", value) is expected


@pytest.mark.parametrize("value", ["maybe", 2, None, [True], ""])
def test_parse_bool_rejects(value):
    with pytest.raises(InvalidOption, match="normalize"):
        parsing.parse_bool("normalize", value)
