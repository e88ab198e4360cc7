"""Tracing: W3C Trace Context in, OTLP/HTTP (JSON) out, nothing at all when off.

Off (the default, no ``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT``), the request path holds ``tracer = None`` and does no
span or context work. On, a request that is sampled gets a :class:`RequestTrace`: a few numbers (ids and the
``perf_counter`` times the data plane already takes for its phase metrics). Spans are built from them only in the
exporter's thread, after the answer is written:

- one ``SERVER`` span per request (``POST /v2/models/{name}/infer``), a child of the caller's span when the request
  has a valid ``traceparent`` header, else the root of a new trace; its ``traceparent`` is returned in the answer;
- ``decode``, ``queue`` (waiting in the batcher), ``inference`` and ``encode`` children;
- one ``batch`` span per model run of the dynamic batcher (a root of its own trace), which each request's
  ``inference`` span links to.

Sampling follows ``OTEL_TRACES_SAMPLER`` (default ``parentbased_always_on``) and ``OTEL_TRACES_SAMPLER_ARG``: with a
parent-based sampler a caller's sampled trace is always recorded and an unsampled one never is. A malformed
``traceparent`` (wrong version, all-zero ids, bad lengths, not lowercase hex) is ignored: the request starts a new
trace, never an error.

The exporter is a thread with a bounded queue (``OTEL_BSP_MAX_QUEUE_SIZE`` spans): a full queue drops the trace and
counts its spans; a collector that fails or cannot be reached loses that batch, is counted and logged at most once
per interval; serving goes on.

Standard library only: the activator (a light proxy) uses it too.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

log = logging.getLogger(__name__)

TRACEPARENT = b"traceparent"
TRACESTATE = b"tracestate"
SERVICE_NAME = "modelapi-runtime"
SCOPE = "modelapi"
SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
ERROR_LOG_INTERVAL_S = 60.0
MAX_TRACESTATE = 512  # the W3C limit a vendor may keep; a longer one is dropped
# OTLP span kinds
INTERNAL, SERVER = 1, 2
_HEX = frozenset("0123456789abcdef")
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16


# -- W3C Trace Context ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Parent:
    """A caller's span, from a valid ``traceparent`` (and its ``tracestate``, when sane)."""

    trace_id: str
    span_id: str
    sampled: bool
    state: str | None = None


def _hex(text: str, length: int) -> bool:
    return len(text) == length and _HEX.issuperset(text)


def parse_traceparent(value: bytes | None, state: bytes | None = None) -> Parent | None:
    """The caller's span from ``version-traceid-parentid-flags``, or None when absent or malformed (W3C Trace
    Context: version ``ff`` and all-zero ids are invalid; a later version may append fields after a ``-``)."""
    if value is None or len(value) < 55 or not value.isascii():
        return None
    text = value.decode("ascii").strip(" \t")
    version = text[:2]
    if not _hex(version, 2) or version == "ff" or (version == "00" and len(text) != 55):
        return None
    if len(text) > 55 and text[55] != "-":
        return None
    if text[2] != "-" or text[35] != "-" or text[52] != "-":
        return None
    trace_id, span_id, flags = text[3:35], text[36:52], text[53:55]
    if not (_hex(trace_id, 32) and _hex(span_id, 16) and _hex(flags, 2)):
        return None
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return Parent(trace_id, span_id, bool(int(flags, 16) & 1), _tracestate(state))


def _tracestate(value: bytes | None) -> str | None:
    if value is None or not value or len(value) > MAX_TRACESTATE or not value.isascii():
        return None
    text = value.decode("ascii").strip(" \t")
    return text if text and text.isprintable() else None


def traceparent(trace_id: str, span_id: str, sampled: bool = True) -> bytes:
    return f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}".encode("ascii")


def new_trace_id() -> str:
    return f"{random.getrandbits(128) or 1:032x}"


def new_span_id() -> str:
    return f"{random.getrandbits(64) or 1:016x}"


# -- configuration --------------------------------------------------------------------------------------------------


class TracingConfigError(ValueError):
    """An ``OTEL_*`` variable with a value the runtime cannot use (the message names it)."""


