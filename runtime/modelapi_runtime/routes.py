"""HTTP endpoints.

Inference (``POST /v1/models/{name}:predict``, ``POST /v2/models/{name}[/versions/{v}]/infer``) is
served by :class:`InferenceEndpoint`, a plain ASGI callable that :class:`~modelapi_runtime.app.RuntimeApp`
calls *before* any FastAPI/Starlette layer: FastAPI's middleware stack (telemetry, body limit,
server-error and exception middleware, routing) costs more per request than a small model's whole
inference, and these two paths need none of it (they validate against the model's own metadata and
turn every error into a response themselves). Health, metadata and /metrics are ordinary FastAPI
routes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Coroutine
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.types import Receive, Scope, Send

from modelapi_runtime import __version__
from modelapi_runtime.errors import Headers, error_response
from modelapi_runtime.exceptions import BadRequest, PayloadTooLarge, RequestError
from modelapi_runtime.lifecycle import Runtime
from modelapi_runtime.service import InferenceService, Reply

log = logging.getLogger(__name__)

V1_PREFIX, V1_SUFFIX = "/v1/models/", ":predict"
V2_PREFIX, V2_SUFFIX = "/v2/models/", "/infer"
SERVER_NAME = "modelapi"
CLIENT_GONE = 499  # nginx's "client closed request": counted, never sent
_CONTENT_TYPE, _CONTENT_LENGTH, _HEADER_LENGTH = b"content-type", b"content-length", b"inference-header-content-length"


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
    (:meth:`open`, :meth:`infer`, :meth:`failure`, :meth:`record`) straight from the HTTP parser.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.limit = runtime.settings.max_request_bytes

    def open(self, name: str, content_length: bytes | None) -> InferenceService:
        """The service for ``name``, admitted (call ``service.release()`` afterwards); refuses a declared
        body over the limit before any of it is read."""
        service = self.runtime.service_for(name)
        if content_length is not None and content_length.isdigit() and int(content_length) > self.limit:
            raise PayloadTooLarge(f"request body of {int(content_length)} bytes exceeds the limit of {self.limit}")
        service.admit()
        return service

    def check_size(self, size: int) -> None:
        """The body received so far (or in all, once complete) against the limit."""
        if size > self.limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {self.limit} bytes")

    @staticmethod
    def infer(
        service: InferenceService, protocol: str, body: bytes, header_length: bytes | None
    ) -> Coroutine[Any, Any, Reply]:
        if not body:
            raise BadRequest("empty request body")
        if protocol == "v1":
            return service.infer_v1(body)
        return service.infer_v2(body, header_length.decode("latin-1") if header_length is not None else None)

    @staticmethod
    def failure(exc: BaseException) -> tuple[int, Headers, bytes]:
        """Status, extra headers and body for a request that raised ``exc`` (:mod:`errors` decides)."""
        status, extra, body = error_response(exc)
        if isinstance(exc, RequestError) and status >= 500:
            log.warning("request failed: %s: %s", exc.reason, exc.message)
        return status, extra, body

    def record(self, status: int, started: float) -> None:
        metrics = self.runtime.metrics
        metrics.count(status)
        metrics.request_seconds.observe(time.perf_counter() - started)

    async def __call__(self, scope: Scope, receive: Receive, send: Send, matched: tuple[str, str]) -> None:
        protocol, name = matched
        started = time.perf_counter()
        try:
            reply = await self._serve(scope, receive, protocol, name)
        except ClientGone:
            status = CLIENT_GONE
        except Exception as exc:
            status, extra, body = self.failure(exc)
            await _send(send, status, body, b"application/json", extra)
        else:
            status = 200
            extra = [] if reply.header_length is None else [(_HEADER_LENGTH, str(reply.header_length).encode())]
            await _send(send, 200, reply.body, reply.content_type, extra)
        finally:
            self.record(status, started)

    async def _serve(self, scope: Scope, receive: Receive, protocol: str, name: str) -> Reply:
        length = header_length = None
        for key, value in scope["headers"]:
            if key == _CONTENT_LENGTH:
                length = value
            elif key == _HEADER_LENGTH:
                header_length = value
        service = self.open(name, length)
        try:
            body = await self._read_body(receive)
            return await self.infer(service, protocol, body, header_length)
        finally:
            service.release()

    async def _read_body(self, receive: Receive) -> bytes:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        body: bytes = message.get("body", b"")
        if not message.get("more_body", False):  # the usual case: the whole body in one message
            self.check_size(len(body))
            return body
        chunks = [body]
        size = len(body)
        while True:
            self.check_size(size)
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        self.check_size(size)
        return b"".join(chunks)


async def _send(send: Send, status: int, body: bytes, content_type: bytes, extra: list[tuple[bytes, bytes]]) -> None:
    headers = [(_CONTENT_TYPE, content_type), (_CONTENT_LENGTH, str(len(body)).encode())]
    if extra:
        headers += extra
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def build_router(runtime: Runtime) -> APIRouter:
    router = APIRouter()

    def not_ready(**body: Any) -> JSONResponse:
        return JSONResponse(body, status_code=503)

    @router.get("/v2/health/live")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @router.get("/v2/health/ready", response_model=None)
    async def ready() -> dict[str, bool] | JSONResponse:
        return {"ready": True} if runtime.ready else not_ready(ready=False)

    @router.get("/v2")
    async def server_metadata() -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": __version__, "extensions": ["binary_tensor_data"]}

    @router.get("/v2/models/{name}", response_model=None)
    @router.get("/v2/models/{name}/versions/{version}", response_model=None)
    async def model_metadata(name: str) -> dict[str, Any]:
        return runtime.service_for(name).metadata()

    @router.get("/v2/models/{name}/ready", response_model=None)
    @router.get("/v2/models/{name}/versions/{version}/ready", response_model=None)
    async def model_ready(name: str) -> dict[str, Any] | JSONResponse:
        if name != runtime.settings.name:
            runtime.service_for(name)  # raises ModelNotFound: 404
        return {"name": name, "ready": True} if runtime.ready else not_ready(name=name, ready=False)

    @router.get("/v1/models/{name}", response_model=None)
    async def v1_model(name: str) -> dict[str, Any] | JSONResponse:
        if name != runtime.settings.name:
            runtime.service_for(name)  # raises ModelNotFound: 404
        return {"name": name, "ready": runtime.ready}

    @router.get("/metrics")
    async def metrics() -> Response:
        return Response(runtime.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return router
