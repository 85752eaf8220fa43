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
from typing import Any, Iterable, Mapping
from urllib.parse import parse_qsl

import orjson

from smls.errors import (
    InvalidEncoding,
    InvalidInput,
    InvalidOption,
    MissingMessage,
    TooManyMessages,
)

JSON_BODY_KEYS = frozenset({"message", "normalize", "dimensions", "precision", "encoding"})
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def type_name(value: Any) -> str:
    """A client-facing name for the type of a parsed value."""
    if isinstance(value, bool) or value is None:
        return "null" if value is None else "boolean"
    if isinstance(value, (int, float, complex)):
        return "number"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, bytes):
        return "bytes"
    return type(value).__name__


def check_messages(items: Iterable[Any], max_messages: int) -> list[str]:
    """Check that items is a non-empty list of non-empty strings no longer than max_messages."""
    texts = list(items)
    if not texts:
        raise InvalidInput("message is an empty list; send at least one text")
    if len(texts) > max_messages:
        raise TooManyMessages(f"{len(texts)} messages in one request; the limit is {max_messages} (SMLS_MAX_MESSAGES)")
    for i, item in enumerate(texts):
        if not isinstance(item, str):
            raise InvalidInput(f"message item {i} is a {type_name(item)}; every item must be a string")
        if item == "":
            raise InvalidInput(f"message item {i} is an empty string; every item must have some text")
    return texts


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
        detail = exc.msg if isinstance(exc, SyntaxError) else type(exc).__name__
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
        if isinstance(elt, ast.Constant):
            items.append(elt.value)
        elif isinstance(elt, (ast.List, ast.Tuple)):
            raise InvalidInput(f"message item {i} is a list; nested lists are not allowed, every item must be a string")
        else:
            raise InvalidInput(
                f"message item {i} is an expression ({type(elt).__name__}); every item must be a string literal"
            )
    return items


def messages_from_form(values: list[str], max_messages: int) -> list[str]:
    """Texts from the `message` form field(s): one value is parsed, repeated values are one text each."""
    if not values:
        raise MissingMessage("no 'message' field in the form; send message=... (a text or a list of texts)")
    items = parse_message_value(values[0]) if len(values) == 1 else values
    return check_messages(items, max_messages)


def parse_urlencoded(body: bytes, max_fields: int) -> list[tuple[str, str]]:
    """Decode an application/x-www-form-urlencoded body strictly as UTF-8."""
    try:
        text = body.decode("utf-8")
        return parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="strict", max_num_fields=max_fields)
    except UnicodeDecodeError as exc:
        raise InvalidEncoding(f"the form body is not valid UTF-8 (byte {exc.start})") from None
    except ValueError:
        raise TooManyMessages(f"more than {max_fields} form fields in one request") from None


def parse_json_body(body: bytes) -> Any:
    """Decode a JSON body, telling bad UTF-8 apart from bad JSON."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEncoding(f"the JSON body is not valid UTF-8 (byte {exc.start})") from None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the body is not valid JSON: {exc}", code="invalid_json") from None


def messages_from_json(doc: Any, max_messages: int) -> list[str]:
    """Texts from a JSON body {"message": "text" | ["text", ...]}."""
    if not isinstance(doc, dict):
        raise InvalidInput(f"the JSON body is a {type_name(doc)}; send an object like {{\"message\": [\"text\"]}}", code="invalid_json")
    unknown = sorted(set(doc) - JSON_BODY_KEYS)
    if unknown:
        raise InvalidInput(
            f"unknown field(s) {', '.join(map(repr, unknown))} in the JSON body; known: {', '.join(sorted(JSON_BODY_KEYS))}",
            code="unknown_field",
        )
    if "message" not in doc:
        raise MissingMessage("no 'message' field in the JSON body; send {\"message\": \"text\"} or {\"message\": [\"text\", ...]}")
    message = doc["message"]
    items = [message] if isinstance(message, str) else message
    if not isinstance(items, list):
        raise InvalidInput(f"'message' is a {type_name(message)}; it must be a string or a list of strings")
    return check_messages(items, max_messages)


def parse_bool(name: str, value: Any) -> bool:
    """A boolean option from JSON (true/false) or a form/query string (1/0, true/false, yes/no, on/off)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise InvalidOption(f"option {name!r} must be true or false, got {value!r}")


def option(sources: Iterable[Mapping[str, Any]], name: str, default: Any) -> Any:
    """The first value of option `name` found in sources (e.g. JSON body, form, query string)."""
    for source in sources:
        if name in source:
            return source[name]
    return default
