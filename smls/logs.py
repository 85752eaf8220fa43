"""Request ids and access log formats.

Every response carries X-Request-Id: the client's, when it sent a sane one (so a proxy's
id follows the request through), else a new one. gunicorn's access log prints it; with
SMLS_ACCESS_LOG_FORMAT=json each line is one JSON object, for log shippers.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from typing import Any

from gunicorn.glogging import Logger

REQUEST_ID_HEADER = "X-Request-Id"
# What we echo: short, printable, no spaces or quotes, so it is safe in any log line.
_SANE_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")

# The text format: gunicorn's common fields, the time taken, the request id and the worker.
TEXT_FORMAT = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms rid=%({x-request-id}o)s pid=%(p)s'


def request_id(incoming: str | None) -> str:
    """The client's id if it is sane, else a fresh random one."""
    if incoming and _SANE_ID.fullmatch(incoming):
        return incoming
    # 128 random bits as 32 hex digits, as uuid4().hex gave, without its system call for
    # fresh entropy on every request: an id must be unique, not secret. (random reseeds
    # itself in every forked worker, so two workers never share a sequence.)
    return f"{random.getrandbits(128):032x}"


def access_log_format(setting: str) -> str:
    """gunicorn's access_log_format for SMLS_ACCESS_LOG_FORMAT (text, json, or a gunicorn format string)."""
    return TEXT_FORMAT if setting in ("text", "json") else setting


class JsonAccessLogger(Logger):
    """gunicorn's logger, with each access line written as one JSON object."""

    def access(self, resp: Any, req: Any, environ: dict, request_time: Any) -> None:
        """Write one access record as JSON (no request headers: they may hold credentials)."""
        if not self.access_log_enabled:
            return
        status = resp.status.split(None, 1)[0] if isinstance(resp.status, str) else resp.status
        headers = dict((k.lower(), v) for k, v in (resp.headers.items() if hasattr(resp.headers, "items") else resp.headers))
        record = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "remote": environ.get("REMOTE_ADDR"),
            "method": environ.get("REQUEST_METHOD"),
            "path": environ.get("PATH_INFO"),
            "query": environ.get("QUERY_STRING") or None,
            "status": int(status),
            "bytes": getattr(resp, "sent", None),
            "duration_ms": round(request_time.total_seconds() * 1000, 3),
            "request_id": headers.get("x-request-id"),
            "user_agent": environ.get("HTTP_USER_AGENT"),
            "pid": os.getpid(),
        }
        try:
            self.access_log.info(json.dumps(record, ensure_ascii=False))
        except Exception:  # a log line must never fail a request
            self.error("could not write an access log record")

