"""The HTTP/1.1 protocol of ``modelapi-runtime serve`` (``--http fast``, the default).

uvicorn's httptools protocol, with inference requests answered straight from the parser's callbacks.
For every request uvicorn builds an ASGI scope, a ``RequestResponseCycle`` with an ``asyncio.Event``,
starts a task, passes the body and the response through ASGI messages, checks every response header
against two regular expressions and writes the head and the body with two ``write()`` calls: ~20 µs,
more than a tiny model's whole inference. Here a ``POST`` to an inference path becomes an
:class:`InferenceCycle` instead: the body is collected as the parser delivers it and, when the model
runs on the loop (no batcher, no worker thread), the request is answered inside the same
``data_received`` call, with no task and one ``write()``. The steps are the ASGI endpoint's own
(:class:`~modelapi_runtime.routes.InferenceEndpoint`: admission, 413/404/503 before the body, the
one error map, the same metrics), so both front ends answer alike.

Everything else goes through uvicorn's cycle to the ASGI app unchanged: health, metadata,
/metrics, inference URLs with a query or %-escapes, ``Expect: 100-continue``, upgrades, and every
request when the access log is on. The connection's read timeouts, head size limit and keep-alive timer are
:class:`~modelapi_runtime.http_guard.GuardedHttpProtocol`'s (``--http uvicorn`` uses it too). uvicorn still owns
the listener, pipelining order (an inference cycle waits in uvicorn's pipeline like any other), graceful
shutdown (it waits for every connection with a request in progress; an inference cycle that waits for a batch or a
worker thread is driven by its futures' callbacks, not a task: see ``InferenceCycle._step``) and the lifespan. The
cycle is duck-typed to what uvicorn's protocol touches: ``response_complete``, ``keep_alive``, ``disconnected``,
``message_event.set()`` and ``run_asgi``.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from modelapi_runtime.app import RuntimeApp
from modelapi_runtime.errors import REQUEST_ID_HEADER, Headers
from modelapi_runtime.exceptions import RequestTimeout
from modelapi_runtime.http_guard import BODY, BUSY, HEAD, IDLE, GuardedHttpProtocol
from modelapi_runtime.logs import RequestId, current_request
from modelapi_runtime.routes import CLIENT_GONE, InferenceEndpoint, drains, match_inference
from modelapi_runtime.service import JSON, OFFLOAD_ABOVE_BYTES, InferenceService
from modelapi_runtime.tracing import RequestTrace

T = TypeVar("T")

_CONTENT_LENGTH, _HEADER_LENGTH = b"content-length", b"inference-header-content-length"


def run_now(coroutine: Coroutine[Any, Any, T]) -> T:
    """The result of a coroutine that never suspends, computed in one step (no task, no loop turn)."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    coroutine.close()
    raise RuntimeError("a coroutine expected to finish at once suspended")


_ROUTES: dict[bytes, tuple[str, str] | None] = {}
_ROUTES_MAX = 256


def _route(url: bytes) -> tuple[str, str] | None:
    """("v1"|"v2", model name) for a URL this protocol serves itself, else None; remembered per URL."""
    try:
        return _ROUTES[url]
    except KeyError:
        pass
    if b"?" in url or b"%" in url or b"#" in url or not url.isascii():
        matched = None  # uvicorn parses and unquotes these; RuntimeApp still routes them to the endpoint
    else:
        matched = match_inference(url.decode("ascii"))
    if len(_ROUTES) < _ROUTES_MAX:  # bounded: arbitrary URLs are only matched, not remembered
        _ROUTES[url] = matched
    return matched


