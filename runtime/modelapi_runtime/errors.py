"""The one place where errors become HTTP responses.

Request errors a client caused (4xx) and overload (503) keep their message, written for the caller. A server fault
(a handler that raised, an inference error, anything unexpected: 500) is logged with its detail and traceback under
a request id; the client gets the id (in the body and in ``X-Request-Id``) and a generic message, never the
exception's text. The body follows the v2 protocol: ``{"error": msg}``.
"""

from __future__ import annotations

import logging

import orjson

from modelapi_runtime.exceptions import ModelAPIError, Overloaded, RequestError
from modelapi_runtime.logs import RequestId

log = logging.getLogger(__name__)

Headers = list[tuple[bytes, bytes]]

REQUEST_ID_HEADER = b"x-request-id"
_PUBLIC_MESSAGES = {
    "HandlerFailed": "the model's handler failed",
    "InferenceFailed": "the model could not run on these inputs",
}


def error_response(exc: BaseException, request: RequestId | None = None) -> tuple[int, Headers, bytes]:
    """Status, extra headers and JSON body for ``exc`` (``request``: the request's id, see :mod:`logs`)."""
    headers: Headers = []
    if isinstance(exc, RequestError) and exc.status != 500:
        if isinstance(exc, Overloaded):
            headers.append((b"retry-after", str(exc.retry_after_s).encode()))
        return exc.status, headers, orjson.dumps({"error": exc.message})
    if isinstance(exc, ModelAPIError) and not isinstance(exc, RequestError):
        return 503, headers, orjson.dumps({"error": exc.message})
    rid = (request or RequestId()).get()
    reason = exc.reason if isinstance(exc, RequestError) else "InternalError"
    detail = exc.message if isinstance(exc, RequestError) else f"{type(exc).__name__}: {exc}"
    log.error("request %s failed: %s: %s", rid, reason, detail, exc_info=exc, extra={"request_id": rid})
    headers.append((REQUEST_ID_HEADER, rid.encode()))
    public = _PUBLIC_MESSAGES.get(reason, "internal error")
    message = f"{public} (request id {rid}; the details are in the runtime's log)"
    return 500, headers, orjson.dumps({"error": message, "request_id": rid})
