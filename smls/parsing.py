"""Turn what a client sent into a validated list of texts. Pure functions, no web imports.

Accepted shapes of the `message` field (see README.org):
  * a JSON array of strings                 message=["Hello", "World"]
  * a Python-style list or tuple literal    message=['Hello', "it's"]   (ast, never eval)
  * a plain string, one message             message=Hello world
  * repeated fields, one message each       message=Hello&message=World
  * a JSON body                             {"message": "text" | ["text", ...]}
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterable
from typing import Any

import orjson

from smls.errors import InvalidEncoding, InvalidInput, InvalidOption, InvalidText, MissingMessage, TooManyMessages
from smls.fields import show, word_bool
from smls.forms import Part

# A lone surrogate (U+D800..U+DFFF) is not a character: no tokenizer can encode it.
_SURROGATE = re.compile("[\ud800-\udfff]")


def type_name(value: Any) -> str:
    """A client-facing name for the kind of a parsed JSON value, with its article ("a string", "null")."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "a value of another kind"


def check_messages(items: Iterable[Any], max_messages: int, field: str = "message") -> list[str]:
    """Check that items is a non-empty list of texts (not blank, valid Unicode), at most max_messages of them.

    `field` is the name the client used (message, input, documents), so errors speak its words.
    """
    texts = list(items)
    if not texts:
        raise InvalidInput(f"{field} is an empty list; send at least one text")
    if len(texts) > max_messages:
        raise TooManyMessages(f"{len(texts)} texts in {field}; the limit is {max_messages} per request (SMLS_MAX_MESSAGES)")
    for i, item in enumerate(texts):
        if not isinstance(item, str):
            raise InvalidInput(f"{field} item {i} is {type_name(item)}; every item must be a string")
        if not item.strip():
            what = "an empty string" if item == "" else "only whitespace"
            raise InvalidInput(f"{field} item {i} is {what}; every item must have some text")
        check_unicode(item, f"{field} item {i}")
    return texts


def check_unicode(text: str, what: str) -> None:
    """InvalidText naming `what` if `text` holds a lone surrogate: the one rule for every text a client sends."""
    bad = _SURROGATE.search(text)
    if bad:
        raise InvalidText(
            f"{what} is not valid Unicode text: it holds a lone surrogate (U+{ord(bad.group()):04X}) "
            f"at character {bad.start()}; send the text itself, encoded as UTF-8"
        )


def _check_json_strings(value: Any, path: tuple[str | int, ...]) -> None:
    """check_unicode on every string of a parsed JSON document, keys included, naming where it stands."""
    if isinstance(value, str):
        check_unicode(value, _where(path))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_json_strings(item, (*path, i))
    elif isinstance(value, dict):
        for key, item in value.items():
            check_unicode(key, f"a field name in {_where(path)}" if path else "a field name")
            _check_json_strings(item, (*path, key))


def _where(path: tuple[str | int, ...]) -> str:
    """A place in a JSON body in the client's words: message item 2; texts item 0, field 'text'; the JSON body."""
    if not path:
        return "the JSON body"
    words = [f"{path[0]}" if isinstance(path[0], str) else f"item {path[0]}"]
    words += [f" item {p}" if isinstance(p, int) else f", field {p!r}" for p in path[1:]]
    return "".join(words)


def parse_message_value(value: str) -> list[Any]:
    """Parse one form value: a JSON array, a Python list/tuple literal of strings, or one plain string."""
    text = value.strip()
    if text.startswith("[") and text.endswith("]"):
        try:
            parsed = orjson.loads(text)
        except orjson.JSONDecodeError:
            return _python_literal(text, required=True)
        return list(parsed) if isinstance(parsed, list) else [parsed]
    if text.startswith("(") and text.endswith(")"):
        # Parenthesised prose such as "(see page 2)" is a plain message; only a real tuple is a list.
        try:
            return _python_literal(text, required=False)
        except _NotALiteral:
            pass
    return [value]


class _NotALiteral(Exception):
    """The value is not a tuple literal, so it is one plain message."""


