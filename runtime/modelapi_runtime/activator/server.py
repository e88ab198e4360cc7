"""The activator's HTTP side (aiohttp): place the request, hold it until the model has a ready replica, forward it
there, return the model's answer as it is. Its own errors are JSON ``{"error": ...}`` like the runtime's."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import Final

import aiohttp
from aiohttp import web

from modelapi_runtime.activator.holding import Holder, NoSuchModel, QueueFull
from modelapi_runtime.activator.settings import ActivatorSettings
from modelapi_runtime.activator.targets import Target, Unplaced, resolve
from modelapi_runtime.tracing import HeldTrace, Tracer

log = logging.getLogger(__name__)

HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
MIB: Final = 1024 * 1024
HOLDER: Final = web.AppKey("holder", Holder)
SESSION: Final = web.AppKey("session", aiohttp.ClientSession)


def _error(status: int, message: str, retry_after: int | None = None) -> web.Response:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return web.json_response({"error": message}, status=status, headers=headers)


class Proxy:
    def __init__(self, settings: ActivatorSettings, tracer: Tracer | None = None) -> None:
        self.settings = settings
        self.tracer = tracer  # None: tracing off (no OTEL_EXPORTER_OTLP_ENDPOINT)
        self._turn = itertools.count()
        self.held_bytes = 0  # bodies read or being read, counted before they arrive (declared or largest length)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        holder = request.app[HOLDER]
        try:
            target = resolve(request.headers, self.settings.cluster_domain, await holder.known())
        except Unplaced as error:
            return _error(421, f"the activator cannot tell which model this request is for: {error}")
        tracer = self.tracer
        if tracer is None:
            return await self._handle(request, holder, target, None)
        headers = request.headers
        trace = tracer.hold(target.namespace, target.name, headers.get("traceparent"), headers.get("tracestate"))
        response = await self._handle(request, holder, target, trace)
        if trace is not None:
            tracer.finish_hold(trace, response.status)
        return response

    async def _handle(
        self, request: web.Request, holder: Holder, target: Target, trace: HeldTrace | None
    ) -> web.StreamResponse:
        max_body = self.settings.max_body_mib * MIB
        declared = request.content_length
        if declared is not None and declared > max_body:
            return _error(413, f"the request body is {declared} bytes; the activator holds at most {max_body}")
        if holder.held >= self.settings.queue_limit:
            return self._queue_full()
        reserved = declared if declared is not None else max_body
        if self.held_bytes + reserved > self.settings.max_held_mib * MIB:
            return self._unavailable(
                f"the activator already holds {self.held_bytes} bytes of request bodies (its budget is "
                f"{self.settings.max_held_mib} MiB) while models start; retry later"
            )
        self.held_bytes += reserved
        try:
            try:
                body = await asyncio.wait_for(request.read(), self.settings.body_timeout_seconds)
            except TimeoutError:
                return _error(408, f"the request body did not arrive within {self.settings.body_timeout_seconds:g} s")
            return await self._hold_and_forward(request, holder, target, body, trace)
        finally:
            self.held_bytes -= reserved

    async def _hold_and_forward(
        self, request: web.Request, holder: Holder, target: Target, body: bytes, trace: HeldTrace | None
    ) -> web.StreamResponse:
        deadline = time.monotonic() + self.settings.hold_timeout_seconds
        while True:
            try:
                endpoints = await holder.endpoints(target, max(deadline - time.monotonic(), 0.001))
            except QueueFull:
                return self._queue_full()
            except NoSuchModel:
                return _error(404, f"no ModelAPI {target}")
            except TimeoutError:
                return self._unavailable(
                    f"no replica of {target} became ready within {self.settings.hold_timeout_seconds:g} s (the model "
                    f"may still be loading, or failing to start: kubectl describe modelapi -n {target.namespace} "
                    f"{target.name})"
                )
            endpoint = endpoints[next(self._turn) % len(endpoints)]
            if trace is not None:
                trace.ready = time.perf_counter()
            try:
                return await self._forward(request, endpoint.url(request.path_qs), body, trace)
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as error:
                # Not connected, so nothing was sent: a pod that was ready a moment ago is gone or not reachable
                # yet. Read the pods again and retry while the request may still be held.
                holder.forget(target)
                if time.monotonic() >= deadline:
                    return self._unavailable(f"no replica of {target} could be reached: {error}")
                await asyncio.sleep(self.settings.poll_seconds)
            except (aiohttp.ClientError, TimeoutError) as error:
                log.warning("forward to %s of %s failed: %s", endpoint.address, target, error)
                return _error(502, f"the replica of {target} did not answer: {type(error).__name__}")

    def _queue_full(self) -> web.Response:
        return self._unavailable(
            f"the activator already holds {self.settings.queue_limit} requests (its queue limit) while models start; "
            "retry later"
        )

    def _unavailable(self, message: str) -> web.Response:
        return _error(503, message, retry_after=self.settings.retry_after_seconds)

    async def _forward(self, request: web.Request, url: str, body: bytes, trace: HeldTrace | None) -> web.Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        if trace is not None:  # the runtime's spans become children of the activator's
            headers = {k: v for k, v in headers.items() if k.lower() != "traceparent"}
            headers["traceparent"] = trace.header()
        peer = request.remote or ""
        forwarded = request.headers.get("X-Forwarded-For")
        headers["X-Forwarded-For"] = f"{forwarded}, {peer}" if forwarded else peer
        session = request.app[SESSION]
        async with session.request(request.method, url, data=body, headers=headers) as answer:
            payload = await answer.read()
            out = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP}
            return web.Response(status=answer.status, body=payload, headers=out)


def build_app(settings: ActivatorSettings, holder: Holder, tracer: Tracer | None = None) -> web.Application:
    app = web.Application(client_max_size=settings.max_body_mib * MIB)
    app[HOLDER] = holder
    proxy = Proxy(settings, tracer)

    async def session(app: web.Application):  # type: ignore[no-untyped-def]
        timeout = aiohttp.ClientTimeout(total=settings.forward_timeout_seconds, sock_connect=5)
        app[SESSION] = aiohttp.ClientSession(
            timeout=timeout, auto_decompress=False, connector=aiohttp.TCPConnector(limit=0)
        )
        yield
        await app[SESSION].close()

    app.cleanup_ctx.append(session)
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    return app


def build_health_app(holder: Holder) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "held": holder.held})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    return app
