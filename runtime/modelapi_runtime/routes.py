"""HTTP endpoints.

Inference (``POST /v1/models/{name}:predict``, ``POST /v2/models/{name}[/versions/{v}]/infer``) is
served by :class:`InferenceEndpoint`, a plain ASGI callable that :class:`~modelapi_runtime.app.RuntimeApp`
calls *before* any Starlette layer: a framework's middleware stack (server-error and exception
middleware, routing; FastAPI's added telemetry and a body limit) costs more per request than a small
model's whole inference, and these two paths need none of it (they validate against the model's own metadata and
turn every error into a response themselves). Health, metadata and /metrics are plain Starlette
routes (:func:`build_routes`).
"""

from __future__ import annotations

import logging
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from modelapi_runtime import __version__
from modelapi_runtime.errors import REQUEST_ID_HEADER, Headers, error_response
from modelapi_runtime.exceptions import BadRequest, PayloadTooLarge, RequestError
from modelapi_runtime.lifecycle import Runtime
from modelapi_runtime.limits import DECODED_BYTES_PER_JSON_VALUE, MAX_READY_WAIT_S
from modelapi_runtime.logs import RequestId, current_request
from modelapi_runtime.service import InferenceService, Reply
from modelapi_runtime.tracing import TRACEPARENT, RequestTrace

log = logging.getLogger(__name__)

V1_PREFIX, V1_SUFFIX = "/v1/models/", ":predict"
V2_PREFIX, V2_SUFFIX = "/v2/models/", "/infer"
SERVER_NAME = "modelapi"
CLIENT_GONE = 499  # nginx's "client closed request": counted, never sent
REQUEST_TIMEOUT = 408
# Set in an ASGI request's scope by the HTTP layer when it closed the connection because the body stalled.
TIMED_OUT = "modelapi.timed_out"
_CONTENT_TYPE, _CONTENT_LENGTH, _HEADER_LENGTH = b"content-type", b"content-length", b"inference-header-content-length"


# An answer given before the body was received keeps the connection (the rest is read and dropped) only when the
# declared body is this small; a larger or chunked body closes it instead.
DRAIN_AT_MOST = 64 * 1024


def drains(content_length: bytes | None) -> bool:
    """Whether the unread rest of a body of this declared length is read and dropped (else: close)."""
    return content_length is not None and content_length.isdigit() and int(content_length) <= DRAIN_AT_MOST


class RefusalLog:
    """Overload refusals (503) in the log: the first at once, then at most one line per interval with the count of
    those not logged. A flood of refused requests must not become a flood of log lines (the metrics count each)."""

    INTERVAL_S = 10.0

    __slots__ = ("next_at", "unlogged")

    def __init__(self) -> None:
        self.next_at = 0.0
        self.unlogged = 0

    def warn(self, exc: RequestError) -> None:
        now = time.monotonic()
        if now < self.next_at:
            self.unlogged += 1
            return
        more = f" ({self.unlogged} more refused since the last such line)" if self.unlogged else ""
        log.warning("request refused: %s: %s%s", exc.reason, exc.message, more)
        self.next_at, self.unlogged = now + self.INTERVAL_S, 0


class ClientGone(Exception):
    """The client disconnected before its body arrived: nothing to answer."""


def match_inference(path: str) -> tuple[str, str] | None:
    """("v1"|"v2", model name) for an inference path, else None."""
    if path.startswith(V1_PREFIX) and path.endswith(V1_SUFFIX):
        name = path[len(V1_PREFIX) : -len(V1_SUFFIX)]
        return ("v1", name) if name and "/" not in name else None
    if path.startswith(V2_PREFIX) and path.endswith(V2_SUFFIX):
        rest = path[len(V2_PREFIX) : -len(V2_SUFFIX)].split("/")
        if len(rest) == 1 and rest[0]:
            return "v2", rest[0]
        if len(rest) == 3 and rest[0] and rest[1] == "versions":
            return "v2", rest[0]
    return None


