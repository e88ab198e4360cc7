"""The one place where errors become HTTP responses.

Request errors keep their message (written for the caller); anything unexpected becomes a 500
with a generic message and a logged traceback. The body follows the v2 protocol: ``{"error": msg}``.
"""

from __future__ import annotations

import logging

import orjson

from modelapi_runtime.exceptions import ModelAPIError, Overloaded, RequestError

log = logging.getLogger(__name__)

Headers = list[tuple[bytes, bytes]]


def error_response(exc: BaseException) -> tuple[int, Headers, bytes]:
    """Status, extra headers and JSON body for ``exc``."""
    headers: Headers = []
    if isinstance(exc, RequestError):
        status, message = exc.status, exc.message
        if isinstance(exc, Overloaded):
            headers.append((b"retry-after", str(exc.retry_after_s).encode()))
    elif isinstance(exc, ModelAPIError):
        status, message = 503, exc.message
    else:
        log.error("unexpected error while serving a request", exc_info=exc)
        status, message = 500, "internal error (see the runtime's log)"
    return status, headers, orjson.dumps({"error": message})
