"""The event loop's direct path: a small model request read from the bytes the loop peeked, and its answer written, without gunicorn's parser and Response.

At c=32 a one-sentence request spent about a quarter of its time outside inference in
gunicorn's request parser, its environ and its Response object (docs/benchmarks.org,
"The direct path"). For the commonest requests the worker's event loop holds all of
the request before it reads any of it (smls.worker.inline_size looked with MSG_PEEK),
so it reads the head itself, strictly: parse takes only a request whose every line is
plain, and leaves anything else (None) to gunicorn's parser, which judges it as before:

  request line  POST, a model route exactly (no query), HTTP/1.1;
  headers       token names without "_", values of printable ASCII, no name twice,
                fewer and shorter than gunicorn's limits;
  none of       Transfer-Encoding, Expect, Upgrade, HTTP2-Settings, and Connection
                other than keep-alive;
  the body      exactly Content-Length bytes.

What it builds from such a request is what gunicorn builds: environ() the WSGI environ
of gunicorn's wsgi.create (the secure scheme headers of a trusted proxy included), and
response() the bytes gunicorn's Response writes for the app's answer.
tests/test_direct.py checks both against gunicorn's own, and the worker keeps gunicorn's
rules for keep-alive, max_requests and the access log (smls.worker).
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any

from gunicorn import SERVER

# RFC 9110's token, less "_": gunicorn drops or refuses names with one (header_map).
_NAME = re.compile(rb"[-!#$%&'*+.^`|~0-9A-Za-z]+")
_VALUE = re.compile(rb"[\t\x20-\x7e]*")
# What gunicorn's Response accepts of the app's headers (its TOKEN_RE and HEADER_VALUE_RE).
_RESPONSE_NAME = re.compile(r"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
_RESPONSE_VALUE = re.compile(r"[ \t\x21-\x7e\x80-\xff]*")
# Headers whose meaning gunicorn's parser acts on (Upgrade, Expect, chunked bodies), or
# which no small JSON request needs.
_REFUSED = frozenset({"TRANSFER-ENCODING", "EXPECT", "UPGRADE", "HTTP2-SETTINGS"})
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers", "transfer-encoding", "upgrade", "server", "date"})


@dataclass(frozen=True)
class Limits:
    """gunicorn's limits on a request head: a longer request line or header line, or more headers, go to its parser."""

    request_line: int
    fields: int
    field_size: int

    @classmethod
    def of(cls, cfg: Any) -> Limits:
        """The limits of a gunicorn config (0: gunicorn's own maximum, 8190)."""
        return cls(cfg.limit_request_line or 8190, cfg.limit_request_fields or 32768, cfg.limit_request_field_size or 8190)


@dataclass(frozen=True)
class Request:
    """A request parse took: what gunicorn's Request would hold (names in upper case, as its req.headers)."""

    path: str
    headers: list[tuple[str, str]]
    body: bytes
    scheme: str
    method: str = "POST"  # (for gunicorn's pre_request hook, and its access log)


def parse(data: bytes, paths: frozenset[bytes], limits: Limits, scheme_headers: Mapping[str, str]) -> Request | None:
    """The request `data` holds whole (head and body), if it is one this path takes; None for gunicorn's parser to judge.

    `scheme_headers` are gunicorn's secure_scheme_headers where the peer is a trusted
    proxy (forwarded_allow_ips), else empty: a trusted proxy's X-Forwarded-Proto sets the
    URL scheme, as gunicorn's parser does.
    """
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = data[:end].split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(lines[0]) >= limits.request_line or len(parts) != 3 or parts[0] != b"POST" or parts[1] not in paths or parts[2] != b"HTTP/1.1":
        return None
    if len(lines) > limits.fields:
        return None
    headers: list[tuple[str, str]] = []
    seen: set[str] = set()
    length, scheme = -1, ""
    for line in lines[1:]:
        name, colon, raw = line.partition(b":")
        value = raw.strip(b" \t")
        if len(line) >= limits.field_size or not colon or not _NAME.fullmatch(name) or not _VALUE.fullmatch(value):
            return None
        key, text = name.decode("ascii").upper(), value.decode("ascii")
        if key in seen or key in _REFUSED or (key == "CONNECTION" and text.lower() != "keep-alive"):
            return None
        seen.add(key)
        if key == "CONTENT-LENGTH":
            if not text.isdigit():
                return None
            length = int(text)
        elif key in scheme_headers:
            if scheme:  # two of them: gunicorn's parser refuses them if they disagree
                return None
            scheme = "https" if text == scheme_headers[key] else "http"
        headers.append((key, text))
    body = data[end + 4 :]
    if length != len(body):
        return None
    return Request(parts[1].decode("ascii"), headers, body, scheme or "http")


