"""Form bodies and query strings, decoded strictly as UTF-8. Pure functions, no web imports.

werkzeug decodes form fields and query strings leniently (a bad byte becomes U+FFFD), so
`caf\\xe9` in a multipart part or `?q=%ED%A0%80` would be embedded or searched as
something the client never sent. Here every one of them is refused with invalid_encoding,
as JSON and urlencoded bodies already were.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl

from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.sansio import multipart

from smls.errors import InvalidEncoding, InvalidInput, TooManyMessages


@dataclass(frozen=True)
class Part:
    """One part of a multipart form: its field name, the file name if it was sent as a file, its bytes."""

    name: str
    filename: str | None
    data: bytes

    def text(self) -> str:
        """The part's content as text; InvalidEncoding naming the field unless it is UTF-8."""
        try:
            return self.data.decode("utf-8")
        except UnicodeDecodeError as exc:
            what = f"file {self.filename!r} in field {self.name!r}" if self.filename is not None else f"form field {self.name!r}"
            raise InvalidEncoding(f"the {what} is not valid UTF-8 (byte {exc.start})") from None


def parse_urlencoded(body: bytes, max_fields: int) -> list[tuple[str, str]]:
    """Decode an application/x-www-form-urlencoded body strictly as UTF-8."""
    try:
        text = body.decode("utf-8")
        return parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="strict", max_num_fields=max_fields)
    except UnicodeDecodeError as exc:
        raise InvalidEncoding(f"the form body is not valid UTF-8 (byte {exc.start})") from None
    except ValueError:
        raise TooManyMessages(f"more than {max_fields} form fields in one request") from None


def parse_query(raw: str, max_fields: int = 100) -> list[tuple[str, str]]:
    """The query string's (name, value) pairs; InvalidEncoding if it (or a percent-escape in it) is not UTF-8."""
    # The WSGI environ holds the raw bytes as latin-1 characters.
    try:
        text = raw.encode("latin-1").decode("utf-8")
        return parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="strict", max_num_fields=max_fields)
    except UnicodeError:
        raise InvalidEncoding("the query string is not valid UTF-8 (check its percent-escapes)") from None
    except ValueError:
        raise InvalidInput(f"more than {max_fields} query parameters", code="invalid_option") from None


def parse_multipart(body: bytes, boundary: str, max_parts: int) -> list[Part]:
    """Every part of a multipart/form-data body, in order; InvalidInput if it is not well-formed."""
    if not boundary:
        raise InvalidInput("the multipart body has no boundary in its Content-Type", code="invalid_multipart")
    decoder = multipart.MultipartDecoder(boundary.encode("latin-1", "replace"), max_parts=max_parts)
    parts: list[Part] = []
    current: tuple[str, str | None] | None = None
    data = bytearray()
    event: multipart.Event | None = None
    try:
        decoder.receive_data(body)
        decoder.receive_data(None)
        while True:
            event = decoder.next_event()
            if isinstance(event, (multipart.Field, multipart.File)):
                current, data = (event.name or "", getattr(event, "filename", None)), bytearray()  # a part may have no name
            elif isinstance(event, multipart.Data) and current is not None:
                data += event.data
                if not event.more_data:
                    parts.append(Part(current[0], current[1], bytes(data)))
                    current = None
            elif isinstance(event, (multipart.Epilogue, multipart.NeedData)):
                break
    except RequestEntityTooLarge:
        raise TooManyMessages(f"more than {max_parts} parts in one multipart form") from None
    except ValueError:  # werkzeug's words name its parser's states, not the client's mistake
        event = None
    if current is not None or not isinstance(event, multipart.Epilogue):
        raise InvalidInput(
            f"the multipart body is malformed or ends before its closing boundary (--{boundary}--); "
            "each part needs a Content-Disposition header",
            code="invalid_multipart",
        )
    return parts
