"""The ASGI application factory. Nothing happens at import time: the model loads in the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.types import Message, Receive, Scope, Send

from modelapi_runtime import __version__
from modelapi_runtime.errors import error_response
from modelapi_runtime.exceptions import ModelAPIError
from modelapi_runtime.lifecycle import FatalHook, Loaded, Runtime, load
from modelapi_runtime.routes import InferenceEndpoint, build_router, match_inference
from modelapi_runtime.settings import RuntimeSettings

Loader = Callable[[RuntimeSettings], Loaded]


class RuntimeApp(FastAPI):
    """FastAPI for health, metadata and /metrics; inference requests never enter its middleware stack.

    ``POST`` to an inference path goes straight to :class:`InferenceEndpoint` (see :mod:`routes`);
    everything else, the lifespan included, is FastAPI's.
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
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
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
        title="modelapi runtime",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        # no 307 to the path without its trailing slash: clients of this API do not follow redirects for a POST
        redirect_slashes=False,
    )
    app.state.runtime = runtime
    app.inference = InferenceEndpoint(runtime)
    app.include_router(build_router(runtime))

    @app.exception_handler(ModelAPIError)
    async def domain_error(_: Request, exc: ModelAPIError) -> Response:
        status, headers, body = error_response(exc)
        return Response(
            body,
            status_code=status,
            media_type="application/json",
            headers={k.decode(): v.decode() for k, v in headers},
        )

    return app


__all__ = ["Loaded", "RuntimeApp", "create_app"]