def environ(request: Request, base: Mapping[str, Any], client: Any, server: tuple[str, int], sock: Any) -> dict[str, Any]:
    """The WSGI environ gunicorn's wsgi.create builds for the request (with `base`, its base_environ, made once).

    Apart from gunicorn's wsgi.early_hints, which no smls route sends.
    """
    env = dict(base)
    env["wsgi.input"] = io.BytesIO(request.body)
    env["gunicorn.socket"] = sock
    env["REQUEST_METHOD"] = "POST"
    env["QUERY_STRING"] = ""
    env["RAW_URI"] = request.path
    env["SERVER_PROTOCOL"] = "HTTP/1.1"
    for name, value in request.headers:
        if name == "CONTENT-TYPE":
            env["CONTENT_TYPE"] = value
        elif name == "CONTENT-LENGTH":
            env["CONTENT_LENGTH"] = value
        else:
            env["HTTP_" + name.replace("-", "_")] = value
    env["wsgi.url_scheme"] = request.scheme
    if isinstance(client, tuple):
        env["REMOTE_ADDR"], env["REMOTE_PORT"] = client[0], str(client[1])
    else:
        env["REMOTE_ADDR"] = client.decode() if isinstance(client, bytes) else client
    env["SERVER_NAME"], env["SERVER_PORT"] = server[0], str(server[1])
    env["PATH_INFO"] = request.path
    env["SCRIPT_NAME"] = ""
    return env


@dataclass
class Answer:
    """What gunicorn's access log reads of a response (status, the app's headers as sent, body bytes sent)."""

    status: str
    headers: list[tuple[str, str]]
    sent: int = 0


def response(answer: Answer, body: bytes, keep_alive: bool) -> tuple[bytes, bool]:
    """The bytes gunicorn's Response writes for a POST's answer, and whether the connection may stay open after it.

    As gunicorn: the app's hop-by-hop headers are dropped, the body is cut at its
    Content-Length, and a body-less status (1xx, 204, 304) sends none. A response with no
    Content-Length gets one here (gunicorn would chunk it: smls's routes always set it).
    Sets answer.sent. ValueError for a header gunicorn would refuse to write.
    """
    code = int(answer.status.split(None, 1)[0])
    no_body = code < 200 or code in (204, 304)
    kept: list[tuple[str, str]] = []
    length = -1
    for name, value in answer.headers:
        if not _RESPONSE_NAME.fullmatch(name) or not _RESPONSE_VALUE.fullmatch(value):
            raise ValueError(f"invalid response header {name!r}")
        value = value.strip(" \t")
        lower = name.lower()
        if lower in _HOP_BY_HOP:
            continue
        if lower == "content-length":
            length = int(value)
            if code < 200 or code == 204:
                continue  # gunicorn drops a Content-Length these statuses forbid
        kept.append((name, value))
    if no_body:
        body = b""
    elif length < 0:
        length = len(body)
        kept.append(("Content-Length", str(length)))
    elif len(body) > length:
        body = body[:length]
    elif len(body) < length:
        keep_alive = False  # the client waits for bytes that never come: only the close ends it
    answer.headers, answer.sent = kept, len(body)
    head = [f"HTTP/1.1 {answer.status}\r\n", f"Server: {SERVER}\r\n", f"Date: {http_date()}\r\n", f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n"]
    head += [f"{name}: {value}\r\n" for name, value in kept]
    head.append("\r\n")
    return "".join(head).encode("latin-1") + body, keep_alive


_date: tuple[int, str] = (0, "")


def http_date() -> str:
    """The Date header's value for now, as gunicorn's util.http_date writes it, formatted once a second."""
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, formatdate(now, localtime=False, usegmt=True))
    return _date[1]
