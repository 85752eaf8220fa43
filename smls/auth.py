"""API keys: `Authorization: Bearer <key>` on every route but the public ones (smls.web.endpoints marks them).

Keys come from SMLS_API_KEY and from SMLS_API_KEY_FILE (one key per line, # comments),
which is re-read when it changes, so keys can be rotated without a restart: add the new
key, move the clients over, remove the old one. Keys are compared in constant time and
never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
import time
from pathlib import Path

from smls.errors import StartupError, Unauthorized

MIN_KEY_LENGTH = 16
# How often the key file's metadata is checked for a change.
_RECHECK_SECONDS = 1.0


def read_key_file(path: Path) -> list[str]:
    """The keys in a key file; StartupError naming the file and line if it cannot be used."""
    try:
        lines = path.read_text("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise StartupError(f"SMLS_API_KEY_FILE {str(path)!r} cannot be read: {exc}") from None
    keys = []
    for number, line in enumerate(lines, 1):
        key = line.strip()
        if not key or key.startswith("#"):
            continue
        check_key(key, f"line {number} of {path}")
        keys.append(key)
    if not keys:
        raise StartupError(f"SMLS_API_KEY_FILE {str(path)!r} holds no key")
    return keys


def check_key(key: str, where: str) -> None:
    """StartupError unless the key is long enough and printable ASCII without spaces."""
    if len(key) < MIN_KEY_LENGTH:
        raise StartupError(f"the API key in {where} is shorter than {MIN_KEY_LENGTH} characters")
    if not all(33 <= ord(c) < 127 for c in key):
        raise StartupError(f"the API key in {where} must be printable ASCII without spaces")


def _digest(text: str) -> bytes:
    # Comparing fixed-length digests: compare_digest then takes the same time whatever
    # the lengths of the key sent and the keys held.
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()


class KeyRing:
    """The keys this server accepts; empty means access control is off."""

    def __init__(self, key: str | None = None, key_file: Path | None = None) -> None:
        self._fixed = [key] if key else []
        if key:
            check_key(key, "SMLS_API_KEY")
        self._file = key_file
        self._file_state: tuple[float, int] | None = None
        self._from_file: list[str] = []
        self._digests: list[bytes] = []
        self._checked = 0.0
        self._lock = threading.Lock()
        if key_file is not None:
            self._from_file = read_key_file(key_file)
            self._file_state = self._stat()
        self._digests = [_digest(k) for k in self._fixed + self._from_file]

    @property
    def enabled(self) -> bool:
        """Whether requests need a key."""
        return bool(self._digests)

    def check(self, authorization: str | None) -> None:
        """Return if the Authorization header carries a valid key, else raise Unauthorized."""
        self._maybe_reload()
        if not authorization:
            raise Unauthorized("this server needs an API key: send Authorization: Bearer <key>", error=None)
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("send the API key as Authorization: Bearer <key>")
        given = _digest(token.strip())
        match = False
        for digest in self._digests:  # no early exit: the time taken says nothing about which key
            match |= hmac.compare_digest(given, digest)
        if not match:
            raise Unauthorized("the API key is not valid")

    def _stat(self) -> tuple[float, int] | None:
        try:
            st = os.stat(self._file)  # type: ignore[arg-type]
        except OSError:
            return None
        return (st.st_mtime, st.st_size)

    def _maybe_reload(self) -> None:
        if self._file is None or time.monotonic() - self._checked < _RECHECK_SECONDS:
            return
        with self._lock:
            self._checked = time.monotonic()
            state = self._stat()
            if state == self._file_state:
                return
            try:
                keys = read_key_file(self._file)
            except StartupError:
                return  # a half-written or emptied file keeps the keys we had, not none
            self._file_state = state
            self._digests = [_digest(k) for k in self._fixed + keys]


def is_loopback(bind: str) -> bool:
    """Whether a gunicorn bind address only listens on this machine."""
    if bind.startswith(("unix:", "fd://")):
        return True
    host = bind.rsplit(":", 1)[0].strip("[]") if ":" in bind else bind
    return host in ("localhost", "::1") or host.startswith("127.")