def _python_literal(text: str, *, required: bool) -> list[Any]:
    """Read a list/tuple literal of string constants with ast (never eval); report the first bad item."""
    try:
        node = ast.parse(text, mode="eval").body
    except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:
        if not required:
            raise _NotALiteral from None
        # Python's own wording ("invalid syntax", "source code string ...") means nothing to a curl user.
        if "\x00" in text:
            detail = "it holds a NUL character"
        elif isinstance(exc, (MemoryError, RecursionError)) or "too many nested" in str(exc):
            detail = "it is nested too deeply"
        else:
            detail = "check its quotes, commas and brackets"
        raise InvalidInput(
            "message starts with '[' and ends with ']' but is neither a JSON array nor a Python list "
            f"literal ({detail}); send a JSON body to embed such a text as is"
        ) from None
    if not isinstance(node, (ast.List, ast.Tuple)):
        if not required:
            raise _NotALiteral
        raise InvalidInput("message is not a list literal")  # unreachable for '[...]', kept for safety
    items: list[Any] = []
    for i, elt in enumerate(node.elts):
        if isinstance(elt, ast.Constant) and isinstance(elt.value, str):
            items.append(elt.value)
        else:
            raise InvalidInput(f"message item {i} is {_literal_kind(elt)}; every item must be a quoted string")
    return items


def _literal_kind(node: ast.expr) -> str:
    """What a non-string item of a Python-style list is, in words a client knows."""
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool) or value is None:
            return f"{value} (not in quotes)"
        if isinstance(value, (int, float, complex)):
            return "a number"
        if isinstance(value, bytes):
            return "a bytes literal (b'...')"
        return "'...' (not in quotes)"
    if isinstance(node, (ast.List, ast.Tuple)):
        return "a nested list"
    if isinstance(node, ast.JoinedStr):
        return "an f-string"
    if isinstance(node, ast.Name):
        return f"the bare word {node.id} (not in quotes)"
    return "not a quoted string (an expression)"


def messages_from_form(values: list[str], max_messages: int) -> list[str]:
    """Texts from the `message` form field(s): one value is parsed, repeated values are one text each."""
    if not values:
        raise MissingMessage("no 'message' field in the form; send message=... (a text or a list of texts)")
    items = parse_message_value(values[0]) if len(values) == 1 else values
    return check_messages(items, max_messages)


def parse_json_body(body: bytes) -> Any:
    """Decode a JSON body, telling bad UTF-8 apart from bad JSON."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEncoding(f"the JSON body is not valid UTF-8 (byte {exc.start})") from None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if "surrogate" in str(exc):
            # JSON's \ud800 escapes may spell a lone surrogate, which orjson refuses outright;
            # the standard library reads it, so that the error can name where it stands. Every
            # route that takes JSON comes through here: none sees such a string (orjson's
            # refusal means the common path needs no walk).
            try:
                doc = json.loads(body)
            except (ValueError, RecursionError):
                pass
            else:
                _check_json_strings(doc, ())
                return doc
        raise InvalidInput(f"the body is not valid JSON: {exc}", code="invalid_json") from None


def json_object(doc: Any, example: str) -> dict[str, Any]:
    """The JSON body as an object, or InvalidInput showing the shape it should have."""
    if not isinstance(doc, dict):
        raise InvalidInput(f"the JSON body is {type_name(doc)}; send an object like {example}", code="invalid_json")
    return doc


def messages_from_json(doc: dict[str, Any], max_messages: int, field: str = "message") -> list[str]:
    """Texts from the `field` of a JSON body object: a string or a list of strings."""
    raw = doc.get(field)
    if raw is None:
        given = "is null" if field in doc else "is missing"
        raise MissingMessage(f"{field!r} {given} in the JSON body; send {{\"{field}\": \"text\"}} or {{\"{field}\": [\"text\", ...]}}")
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list):
        raise InvalidInput(f"{field!r} is {type_name(raw)}; it must be a string or a list of strings")
    return check_messages(items, max_messages, field)


def messages_from_parts(parts: list[Part], max_messages: int) -> list[str]:
    """Texts from the `message` parts of a multipart form: fields as in a urlencoded form, a file one text per line."""
    sent = [p for p in parts if p.name == "message"]
    if not sent:
        raise MissingMessage("no 'message' field in the form; send message=... (a text or a list of texts), or message=@file.txt (one text per line)")
    if len(sent) == 1 and sent[0].filename is None:
        return messages_from_form([sent[0].text()], max_messages)
    texts: list[str] = []
    for part in sent:
        if part.filename is None:
            texts.append(part.text())  # repeated fields: one text each, verbatim
        else:
            # curl -F message=@file.txt: a text file, one message per line; blank lines are skipped.
            lines = [line for line in part.text().splitlines() if line.strip()]
            if not lines:
                raise InvalidInput(f"the file {part.filename!r} sent as 'message' holds no text; it should hold one text per line")
            texts.extend(lines)
    return check_messages(texts, max_messages)


def parse_bool(name: str, value: Any) -> bool:
    """A boolean option from JSON (true/false) or a form/query string (1/0, true/false, yes/no, on/off)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and (flag := word_bool(value)) is not None:
        return flag
    raise InvalidOption(f"option {name!r} must be true or false, got {show(value)}")
