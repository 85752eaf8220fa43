"""A document upload's two files, from a multipart form or a JSON body. Pure functions, no web imports.

Whatever the shape, the result is the two files' bytes as they would lie in the data
folder, so an upload is validated by the very parser that reads files (smls.documents),
with the same messages.
"""

from __future__ import annotations

import csv
import io
from typing import Any

import orjson

from smls import fields
from smls.errors import InvalidInput
from smls.forms import Part
from smls.parsing import type_name

PARTS = ("texts", "pages")
EXAMPLE = '{"texts": [{"text": "...", "pages": ["p1"]}], "pages": [{"id": "p1", "page_number": 1}]}'


def from_parts(parts: list[Part]) -> tuple[bytes, bytes]:
    """(texts, pages) from multipart parts named texts (the texts JSON file) and pages (the pages CSV file)."""
    fields.check_names("form", [(p.name, p) for p in parts], PARTS)
    found: dict[str, bytes] = {}
    for part in parts:
        if part.name in found:
            raise InvalidInput(f"the form has more than one {part.name!r} part; send each file once", code="invalid_upload")
        found[part.name] = part.data
    missing = [name for name in PARTS if name not in found]
    if missing:
        raise InvalidInput(
            f"the form has no {' or '.join(repr(m) for m in missing)} part; send -F texts=@texts.json -F pages=@pages.csv",
            code="invalid_upload",
        )
    return found["texts"], found["pages"]


def from_json(doc: dict[str, Any]) -> tuple[bytes, bytes]:
    """(texts, pages) from {"texts": [...], "pages": [{"id", "page_number", ...metadata}]}; the pages become CSV."""
    fields.check_names("JSON body", list(doc.items()), PARTS)
    for name in PARTS:
        if name not in doc:
            raise InvalidInput(f"{name!r} is missing from the JSON body; send {EXAMPLE}", code="invalid_upload")
    pages = doc["pages"]
    if not isinstance(pages, list):
        raise InvalidInput(f"'pages' is {type_name(pages)}; it must be a list of objects like {{\"id\": \"p1\", \"page_number\": 1}}", code="invalid_upload")
    return orjson.dumps(doc["texts"]), pages_csv(pages)


def pages_csv(pages: list[Any]) -> bytes:
    """The CSV file that says what a JSON list of page objects says: id, page_number, then each metadata name in order of first use."""
    names: dict[str, None] = {}
    for i, page in enumerate(pages):
        if not isinstance(page, dict):
            raise InvalidInput(f"pages item {i} is {type_name(page)}; a page is an object like {{\"id\": \"p1\", \"page_number\": 1}}", code="invalid_upload")
        if not isinstance(page.get("id"), str):
            raise InvalidInput(f"pages item {i}: \"id\" must be a string, got {fields.show(page.get('id'))}", code="invalid_upload")
        number = page.get("page_number")
        if not isinstance(number, int) or isinstance(number, bool):
            raise InvalidInput(f"pages item {i}: \"page_number\" must be an integer, got {fields.show(number)}", code="invalid_upload")
        for name, value in page.items():
            if name in ("id", "page_number"):
                continue
            if isinstance(value, bool) or (value is not None and not isinstance(value, (str, int, float))):
                raise InvalidInput(f"pages item {i}: {name!r} must be a string or a number (page metadata is text), got {type_name(value)}", code="invalid_upload")
            names.setdefault(name, None)
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["id", "page_number", *names])
    for page in pages:
        writer.writerow([page["id"], page["page_number"], *(_cell(page.get(name)) for name in names)])
    return out.getvalue().encode()


def _cell(value: Any) -> str:
    """A metadata value as the CSV file would hold it: text as is, a number as JSON writes it, nothing as empty."""
    if value is None:
        return ""
    return value if isinstance(value, str) else orjson.dumps(value).decode()