@dataclass(frozen=True, slots=True)
class TraceConfig:
    """From the standard ``OTEL_*`` environment variables (:meth:`from_env`)."""

    url: str  # where spans are POSTed: .../v1/traces
    service_name: str = SERVICE_NAME
    sampler: str = "parentbased_always_on"
    ratio: float = 1.0
    schedule_delay_s: float = 1.0
    max_queue_spans: int = 2048
    max_export_spans: int = 512
    timeout_s: float = 10.0
    headers: tuple[tuple[str, str], ...] = ()
    resource: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str], service_name: str = SERVICE_NAME) -> TraceConfig | None:
        """The configuration, or None when tracing is off: no OTLP endpoint, ``OTEL_TRACES_EXPORTER=none`` or
        ``OTEL_SDK_DISABLED=true``. Raises :class:`TracingConfigError` for a value it cannot use."""
        if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            return None
        exporter = env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
        if exporter == "none":
            return None
        if exporter != "otlp":
            raise TracingConfigError(f"OTEL_TRACES_EXPORTER={exporter!r}: only otlp (or none) is supported")
        url = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        if not url:
            base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
            if not base:
                return None
            url = base.rstrip("/") + "/v1/traces"
        if not url.startswith(("http://", "https://")):
            raise TracingConfigError(f"OTLP endpoint {url!r}: expected http://HOST:PORT or https://HOST:PORT")
        protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or ""
        if protocol.strip() == "grpc":
            raise TracingConfigError("OTEL_EXPORTER_OTLP_PROTOCOL=grpc: only OTLP over HTTP is supported (port 4318)")
        sampler = env.get("OTEL_TRACES_SAMPLER", "parentbased_always_on").strip().lower()
        if sampler not in SAMPLERS:
            raise TracingConfigError(f"OTEL_TRACES_SAMPLER={sampler!r}: expected one of {', '.join(SAMPLERS)}")
        return cls(
            url=url,
            service_name=env.get("OTEL_SERVICE_NAME", "").strip() or service_name,
            sampler=sampler,
            ratio=_number(env, "OTEL_TRACES_SAMPLER_ARG", 1.0, 0.0, 1.0),
            schedule_delay_s=_number(env, "OTEL_BSP_SCHEDULE_DELAY", 1000, 1, 3_600_000) / 1000,
            max_queue_spans=int(_number(env, "OTEL_BSP_MAX_QUEUE_SIZE", 2048, 1, 1_000_000)),
            max_export_spans=int(_number(env, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512, 1, 1_000_000)),
            timeout_s=_number(env, "OTEL_EXPORTER_OTLP_TIMEOUT", 10_000, 1, 600_000) / 1000,
            headers=_pairs(env.get("OTEL_EXPORTER_OTLP_HEADERS", "")),
            resource=_pairs(env.get("OTEL_RESOURCE_ATTRIBUTES", "")),
        )


