"""uvicorn's httptools protocol with limits against hostile clients: both HTTP layers of ``serve`` use it.

uvicorn starts no timer before a request's first response, reads a request head of any size (httptools joins a
header's pieces as they arrive: quadratic in its size) and, after an answer given before the body, keeps reading
and dropping the rest of that body. :class:`GuardedHttpProtocol` adds, per connection:

- read timeouts: a request's head must be complete ``header_timeout_seconds`` after its first byte, and its body
  ``body_timeout_seconds`` after that (the whole request within the sum of both, from its first byte); a new
  connection must start its first request within ``header_timeout_seconds``. Else 408 and the connection is
  closed. Between requests the keep-alive timeout applies as before.
- a head size limit: beyond ``max_header_bytes`` (checked before the parser sees the bytes, give or take one read)
  431 and the connection is closed.
- an answer given before the body was all received closes the connection instead of reading and dropping the
  rest, unless the declared body is small (``routes.DRAIN_AT_MOST``).

All of it runs from one timer per connection, re-armed when it fires (never per request): each request costs one
``loop.time()`` reading (at its first byte) and a few attribute writes in the parser callbacks. ``--http uvicorn``
is uvicorn's protocol with this class on top; ``--http fast`` (:mod:`http_protocol`) builds on it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from modelapi_runtime.app import RuntimeApp
from modelapi_runtime.errors import Headers, error_response
from modelapi_runtime.exceptions import HeaderTooLarge, RequestTimeout
from modelapi_runtime.metrics import Metrics
from modelapi_runtime.routes import TIMED_OUT, drains
from modelapi_runtime.settings import RuntimeSettings

JSON = b"application/json"

# Where the parser is on a connection. The head phases come first: the head size limit applies to them.
IDLE = 0  # between requests (keep-alive timeout)
WAITING = 1  # connected, no byte of the first request yet (head timeout, from the connection's opening)
HEAD = 2  # a request's head is arriving (head timeout)
BODY = 3  # its body is arriving (body timeout)
BUSY = 4  # the request is complete and being answered (no read timeout)


def _default(field: str) -> Any:
    return RuntimeSettings.model_fields[field].default


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's ``HttpToolsProtocol`` with read timeouts (408), a head size limit (431) and no body draining."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        app = config.app
        runtime = app.inference.runtime if isinstance(app, RuntimeApp) else None
        settings = runtime.settings if runtime is not None else None
        self.metrics: Metrics | None = runtime.metrics if runtime is not None else None
        self.header_timeout: float = settings.header_timeout_seconds if settings else _default("header_timeout_seconds")
        self.body_timeout: float = settings.body_timeout_seconds if settings else _default("body_timeout_seconds")
        self.max_header_bytes: int = settings.max_header_bytes if settings else _default("max_header_bytes")
        # the timer's longest sleep: a phase that begins while it sleeps is checked by its own deadline
        self._body_deadline = self.header_timeout + self.body_timeout  # from the request's first byte
        self._tick = min(self.header_timeout, self.body_timeout, float(self.timeout_keep_alive))
        self._phase = WAITING
        self._since = 0.0  # when the request began (HEAD, BODY), when the connection went idle (IDLE)
        self._head_bytes = 0  # bytes received while in a head phase, since the last complete head
        self._date_headers: list[tuple[bytes, bytes]] | None = None
        self._date_header_bytes = b""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._since = self.loop.time()
        self.timeout_keep_alive_task = self.loop.call_later(self._tick, self._on_timer)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None

    def data_received(self, data: bytes) -> None:
        if self._phase <= HEAD:
            self._head_bytes += len(data)
            if self._head_bytes > self.max_header_bytes and not self._head_ends_in(data):
                self._refuse(HeaderTooLarge(f"the request head exceeds the limit of {self.max_header_bytes} bytes"))
                return
        # uvicorn's, inlined (one call less per read), without its keep-alive timer cancel
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()

    def handle_websocket_upgrade(self) -> None:
        # the connection is handed to uvicorn's websocket protocol: this one's timer must not answer on it
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None
        super().handle_websocket_upgrade()

    def _head_ends_in(self, data: bytes) -> bool:
        """Whether the head being received ends in ``data`` within the limit (the rest is body or next requests)."""
        allowed = self.max_header_bytes - (self._head_bytes - len(data))
        return allowed > 0 and data.find(b"\r\n\r\n", 0, allowed + 4) != -1

    def _unset_keepalive_if_required(self) -> None:
        pass  # the one timer of this connection stays armed; the parser callbacks move the phase

    # Parser callbacks: the phase moves with the parser.

    def on_message_begin(self) -> None:
        self._phase, self._since = HEAD, self.loop.time()
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._phase, self._head_bytes = BODY, 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._message_complete()
        super().on_message_complete()

    def _message_complete(self) -> None:
        cycle = self.cycle
        if cycle is not None and cycle.response_complete:  # answered early, the small rest read: idle from now
            self._phase, self._since = IDLE, self.loop.time()
        else:
            self._phase = BUSY

    def on_response_complete(self) -> None:
        # uvicorn's, without a keep-alive timer per response, and closing when the body is still arriving
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        if self._phase == BODY and not self.pipeline and not drains(self._content_length()):
            self.transport.close()  # answered before its (large) body was received: do not read and drop it
            return
        if self.flow.read_paused:
            self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        if self._phase == BUSY:
            self._phase, self._since = IDLE, self.loop.time()

    def _content_length(self) -> bytes | None:
        for name, value in self.headers:
            if name == b"content-length":
                return value
        return None

    # The timer

    def _on_timer(self) -> None:
        self.timeout_keep_alive_task = None
        if self.transport.is_closing():
            return
        now = self.loop.time()
        phase = self._phase
        if phase == BUSY:
            deadline = now + self._tick  # the server is answering: nothing to time out
        elif phase == IDLE:
            deadline = self._since + self.timeout_keep_alive
        elif self.flow.read_paused:  # this server stopped reading (pipelining, a slow reader): not the client's fault
            self._since = now
            deadline = now + self._tick
        else:
            deadline = self._since + (self._body_deadline if phase == BODY else self.header_timeout)
        if now < deadline:
            self.timeout_keep_alive_task = self.loop.call_later(min(deadline - now, self._tick), self._on_timer)
        elif phase == IDLE:
            self.transport.close()  # keep-alive timeout: nothing to answer
        elif phase == BODY:
            self._body_timed_out()
        else:
            self._refuse(RequestTimeout(f"the request head did not arrive within {self.header_timeout:g} s"))

    def timeout_keep_alive_handler(self) -> None:  # uvicorn's name; this protocol's timer is _on_timer
        self._on_timer()

    def _body_timed_out(self) -> None:
        """408 for a request whose body stalled (an ASGI request here; the fast layer answers its own)."""
        cycle = self.cycle
        if cycle is None or cycle.response_started:  # answered already: only the close is left
            self.transport.close()
            return
        cycle.scope[TIMED_OUT] = True  # type: ignore[literal-required]  # the endpoint counts a 408, not a 499
        self._refuse(RequestTimeout(self.body_late()), count=False)

    def body_late(self) -> str:
        return f"the request body did not arrive within {self._body_deadline:g} s of the request's first byte"

    def _refuse(self, exc: RequestTimeout | HeaderTooLarge, *, count: bool = True) -> None:
        """Answer ``exc`` and close: the connection is in no state to carry another request."""
        status, extra, body = error_response(exc)
        if count and self.metrics is not None and self._phase != WAITING:  # a request had begun
            self.metrics.count(status)
        self.write_response(status, JSON, body, extra, keep_alive=False)
        self.transport.close()

    def write_response(self, status: int, content_type: bytes, body: bytes, extra: Headers, keep_alive: bool) -> None:
        """Status line, uvicorn's default headers (``date``), ours and the body in one ``write()``."""
        default = self.server_state.default_headers
        if default is not self._date_headers:  # uvicorn replaces the list once a second
            self._date_headers = default
            self._date_header_bytes = b"".join(b"%s: %s\r\n" % pair for pair in default)
        parts = [STATUS_LINE[status], self._date_header_bytes, b"content-type: ", content_type,
                 b"\r\ncontent-length: ", str(len(body)).encode(), b"\r\n"]  # fmt: skip
        for name, value in extra:
            parts += (name, b": ", value, b"\r\n")
        if not keep_alive:
            parts.append(b"connection: close\r\n")
        parts += (b"\r\n", body)
        self.transport.write(b"".join(parts))
        if self.flow.write_paused:  # the client is not reading its responses: stop reading its requests
            self.flow.pause_reading()
