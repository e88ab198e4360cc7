"""The ASGI application factory. Nothing happens at import time: the model loads in the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Message, Receive, Scope, Send

from modelapi_runtime.errors import error_response
from modelapi_runtime.exceptions import ModelAPIError
from modelapi_runtime.lifecycle import FatalHook, Loaded, Runtime, load
from modelapi_runtime.routes import GetRoute, InferenceEndpoint, build_routes, match_inference
from modelapi_runtime.settings import RuntimeSettings

Loader = Callable[[RuntimeSettings], Loaded]


class RuntimeApp(Starlette):
    """Starlette for health, metadata, /metrics and /openapi.json; inference requests never enter its middleware
    stack.

    ``POST`` to an inference path goes straight to :class:`InferenceEndpoint` (see :mod:`routes`);
    everything else, the lifespan included, is Starlette's. Errors are answered as FastAPI did: a ``{"detail": ...}``
    JSON body for a 404 or 405, the runtime's own body for a :class:`ModelAPIError`.
    """

    inference: InferenceEndpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.inference.runtime.draining:
            send = _closing(send)
        if scope["type"] == "http" and scope["method"] == "POST":
            matched = match_inference(scope["path"])
            if matched is not None:
                await self.inference(scope, receive, send, matched)
                return
        await super().__call__(scope, receive, send)


def _closing(send: Send) -> Send:
    """``send`` with ``connection: close`` on the response: while the runtime drains, a kept-alive client is told to
    reconnect (through the Service, to a pod that is not leaving) instead of racing the listener's close."""

    async def send_closing(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
        await send(message)

    return send_closing


def create_app(
    settings: RuntimeSettings,
    *,
    on_fatal: FatalHook | None = None,
    loader: Loader | None = None,
    freeze_gc: bool = False,
) -> RuntimeApp:
    """A runtime app for ``settings``. ``app.state.runtime`` is the :class:`Runtime` (readiness, drain).

    ``freeze_gc``: once loaded, move every object into the collector's permanent generation (what
    the server process wants; tests that create many apps in one process do not).
    """
    runtime = Runtime(settings, loader or load, freeze_gc=freeze_gc)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(runtime.start(on_fatal), name="modelapi-load")
        try:
            yield
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await runtime.stop()

    app = RuntimeApp(
        routes=[GetRoute("/openapi.json", _openapi), *build_routes(runtime)],
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error, ModelAPIError: _domain_error},
    )
    # no 307 to the path without its trailing slash: clients of this API do not follow redirects for a POST
    app.router.redirect_slashes = False
    app.state.runtime = runtime
    app.inference = InferenceEndpoint(runtime)
    return app


async def _http_error(_: Request, exc: Exception) -> Response:
    """A 404 or 405 of the routing, as FastAPI answers it: ``{"detail": ...}`` (no body where none is allowed)."""
    assert isinstance(exc, HTTPException)
    if exc.status_code < 200 or exc.status_code in {204, 304}:
        return Response(status_code=exc.status_code, headers=exc.headers)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def _domain_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ModelAPIError)
    status, headers, body = error_response(exc)
    return Response(
        body, status_code=status, media_type="application/json", headers={k.decode(): v.decode() for k, v in headers}
    )


_document: list[dict[str, Any]] = []


async def _openapi(_: Request) -> Response:
    """The OpenAPI document, built by FastAPI on the first request (FastAPI is not imported by a start)."""
    if not _document:
        from modelapi_runtime.openapi import document  # noqa: PLC0415 - on purpose: see the module's docstring

        _document.append(document())
    return JSONResponse(_document[0])


__all__ = ["Loaded", "RuntimeApp", "create_app"]