def _number(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise TracingConfigError(f"{name}={text!r}: expected a number from {low:g} to {high:g}") from None
    if not low <= value <= high:
        raise TracingConfigError(f"{name}={text!r}: expected a number from {low:g} to {high:g}")
    return value


def _pairs(text: str) -> tuple[tuple[str, str], ...]:
    """``k1=v1,k2=v2`` (OTEL_EXPORTER_OTLP_HEADERS, OTEL_RESOURCE_ATTRIBUTES), values percent-decoded."""
    pairs = []
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            pairs.append((key.strip(), urllib.parse.unquote(value.strip())))
    return tuple(pairs)


# -- spans ----------------------------------------------------------------------------------------------------------


class BatchRun:
    """One model run of the dynamic batcher, as a span of its own trace (the requests' inference spans link it)."""

    __slots__ = ("end", "epoch_ns", "failed", "rows", "span_id", "start", "trace_id")

    def __init__(self, rows: int) -> None:
        self.trace_id = new_trace_id()
        self.span_id = new_span_id()
        self.rows = rows
        self.epoch_ns = time.time_ns()
        self.start = time.perf_counter()
        self.end = self.start
        self.failed = False

    def spans(self, attributes: list[str]) -> list[str]:
        ns = _clock(self.epoch_ns, self.start)
        attrs = [*attributes, _int("modelapi.batch_size", self.rows)]
        return [_span(self.trace_id, self.span_id, None, "batch", INTERNAL, ns(self.start), ns(self.end), attrs,
                      error=self.failed)]  # fmt: skip


class RequestTrace:
    """A sampled request: its ids and the times of its phases (``perf_counter`` seconds)."""

    __slots__ = (
        "batch", "decode_start", "decoded", "encode_start", "encoded", "end", "epoch_ns", "inferred", "parent_id",
        "protocol", "queued", "rows", "span_id", "start", "state", "status", "trace_id",
    )  # fmt: skip

    def __init__(self, parent: Parent | None, protocol: str, trace_id: str | None = None) -> None:
        self.trace_id = parent.trace_id if parent is not None else (trace_id or new_trace_id())
        self.parent_id = parent.span_id if parent is not None else None
        self.state = parent.state if parent is not None else None
        self.span_id = new_span_id()
        self.protocol = protocol
        self.epoch_ns = time.time_ns()
        self.start = self.end = time.perf_counter()
        self.status = 0
        # the phases' ends, set by :meth:`phases` once the answer is encoded (decode starts with the request)
        self.decode_start = self.decoded = self.queued = self.inferred = self.encode_start = self.encoded = 0.0
        self.rows = 0  # rows of this request's model run (of its batch, when batched)
        self.batch: BatchRun | None = None

    def header(self) -> bytes:
        """The ``traceparent`` of this request's server span (sent back in the answer)."""
        return traceparent(self.trace_id, self.span_id)

    def phases(  # noqa: PLR0917 - the data plane's own timestamps, in order
        self,
        decode_start: float,
        decoded: float,
        queue_s: float,
        infer_s: float,
        answered: float,
        encoded: float,
        rows: int,
    ) -> None:
        """Decode ran from ``decode_start`` to ``decoded``; then ``queue_s`` in the batcher's queue and
        ``infer_s`` in the model (0 and the rest when not batched); encode from ``answered`` (the model's outputs
        are back) to ``encoded``."""
        self.decode_start, self.decoded = decode_start, decoded
        self.queued = min(decoded + queue_s, answered)
        self.inferred = min(self.queued + infer_s, answered) if queue_s or infer_s else answered
        self.encode_start, self.encoded = answered, encoded
        if self.batch is None:
            self.rows = rows

    def spans(self, attributes: list[str]) -> list[str]:
        ns = _clock(self.epoch_ns, self.start)
        route = _ROUTES[self.protocol]
        trace, server = self.trace_id, self.span_id
        attrs = [*attributes, _PROTOCOL_ATTRIBUTE[self.protocol]]
        server_attrs = [*attrs, *_SERVER_ATTRIBUTES[self.protocol], _int("http.response.status_code", self.status)]
        error = self.status >= 500
        spans = [_span(trace, server, self.parent_id, f"POST {route}", SERVER, ns(self.start), ns(self.end),
                       server_attrs, error=error, state=self.state)]  # fmt: skip
        if self.encoded:
            links = [] if self.batch is None else [_link(self.batch.trace_id, self.batch.span_id)]
            rows = self.batch.rows if self.batch is not None else self.rows
            for name, begin, end, extra, link in (
                ("decode", self.decode_start, self.decoded, [], []),
                ("queue", self.decoded, self.queued, [], []),
                ("inference", self.queued, self.inferred, [_int("modelapi.batch_size", rows)], links),
                ("encode", self.encode_start, self.encoded, [], []),
            ):
                spans.append(
                    _span(
                        trace, new_span_id(), server, name, INTERNAL, ns(begin), ns(end), [*attrs, *extra], links=link
                    )
                )
        return spans


class HeldTrace:
    """A request the activator held for a model at zero replicas, then forwarded: a ``SERVER`` span (its whole time
    in the activator) with a ``hold`` child (until a replica was ready). The request goes on with the server span as
    its parent (:meth:`header`), so the runtime's spans join the same trace."""

    __slots__ = ("end", "epoch_ns", "model", "namespace", "parent_id", "ready", "span_id", "start", "state", "status",
                 "trace_id")  # fmt: skip

    def __init__(self, parent: Parent | None, namespace: str, model: str) -> None:
        self.trace_id = parent.trace_id if parent is not None else new_trace_id()
        self.parent_id = parent.span_id if parent is not None else None
        self.state = parent.state if parent is not None else None
        self.span_id = new_span_id()
        self.namespace, self.model = namespace, model
        self.epoch_ns = time.time_ns()
        self.start = self.ready = self.end = time.perf_counter()
        self.status = 0

    def header(self) -> str:
        return traceparent(self.trace_id, self.span_id).decode("ascii")

    def spans(self, attributes: list[str]) -> list[str]:
        ns = _clock(self.epoch_ns, self.start)
        attrs = [*attributes, _str("modelapi.model", self.model), _str("k8s.namespace.name", self.namespace)]
        server_attrs = [*attrs, _int("http.response.status_code", self.status)]
        return [
            _span(self.trace_id, self.span_id, self.parent_id, "activator", SERVER, ns(self.start), ns(self.end),
                  server_attrs, error=self.status >= 500, state=self.state),
            _span(self.trace_id, new_span_id(), self.span_id, "hold", INTERNAL, ns(self.start), ns(self.ready), attrs),
        ]  # fmt: skip


Traced = RequestTrace | BatchRun | HeldTrace


def _clock(epoch_ns: int, perf: float) -> Callable[[float], int]:
    """``perf_counter`` seconds -> nanoseconds since the epoch, anchored at (``epoch_ns``, ``perf``)."""
    return lambda t: epoch_ns + int((t - perf) * 1e9)


def _str(key: str, value: str) -> str:
    """One OTLP/JSON attribute with a string value, as JSON text (spans are written as text: building dicts and
    encoding them cost about twice as much per request)."""
    return f'{{"key":{json.dumps(key)},"value":{{"stringValue":{json.dumps(value)}}}}}'


def _int(key: str, value: int) -> str:
    return f'{{"key":{json.dumps(key)},"value":{{"intValue":"{value}"}}}}'


def _link(trace_id: str, span_id: str) -> str:
    return f'{{"traceId":"{trace_id}","spanId":"{span_id}"}}'


def _span(  # noqa: PLR0917 - an OTLP span's fields
    trace_id: str,
    span_id: str,
    parent_id: str | None,
    name: str,
    kind: int,
    start_ns: int,
    end_ns: int,
    attributes: list[str],
    *,
    links: list[str] | None = None,
    error: bool = False,
    state: str | None = None,
) -> str:
    """One OTLP/JSON span as JSON text (ids are hex, as OTLP/JSON wants them; ``name`` is one of ours, plain)."""
    text = (
        f'{{"traceId":"{trace_id}","spanId":"{span_id}","name":"{name}","kind":{kind},'
        f'"startTimeUnixNano":"{start_ns}","endTimeUnixNano":"{max(end_ns, start_ns)}",'
        f'"attributes":[{",".join(attributes)}]'
    )
    if parent_id is not None:
        text += f',"parentSpanId":"{parent_id}"'
    if state:
        text += f',"traceState":{json.dumps(state)}'
    if links:
        text += f',"links":[{",".join(links)}]'
    if error:
        text += ',"status":{"code":2}'
    return text + "}"


# -- the tracer (the request path) ----------------------------------------------------------------------------------


class Tracer:
    """Sampling decisions and finished traces (on the event loop's thread); the :class:`Exporter` does the rest."""

    def __init__(self, config: TraceConfig, exporter: Exporter) -> None:
        self.config = config
        self.exporter = exporter
        sampler = config.sampler
        self.parent_based = sampler.startswith("parentbased_")
        root = sampler.removeprefix("parentbased_")
        # the root sampler as a bound on the trace id's lower 64 bits (the OpenTelemetry TraceIdRatioBased rule)
        ratio = {"always_on": 1.0, "always_off": 0.0}.get(root, config.ratio)
        self.bound = int(ratio * (1 << 64))

    def _root_sampled(self, trace_id: str) -> bool:
        return int(trace_id[16:], 16) < self.bound

    def start(self, protocol: str, value: bytes | None, state: bytes | None = None) -> RequestTrace | None:
        """A trace for a request with these ``traceparent``/``tracestate`` values, or None (not sampled)."""
        parent = parse_traceparent(value, state)
        if parent is not None:
            if self.parent_based:
                return RequestTrace(parent, protocol) if parent.sampled else None
            return RequestTrace(parent, protocol) if self._root_sampled(parent.trace_id) else None
        trace_id = new_trace_id()
        return RequestTrace(None, protocol, trace_id) if self._root_sampled(trace_id) else None

    def start_from(self, protocol: str, headers: Iterable[tuple[bytes, bytes]]) -> RequestTrace | None:
        """:meth:`start` with the values of a request's (lower-case) headers."""
        value = state = None
        for name, header in headers:
            if name == TRACEPARENT:
                value = header
            elif name == TRACESTATE:
                state = header
        return self.start(protocol, value, state)

    def finish(self, trace: RequestTrace, status: int) -> None:
        trace.end = time.perf_counter()
        trace.status = status
        self.exporter.offer(trace, 5 if trace.encoded else 1)

    def hold(self, namespace: str, model: str, value: str | None, state: str | None) -> HeldTrace | None:
        """The activator's trace of a request for ``namespace/model`` with these header values, or None."""
        parent = parse_traceparent(
            None if value is None else value.encode("latin-1"), None if state is None else state.encode("latin-1")
        )
        if parent is not None:
            sampled = parent.sampled if self.parent_based else self._root_sampled(parent.trace_id)
            return HeldTrace(parent, namespace, model) if sampled else None
        trace = HeldTrace(None, namespace, model)
        return trace if self._root_sampled(trace.trace_id) else None

    def finish_hold(self, trace: HeldTrace, status: int) -> None:
        trace.end = time.perf_counter()
        trace.status = status
        self.exporter.offer(trace, 2)

    def batch_run(self, rows: int) -> BatchRun:
        return BatchRun(rows)

    def finish_batch(self, run: BatchRun, failed: bool = False) -> None:
        run.end = time.perf_counter()
        run.failed = failed
        self.exporter.offer(run, 1)


# -- the exporter (its own thread) ----------------------------------------------------------------------------------


Post = Callable[[str, bytes, Mapping[str, str], float], None]


def post_json(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> None:
    """POST one OTLP/JSON request; raises on a connection error or a status other than 2xx."""
    request = urllib.request.Request(url, data=body, method="POST", headers=dict(headers))  # noqa: S310 - http(s) only
    with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310 - checked in TraceConfig
        answer.read()


class Exporter:
    """The bounded queue (request path) and the thread that POSTs batches of spans to the collector."""

    def __init__(
        self,
        config: TraceConfig,
        attributes: list[str],
        *,
        post: Post = post_json,
        on_exported: Callable[[int], None] | None = None,
        on_dropped: Callable[[int], None] | None = None,
        on_error: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.attributes = attributes
        self.post = post
        self.on_exported = on_exported or _ignore
        self.on_dropped = on_dropped or _ignore
        self.on_error = on_error or (lambda: None)
        self.queue: collections.deque[tuple[Traced, int]] = collections.deque()
        # each written by one thread only: queued spans = offered - taken
        self.offered = self.taken = 0
        self.wake = threading.Event()
        self.stopping = False
        self.thread: threading.Thread | None = None
        self.error_logged_at: float | None = None
        self.unlogged_errors = 0
        resource = [_str("service.name", config.service_name)]
        resource += [_str(key, value) for key, value in config.resource if key != "service.name"]
        self.resource = f'{{"attributes":[{",".join(resource)}]}}'
        self.headers = {"Content-Type": "application/json", **dict(config.headers)}

    def offer(self, item: Traced, spans: int) -> None:
        if self.offered - self.taken + spans > self.config.max_queue_spans:
            self.on_dropped(spans)
            return
        self.queue.append((item, spans))
        self.offered += spans
        if self.offered - self.taken >= self.config.max_export_spans and not self.wake.is_set():
            self.wake.set()

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="trace-export", daemon=True)
        self.thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Export what is queued, then end the thread (at most ``timeout`` seconds)."""
        self.stopping = True
        self.wake.set()
        if self.thread is not None:
            self.thread.join(timeout)
            self.thread = None

    def _run(self) -> None:
        while True:
            self.wake.wait(self.config.schedule_delay_s)
            self.wake.clear()
            stopping = self.stopping
            self.flush()
            if stopping:
                return

    def flush(self) -> None:
        """Export everything queued, in batches of at most ``max_export_spans`` spans."""
        while self.queue:
            spans: list[str] = []
            taken = 0
            while self.queue and len(spans) < self.config.max_export_spans:
                item, count = self.queue.popleft()
                taken += count
                spans += item.spans(self.attributes)
            self.taken += taken
            self._export(spans)

    def _export(self, spans: list[str]) -> None:
        body = (
            f'{{"resourceSpans":[{{"resource":{self.resource},'
            f'"scopeSpans":[{{"scope":{{"name":"{SCOPE}"}},"spans":[{",".join(spans)}]}}]}}]}}'
        ).encode()
        try:
            self.post(self.config.url, body, self.headers, self.config.timeout_s)
        except Exception as exc:  # unreachable, refused, a 4xx/5xx: those spans are lost, serving goes on
            self.on_dropped(len(spans))
            self.on_error()
            self._failed(exc)
        else:
            self.on_exported(len(spans))

    def _failed(self, exc: Exception) -> None:
        now = time.monotonic()
        if self.error_logged_at is not None and now - self.error_logged_at < ERROR_LOG_INTERVAL_S:
            self.unlogged_errors += 1
            return
        more = f" ({self.unlogged_errors} more since the last such line)" if self.unlogged_errors else ""
        reason = f"HTTP {exc.code}" if isinstance(exc, urllib.error.HTTPError) else f"{type(exc).__name__}: {exc}"
        log.warning("tracing: cannot export spans to %s, spans lost: %s%s", self.config.url, reason, more)
        self.error_logged_at, self.unlogged_errors = now, 0


_ROUTES = {"v1": "/v1/models/{name}:predict", "v2": "/v2/models/{name}/infer"}
_PROTOCOL_ATTRIBUTE = {protocol: _str("modelapi.protocol", protocol) for protocol in _ROUTES}
_SERVER_ATTRIBUTES = {
    protocol: [_str("http.request.method", "POST"), _str("http.route", route)] for protocol, route in _ROUTES.items()
}


def _ignore(_: int) -> None:
    pass


def model_attributes(model: str, revision: str) -> list[str]:
    """The attributes every span of a model's runtime carries."""
    return [_str("modelapi.model", model), _str("modelapi.revision", revision)]


def open_tracer(
    env: Mapping[str, str] | None,
    model: str,
    revision: str,
    *,
    on_exported: Callable[[int], None] | None = None,
    on_dropped: Callable[[int], None] | None = None,
    on_error: Callable[[], None] | None = None,
) -> Tracer | None:
    """The tracer the environment asks for (``os.environ`` when ``env`` is None), or None: tracing is off."""
    config = TraceConfig.from_env(os.environ if env is None else env)
    if config is None:
        return None
    exporter = Exporter(
        config, model_attributes(model, revision), on_exported=on_exported, on_dropped=on_dropped, on_error=on_error
    )
    return Tracer(config, exporter)


def open_activator_tracer(env: Mapping[str, str] | None = None) -> Tracer | None:
    """The activator's tracer (service name ``modelapi-activator`` unless ``OTEL_SERVICE_NAME``), or None: off."""
    config = TraceConfig.from_env(os.environ if env is None else env, service_name="modelapi-activator")
    return None if config is None else Tracer(config, Exporter(config, []))