class InferenceHttpProtocol(GuardedHttpProtocol):
    """The guarded httptools protocol; ``POST`` to an inference path is served by an :class:`InferenceCycle`."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        app = config.app
        self.endpoint: InferenceEndpoint | None = None
        if isinstance(app, RuntimeApp) and not self.access_log and not self.root_path and not self.limit_concurrency:
            self.endpoint = app.inference
        self.inference: InferenceCycle | None = None  # the message being parsed, when it is an inference request

    # Parser callbacks. The ASGI scope is only built for requests that go to the ASGI app. The guard's phase is
    # moved here (uvicorn's callbacks are called directly, not through the guard's).

    def on_message_begin(self) -> None:
        self._phase, self._since = HEAD, self.loop.time()
        self.url = b""
        self.expect_100_continue = False
        self.headers = []
        self.inference = None

    def on_headers_complete(self) -> None:
        self._phase, self._head_bytes = BODY, 0
        if self.endpoint is not None:
            cycle = self._inference_cycle(self.endpoint)
            if cycle is not None:
                self.inference = cycle
                previous = self.cycle
                self.cycle = cycle  # type: ignore[assignment]  # duck-typed (see the module's docstring)
                if previous is None or previous.response_complete:
                    cycle.begin()
                else:  # pipelined behind a request still in progress: uvicorn starts it in turn
                    self.flow.pause_reading()
                    self.pipeline.appendleft((cycle, self.app))  # type: ignore[arg-type]
                return
        url, headers, expect_100_continue = self.url, self.headers, self.expect_100_continue
        HttpToolsProtocol.on_message_begin(self)  # uvicorn's scope for this request
        self.url, self.expect_100_continue = url, expect_100_continue
        self.headers = self.scope["headers"] = headers
        HttpToolsProtocol.on_headers_complete(self)

    def on_body(self, body: bytes) -> None:
        if self.inference is None:
            super().on_body(body)
        else:
            self.inference.receive(body)

    def on_message_complete(self) -> None:
        inference = self.inference
        if inference is None:
            self._message_complete()
            HttpToolsProtocol.on_message_complete(self)
        elif inference.response_complete:  # answered early, the small rest read: idle from now
            self._phase, self._since = IDLE, self.loop.time()
            inference.more_body = False
        else:
            self._phase = BUSY
            inference.complete()

    def _body_timed_out(self) -> None:
        if self.inference is None:
            super()._body_timed_out()
        else:
            self.inference.time_out(self.body_late())

    def resume_writing(self) -> None:
        super().resume_writing()
        self.flow.resume_reading()  # paused by write_response while the client did not read

    def _inference_cycle(self, endpoint: InferenceEndpoint) -> InferenceCycle | None:
        parser = self.parser
        if parser.get_method() != b"POST" or self.expect_100_continue or parser.should_upgrade():
            return None
        matched = _route(self.url)
        if matched is None:
            return None
        content_length = header_length = request_id = None
        for name, value in self.headers:
            if name == _CONTENT_LENGTH:
                content_length = value
            elif name == _HEADER_LENGTH:
                header_length = value
            elif name == REQUEST_ID_HEADER:
                request_id = value
        keep_alive = parser.get_http_version() != "1.0" and parser.should_keep_alive()
        cycle = InferenceCycle(self, endpoint, matched, content_length, header_length, request_id, keep_alive)
        if endpoint.tracer is not None:
            cycle.trace = endpoint.tracer.start_from(matched[0], self.headers)
        return cycle


class InferenceCycle:
    """One inference request on an :class:`InferenceHttpProtocol` connection.

    Queued (pipelined behind another request) -> begun (collecting the body, its bytes held against the byte
    budget) -> admitted (body complete: a queue slot) -> answered. An error found before the whole body arrived is
    answered at once and the connection is closed (the rest of the body is never read).
    """

    __slots__ = (
        "admitted", "body", "budget", "chunks", "content_length", "disconnected", "endpoint", "header_length", "held",
        "keep_alive", "kind", "more_body", "name", "protocol", "request", "response_complete",
        "service", "size", "started", "trace",
    )  # fmt: skip

    def __init__(  # noqa: PLR0917 - one call site, the protocol's
        self,
        protocol: InferenceHttpProtocol,
        endpoint: InferenceEndpoint,
        matched: tuple[str, str],
        content_length: bytes | None,
        header_length: bytes | None,
        request_id: bytes | None,
        keep_alive: bool,
    ) -> None:
        self.protocol = protocol
        self.endpoint = endpoint
        self.budget = endpoint.budget
        self.kind, self.name = matched
        self.content_length = content_length
        self.header_length = header_length
        self.request = RequestId(request_id)
        self.body: bytes | None = None  # the whole body, once complete (for the prediction log)
        self.keep_alive = keep_alive
        self.chunks: list[bytes] = []
        self.size = 0
        self.held = 0  # bytes held against the budget
        self.more_body = True
        self.response_complete = False
        self.disconnected = False
        self.admitted = False
        self.service: InferenceService | None = None  # set once begun
        self.started = 0.0
        self.trace: RequestTrace | None = None  # a sampled request, when tracing is on

    async def run_asgi(self, _app: Any) -> None:
        """How uvicorn starts a pipelined request when its turn comes."""
        self.begin()

    def begin(self) -> None:
        self.started = time.perf_counter()
        try:
            self.service = self.endpoint.open(self.name, self.content_length)
            if self.size:  # body received while queued
                self.endpoint.check_size(self.size)
                self.budget.take(self.size)
                self.held = self.size
        except Exception as exc:
            self._fail(exc)
            return
        if not self.more_body:
            self._process()

    def receive(self, chunk: bytes) -> None:
        if self.response_complete:
            return
        self.chunks.append(chunk)
        size = len(chunk)
        self.size += size
        if self.service is not None:
            budget = self.budget
            if self.size > self.endpoint.limit or budget.used + size > budget.limit:
                try:  # the same checks, raising the error to answer
                    self.endpoint.check_size(self.size)
                    budget.take(size)
                except Exception as exc:
                    self._fail(exc)
                    return
            else:
                budget.used += size
            self.held += size

    def complete(self) -> None:
        self.more_body = False
        if self.service is not None and not self.response_complete:
            self._process()

    def time_out(self, message: str) -> None:
        """The body did not arrive in time (the protocol's timer): 408, and the connection closes."""
        if self.response_complete:
            self.protocol.transport.close()
        else:
            self._fail(RequestTimeout(message))

    @property
    def message_event(self) -> InferenceCycle:
        """uvicorn calls ``cycle.message_event.set()`` when the connection is lost. A property, not an attribute
        holding the cycle (or a helper holding it back): either is a reference cycle, which only the garbage
        collector frees, one per request."""
        return self

    def set(self) -> None:
        """``message_event.set()``: the connection is lost."""
        self.connection_lost()

    def connection_lost(self) -> None:
        if self.disconnected and self.more_body and self.service is not None and not self.response_complete:
            self.response_complete = True  # the client left before its body arrived: counted, never answered
            self._release()
            self.endpoint.record(CLIENT_GONE, self.started)
            self._finish_trace(CLIENT_GONE)

    def _process(self) -> None:
        service = self.service
        assert service is not None
        chunks = self.chunks
        body = self.body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self.chunks = []
        token = current_request.set(self.request)  # the model's (and handler's) log lines carry the request's id
        try:
            self.held += self.endpoint.admit(service, body, self.header_length)
            self.admitted = True
            inference = self.endpoint.infer(service, self.kind, body, self.header_length, self.trace)
            if not service.never_waits or len(body) > OFFLOAD_ABOVE_BYTES:
                self._step(inference)  # runs until it waits; each wait's callback runs the next step
                return
            reply = run_now(inference)
        except Exception as exc:
            self._fail(exc)
            return
        finally:
            current_request.reset(token)
        self._succeed(reply.body, reply.content_type, reply.header_length)

    def _step(self, inference: Coroutine[Any, Any, Any], _done: object = None) -> None:
        """Run ``inference`` until it waits on a future (a batch, a worker thread), and go on from that future's
        callback; answer when it returns or raises. What a task per request would do, without the task: no task
        object, no context copy of its own and no loop turn before the first step (about 2 µs a request). Each
        callback runs in the context of the step that registered it, so the request's id (``current_request``)
        stays set. A connection with a request in progress keeps uvicorn's graceful shutdown waiting, as a task
        would; the batcher's shutdown answers what still waits (503)."""
        try:
            waiting = inference.send(None)
        except StopIteration as done:
            reply = done.value
            self._succeed(reply.body, reply.content_type, reply.header_length)
            return
        except Exception as exc:
            self._fail(exc)
            return
        if waiting is None:  # a bare yield (asyncio.sleep(0)): the next loop turn
            asyncio.get_running_loop().call_soon(self._step, inference)
        else:  # an asyncio future (it has set its own _asyncio_future_blocking; nothing reads it here)
            waiting.add_done_callback(functools.partial(self._step, inference))

    def _succeed(self, body: bytes, content_type: bytes, header_length: int | None) -> None:
        extra = [] if header_length is None else [(_HEADER_LENGTH, str(header_length).encode())]
        self._respond(200, content_type, body, extra)

    def _fail(self, exc: BaseException) -> None:
        status, extra, body = self.endpoint.failure(exc, self.request)
        self._respond(status, JSON, body, extra)

    def _release(self) -> None:
        if self.admitted:
            self.admitted = False
            assert self.service is not None
            self.service.release()
        if self.held:
            self.budget.give_back(self.held)
            self.held = 0
        self.service = None

    def _respond(self, status: int, content_type: bytes, body: bytes, extra: Headers) -> None:
        if self.admitted:  # _release, inlined
            self.admitted = False
            assert self.service is not None
            self.service.release()
        if self.held:
            self.budget.used -= self.held
            self.held = 0
        self.service = None
        self.response_complete = True
        self.chunks = []
        endpoint = self.endpoint
        endpoint.record(status, self.started)
        trace = self.trace
        if trace is not None:
            self._respond_traced(trace, status, content_type, body, extra)
            return
        predictions = endpoint.predictions
        if predictions is not None:
            predictions.countdown -= 1  # PredictionLog.sample, inlined: most requests end here
            if not predictions.countdown:
                predictions.countdown = predictions.gap()
                self._respond_logged(status, content_type, body, extra)
                return
        self.body = None
        if self.disconnected:
            return
        self._write(status, content_type, body, extra)

    def _respond_traced(
        self, trace: RequestTrace, status: int, content_type: bytes, body: bytes, extra: Headers
    ) -> None:
        """A sampled request (tracing on): its spans end and go to the exporter, then the answer is written with its
        ``traceparent`` (writing it may start the next pipelined request at once: not this request's time)."""
        extra = self.endpoint.with_traceparent(extra, trace)
        self._finish_trace(status)
        if self.endpoint.predictions is not None and self.endpoint.predictions.sample():
            self._respond_logged(status, content_type, body, extra)
        else:
            self.body = None
            if not self.disconnected:
                self._write(status, content_type, body, extra)

    def _finish_trace(self, status: int) -> None:
        trace, self.trace = self.trace, None
        tracer = self.endpoint.tracer
        if trace is not None and tracer is not None:
            tracer.finish(trace, status)

    def _respond_logged(self, status: int, content_type: bytes, body: bytes, extra: Headers) -> None:
        """A sampled request: the answer, with its request id, then its record for the prediction log."""
        endpoint, request_id = self.endpoint, self.request
        if not self.disconnected:
            self._write(status, content_type, body, endpoint.with_request_id(extra, request_id))
        request, self.body = self.body, None
        predictions = endpoint.predictions
        assert predictions is not None
        predictions.offer(request_id.get(), self.kind, status, time.perf_counter() - self.started, request, body)

    def _write(self, status: int, content_type: bytes, body: bytes, extra: Headers) -> None:
        protocol = self.protocol
        # while draining, every answer closes its connection: a kept-alive client reconnects through the Service,
        # whose endpoints no longer list this pod, instead of racing the listener's close; an answer given before
        # a large body arrived closes it too (its rest is never read)
        keep_alive = (
            self.keep_alive
            and (not self.more_body or drains(self.content_length))
            and not self.endpoint.runtime.draining
        )
        protocol.write_response(status, content_type, body, extra, keep_alive)
        if not keep_alive:
            protocol.transport.close()
        protocol.on_response_complete()