class InferenceEndpoint:
    """One inference request, start to finish: every outcome is a response and a metric sample.

    Two front ends drive it: :meth:`__call__` (ASGI, any server) and, under ``serve``,
    :class:`~modelapi_runtime.http_protocol.InferenceHttpProtocol`, which calls the same steps
    (:meth:`open`, :meth:`check_size`, :meth:`admit`, :meth:`infer`, :meth:`failure`, :meth:`record`) straight
    from the HTTP parser. The body's bytes are held against the runtime's byte budget as they arrive; the queue
    slot is taken only once the body is complete, so clients that are still sending (or stalled) never hold one.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.name = runtime.settings.name
        self.metrics = runtime.metrics
        self.limit = runtime.settings.max_request_bytes
        self.budget = runtime.budget
        self.max_json_values = runtime.settings.max_json_values
        self.refusals = RefusalLog()
        self.predictions = runtime.predictions
        self.tracer = runtime.tracer  # None: tracing is off (no span or context work at all)

    def open(self, name: str, content_length: bytes | None) -> InferenceService:
        """The service for ``name``; refuses a declared body over the limit before any of it is read."""
        service = self.runtime.service
        if service is None or name != self.name:
            service = self.runtime.service_for(name)  # raises ModelNotFound or NotReady
        if content_length is not None and content_length.isdigit() and int(content_length) > self.limit:
            raise PayloadTooLarge(f"request body of {int(content_length)} bytes exceeds the limit of {self.limit}")
        return service

    def check_size(self, size: int) -> None:
        """The body received so far (or in all, once complete) against the limit."""
        if size > self.limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {self.limit} bytes")

    def admit(self, service: InferenceService, body: bytes, header_length: bytes | None) -> int:
        """A complete body is let in: what decoding its JSON may allocate is held against the byte budget (the
        bytes held are returned: give them back when answered), then a queue slot is taken (release it)."""
        json_bytes = len(body)
        if header_length is not None and header_length.isdigit():
            json_bytes = min(json_bytes, int(header_length))
        # at most two bytes of JSON text per value, and at most max_json_values of them (see limits)
        held = DECODED_BYTES_PER_JSON_VALUE * min(json_bytes // 2 + 1, self.max_json_values)
        budget = self.budget
        if budget.used + held > budget.limit:
            if len(body) + held > budget.limit:  # could never fit: retrying would not help
                raise PayloadTooLarge(
                    f"decoding this {len(body)}-byte JSON body may take {held} bytes, more than the server's budget "
                    f"for requests in progress ({budget.limit}); send large tensors with the v2 binary extension"
                )
            budget.take(held)  # raises Overloaded
        service.admit()  # raises Overloaded when the queue is full, before anything is held
        budget.used += held
        return held

    @staticmethod
    def infer(
        service: InferenceService,
        protocol: str,
        body: bytes,
        header_length: bytes | None,
        trace: RequestTrace | None = None,
    ) -> Coroutine[Any, Any, Reply]:
        if not body:
            raise BadRequest("empty request body")
        if protocol == "v1":
            return service.infer_v1(body, trace)
        return service.infer_v2(body, header_length.decode("latin-1") if header_length is not None else None, trace)

    def failure(self, exc: BaseException, request: RequestId | None = None) -> tuple[int, Headers, bytes]:
        """Status, extra headers and body for a request that raised ``exc`` (:mod:`errors` decides)."""
        status, extra, body = error_response(exc, request)
        if status == 503 and isinstance(exc, RequestError):
            self.refusals.warn(exc)
        return status, extra, body

    def record(self, status: int, started: float) -> None:
        metrics = self.metrics
        counter = metrics.codes.get(status)
        if counter is None:
            metrics.count(status)
        else:
            counter.value += 1
        seconds = time.perf_counter() - started
        histogram = metrics.request_seconds  # LoopHistogram.observe, inlined
        histogram.counts[bisect_left(histogram.bounds, seconds)] += 1
        histogram.sum += seconds

    @staticmethod
    def with_traceparent(extra: Headers, trace: RequestTrace) -> Headers:
        """``extra`` with the ``traceparent`` of the request's server span (a traced request's answer)."""
        return [*extra, (TRACEPARENT, trace.header())]

    def record_traced(self, status: int, started: float, trace: RequestTrace | None) -> None:
        """:meth:`record`, and the trace of a traced request to the exporter."""
        self.record(status, started)
        if trace is not None and self.tracer is not None:
            self.tracer.finish(trace, status)

    def sampled(self) -> bool:
        """Whether this request goes to the prediction log (always False when it is off)."""
        predictions = self.predictions
        return predictions is not None and predictions.sample()

    @staticmethod
    def with_request_id(extra: Headers, request: RequestId) -> Headers:
        """``extra`` with ``X-Request-Id`` added (a sampled request's answer says the id its record has), unless it is
        there already (a 500 has it)."""
        if extra and any(name == REQUEST_ID_HEADER for name, _ in extra):
            return extra
        return [*extra, (REQUEST_ID_HEADER, request.get().encode())]

    async def _answer(  # noqa: PLR0917 - the endpoint's two outcomes
        self,
        send: Send,
        status: int,
        answer: bytes,
        content_type: bytes,
        extra: Headers,
        request: RequestId,
        trace: RequestTrace | None,
    ) -> bool:
        """Send the answer (a request sampled for the prediction log with its id, a traced one with its
        ``traceparent``); returns whether it was sampled for the prediction log."""
        if trace is not None:
            extra = self.with_traceparent(extra, trace)
        sampled = self.sampled()
        await _send(send, status, answer, content_type, self.with_request_id(extra, request) if sampled else extra)
        return sampled

    def log_prediction(  # noqa: PLR0917 - one call per front end
        self, request: RequestId, protocol: str, status: int, started: float, body: bytes | None, answer: bytes | None
    ) -> None:
        """Offer a sampled request's record to the prediction log (call after its answer is written)."""
        assert self.predictions is not None
        self.predictions.offer(request.get(), protocol, status, time.perf_counter() - started, body, answer)

    async def __call__(self, scope: Scope, receive: Receive, send: Send, matched: tuple[str, str]) -> None:
        protocol, name = matched
        started = time.perf_counter()
        length, header_length, given_id = _read_headers(scope)
        current_request.set(request := RequestId(given_id))  # this request's own task: its log lines carry the id
        trace = None if self.tracer is None else self.tracer.start_from(protocol, scope["headers"])
        held, body_complete, sampled = 0, False, False  # held: bytes held against the budget
        body: bytes | None = None
        answer: bytes | None = None
        try:
            service = self.open(name, length)
            chunks: list[bytes] = []
            size = 0
            while not body_complete:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientGone
                chunk: bytes = message.get("body", b"")
                size += len(chunk)
                self.check_size(size)
                self.budget.take(len(chunk))
                held += len(chunk)
                chunks.append(chunk)
                body_complete = not message.get("more_body", False)
            body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            held += self.admit(service, body, header_length)
            try:
                reply = await self.infer(service, protocol, body, header_length, trace)
            finally:
                service.release()
        except ClientGone:
            # the connection closed under an unfinished body: the client left, or the server timed it out (408)
            status = REQUEST_TIMEOUT if scope.get(TIMED_OUT) else CLIENT_GONE
        except Exception as exc:
            status, extra, answer = self.failure(exc, request)
            if not body_complete and not drains(length):  # a large rest is never read: close instead
                extra.append((b"connection", b"close"))
            sampled = await self._answer(send, status, answer, b"application/json", extra, request, trace)
        else:
            status = 200
            answer = reply.body
            extra = [] if reply.header_length is None else [(_HEADER_LENGTH, str(reply.header_length).encode())]
            sampled = await self._answer(send, 200, answer, reply.content_type, extra, request, trace)
        finally:
            if held:
                self.budget.give_back(held)
            self.record_traced(status, started, trace)
        if sampled:
            self.log_prediction(request, protocol, status, started, body, answer)


def _read_headers(scope: Scope) -> tuple[bytes | None, bytes | None, bytes | None]:
    """Content-Length, Inference-Header-Content-Length and X-Request-Id of a request (None when absent)."""
    length = header_length = given_id = None
    for key, value in scope["headers"]:
        if key == _CONTENT_LENGTH:
            length = value
        elif key == _HEADER_LENGTH:
            header_length = value
        elif key == REQUEST_ID_HEADER:
            given_id = value
    return length, header_length, given_id


async def _send(send: Send, status: int, body: bytes, content_type: bytes, extra: list[tuple[bytes, bytes]]) -> None:
    headers = [(_CONTENT_TYPE, content_type), (_CONTENT_LENGTH, str(len(body)).encode())]
    if extra:
        headers += extra
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def ready_wait_seconds(raw: str | None) -> float:
    """``?wait=`` of the readiness route: 0 when absent, else seconds in [0, MAX_READY_WAIT_S]."""
    if raw is None:
        return 0.0
    try:
        wait = float(raw)
    except ValueError:
        wait = -1.0
    if not 0 <= wait <= MAX_READY_WAIT_S:  # also NaN
        raise BadRequest(f"wait must be a number of seconds from 0 to {MAX_READY_WAIT_S:g}, got {raw[:32]!r}")
    return wait


class GetRoute(Route):
    """A ``GET`` route that answers ``GET`` only: Starlette's :class:`Route` also accepts ``HEAD`` for a ``GET``, a
    FastAPI route does not (a ``HEAD`` here is a 405, as it always was)."""

    def __init__(self, path: str, endpoint: Callable[[Request], Awaitable[Response]]) -> None:
        super().__init__(path, endpoint, methods=["GET"])
        self.methods = {"GET"}


def build_routes(runtime: Runtime) -> list[Route]:
    """Health, metadata and /metrics: plain Starlette routes (FastAPI's routing, dependency and OpenAPI machinery
    cost a start about 0.15 CPU-s of imports; the OpenAPI document is built on its first request, see :mod:`app`)."""

    def not_ready(**body: Any) -> JSONResponse:
        return JSONResponse(body, status_code=503)

    async def live(_: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(request: Request) -> Response:
        wait = ready_wait_seconds(request.query_params.get("wait"))
        if wait and not runtime.ready:
            await runtime.wait_settled(wait)
        return JSONResponse({"ready": True}) if runtime.ready else not_ready(ready=False)

    async def server_metadata(_: Request) -> Response:
        return JSONResponse({"name": SERVER_NAME, "version": __version__, "extensions": ["binary_tensor_data"]})

    async def model_metadata(request: Request) -> Response:
        return JSONResponse(runtime.service_for(request.path_params["name"]).metadata())

    async def model_ready(request: Request) -> Response:
        name: str = request.path_params["name"]
        if name != runtime.settings.name:
            runtime.service_for(name)  # raises ModelNotFound: 404
        return JSONResponse({"name": name, "ready": True}) if runtime.ready else not_ready(name=name, ready=False)

    async def v1_model(request: Request) -> Response:
        name: str = request.path_params["name"]
        if name != runtime.settings.name:
            runtime.service_for(name)  # raises ModelNotFound: 404
        return JSONResponse({"name": name, "ready": runtime.ready})

    async def metrics(_: Request) -> Response:
        return Response(runtime.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return [
        GetRoute("/v2/health/live", live),
        GetRoute("/v2/health/ready", ready),
        GetRoute("/v2", server_metadata),
        GetRoute("/v2/models/{name}", model_metadata),
        GetRoute("/v2/models/{name}/versions/{version}", model_metadata),
        GetRoute("/v2/models/{name}/ready", model_ready),
        GetRoute("/v2/models/{name}/versions/{version}/ready", model_ready),
        GetRoute("/v1/models/{name}", v1_model),
        GetRoute("/metrics", metrics),
    ]
