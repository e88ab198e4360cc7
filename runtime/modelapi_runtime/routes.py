"""HTTP endpoints.

Inference (``POST /v1/models/{name}:predict``, ``POST /v2/models/{name}[/versions/{v}]/infer``) is
a plain ASGI middleware in front of FastAPI: FastAPI's per-request dependency and validation
machinery costs more than a small model's whole inference, and these two paths need none of it
(they validate against the model's own metadata). Health, metadata and /metrics are ordinary
FastAPI routes.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Receive, Scope, Send

from modelapi_runtime import __version__
from modelapi_runtime.errors import error_response
from modelapi_runtime.exceptions import BadRequest, PayloadTooLarge, RequestError
from modelapi_runtime.lifecycle import Runtime
from modelapi_runtime.service import InferenceService, Reply

log = logging.getLogger(__name__)

V1_PREFIX, V1_SUFFIX = "/v1/models/", ":predict"
V2_PREFIX, V2_SUFFIX = "/v2/models/", "/infer"
SERVER_NAME = "modelapi"


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


class InferenceMiddleware:
    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime
        self.limit = runtime.settings.max_request_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        matched = match_inference(scope["path"])
        if matched is None:
            await self.app(scope, receive, send)
            return
        protocol, name = matched
        metrics = self.runtime.metrics
        started = time.perf_counter()
        status = 500
        try:
            headers = _headers(scope)
            service = self.runtime.service_for(name)
            length = headers.get(b"content-length")
            if length is not None and length.isdigit() and int(length) > self.limit:
                raise PayloadTooLarge(f"request body of {int(length)} bytes exceeds the limit of {self.limit}")
            service.admit()
            try:
                body = await _read_body(receive, self.limit)
                reply = await self._infer(service, protocol, body, headers)
            finally:
                service.release()
            status = 200
            await _send(send, 200, reply.body, reply.content_type, _reply_headers(reply))
        except ClientGone:
            status = 499  # nginx's "client closed request": counted, never sent
        except Exception as exc:
            status, extra, body = error_response(exc)
            if isinstance(exc, RequestError) and status >= 500:
                log.warning("request failed: %s: %s", exc.reason, exc.message)
            await _send(send, status, body, b"application/json", extra)
        finally:
            metrics.count(status)
            metrics.request_seconds.observe(time.perf_counter() - started)

    async def _infer(self, service: InferenceService, protocol: str, body: bytes, headers: dict[bytes, bytes]) -> Reply:
        if protocol == "v1":
            return await service.infer_v1(body)
        header_length = headers.get(b"inference-header-content-length")
        return await service.infer_v2(body, header_length.decode("latin-1") if header_length is not None else None)


def _headers(scope: Scope) -> dict[bytes, bytes]:
    return dict(scope["headers"])


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    if not size:
        raise BadRequest("empty request body")
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _reply_headers(reply: Reply) -> list[tuple[bytes, bytes]]:
    if reply.header_length is None:
        return []
    return [(b"inference-header-content-length", str(reply.header_length).encode())]


async def _send(send: Send, status: int, body: bytes, content_type: bytes, extra: list[tuple[bytes, bytes]]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                *extra,
            ],
        }
    )
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
