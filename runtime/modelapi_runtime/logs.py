"""Log lines of the runtime: text or JSON (``--log-format``), each line about a request carrying its request id.

The request id is the client's ``X-Request-Id`` when it is sane, else one made up here; it is what an answer's
``X-Request-Id`` header, a 500's body and a prediction record carry. The inference path sets
:data:`current_request` while the request's code runs on the event loop (and in the tasks it starts), and
:class:`RequestIdFilter` copies it onto every record logged meanwhile: a user handler's own log lines included.
The id is only made when something asks for it (a log line, an error, a sampled prediction record): an ordinary
request costs one small object and a context variable set and reset.

This module is light (the standard library only): the ``modelapi-runtime`` command imports it before it knows
whether the model server's dependencies are installed.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import sys
import time
from contextvars import ContextVar
from typing import Literal

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(request)s: %(message)s"

# A client's own request id is used when it is short and plain (it ends up in logs and headers).
_SANE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:@/+=-]{1,128}")
# Made-up ids: this process's random prefix and a counter (unique per process without a system call per request).
_PREFIX = os.urandom(6).hex()
_COUNTER = itertools.count(1)


def new_request_id() -> str:
    return f"{_PREFIX}{next(_COUNTER):08x}"


def sane_request_id(given: bytes | None) -> str | None:
    """The client's ``X-Request-Id`` when it is at most 128 of ``A-Za-z0-9._:@/+=-``, else None."""
    if given is not None and _SANE_REQUEST_ID.fullmatch(given):
        return given.decode("ascii")
    return None


class RequestId:
    """One request's id, made on first use from the client's header (when sane) or :func:`new_request_id`."""

    __slots__ = ("given", "value")

    def __init__(self, given: bytes | None = None) -> None:
        self.given = given
        self.value: str | None = None

    def get(self) -> str:
        value = self.value
        if value is None:
            value = self.value = sane_request_id(self.given) or new_request_id()
        return value


current_request: ContextVar[RequestId | None] = ContextVar("modelapi_request", default=None)


class RequestIdFilter(logging.Filter):
    """Sets ``record.request_id`` (the current request's id, or None) and ``record.request`` (`` [id]`` or "")."""

    def filter(self, record: logging.LogRecord) -> bool:
        rid = getattr(record, "request_id", None)
        if rid is None:
            current = current_request.get()
            rid = None if current is None else current.get()
        record.request_id = rid
        record.request = f" [{rid}]" if rid else ""
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (RFC 3339, UTC), ``level``, ``logger``, ``message``, ``request_id`` when
    the line is about a request, ``exception`` (the traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": _rfc3339(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None)
        if rid:
            line["request_id"] = rid
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def _rfc3339(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"


def configure(level: str, log_format: LogFormat) -> None:
    """The root logger: one handler on stderr in ``log_format``, with :class:`RequestIdFilter` (stdout is left to
    the prediction log's JSON lines)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.captureWarnings(True)  # Python's warnings become log lines in the same format
