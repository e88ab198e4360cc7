"""Prometheus metrics, one registry per app, labels bounded to model, revision, code and phase.

Names (all prefixed ``modelapi_``):

- ``requests_total{model,revision,code,class}`` counter of inference requests by HTTP status; ``class`` is
  ``success``, ``client_error`` (4xx, and 499: the client left), ``overload`` (503: queue, byte budget, not ready)
  or ``server_error`` (any other 5xx: the server's fault). Canary analysis counts ``server_error`` only.
- ``request_duration_seconds{model,revision}`` histogram, whole inference request
- ``request_phase_seconds{model,revision,phase}`` histogram, phase in decode|queue|infer|encode
- ``inflight_requests{model,revision}`` gauge of inference requests being served (HPA Pods metric)
- ``batch_size{model,revision}`` histogram of rows per model run
- ``model_load_seconds{model,revision}`` gauge, onnxruntime session creation of this start
- ``cold_start_download_seconds`` / ``cold_start_load_seconds`` / ``cold_start_warmup_seconds``
  ``{model,revision}`` gauges of this start (the operator copies them to ``status.coldStart``)
- ``cold_start_process_seconds{model,revision}`` gauge, from the process's start (the kernel's record of it) to
  ready: imports, the server's start, download, load and warm-up, the pod's own part of a start
- ``artifact_cache_hit{model,revision}`` gauge, 1 when this start found the artifacts in a cache (the pod's or the
  node's)
- ``artifact_source{model,revision,source}`` gauge, 1 for where this start's model artifact came from: ``cache``
  (the pod's or the node's cache) or ``store``
- ``artifact_store_bytes{model,revision}`` gauge, bytes this start downloaded from the store (0 on a cache hit)
- ``artifact_bytes{model,revision}`` gauge, the size of this start's artifacts (model and handler), wherever they came
  from: the operator sizes the model volume of a later revision of the same artifact from it
- ``node_cache_fallback{model,revision}`` gauge, 1 when the node cache was configured but this start downloaded
  directly (the agent unreachable, refused or out of room; the log says why)
- ``model_ready{model,revision}`` gauge, 1 while ready
- ``model_info{model,revision,device}`` gauge, always 1
- ``prediction_log_records_total`` / ``prediction_log_dropped_total`` / ``prediction_log_errors_total``
  ``{model,revision}`` counters: prediction records written, dropped (the queue was full), failed sink writes
- ``prediction_log_failing{model,revision,reason}`` gauge, 1 for the reason of the last sink write when it failed
  (AccessDenied, NoSuchBucket, Unreachable, WriteFailed); all 0 once a write succeeds
- ``trace_spans_exported_total`` / ``trace_spans_dropped_total`` / ``trace_export_errors_total`` ``{model,revision}``
  counters (tracing on): spans the OTLP collector accepted, spans lost (the exporter's queue was full, or their
  export failed), failed export requests

plus the standard ``process_*`` and ``python_info`` collectors.

The per-request instruments (requests, durations, phases, in-flight, batch size) are plain Python
counters updated only on the event loop's thread and exposed by a collector at scrape time (which
also runs on the loop): prometheus_client's own instruments take a lock and walk their buckets in
Python per update, which cost ~4 µs of a ~50 µs request on a small model. The exposition is the
same as prometheus_client's (``_bucket``/``_count``/``_sum``/``_created``, ``le`` formatting).
"""

from __future__ import annotations

import os
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString

_go_float = cast(Callable[[float], str], floatToGoString)  # the library's own `le` formatting

PREFIX = "modelapi_"
PHASES = ("decode", "queue", "infer", "encode")
# The reason label of modelapi_prediction_log_failing (bounded: see prediction_log.classify).
PREDICTION_LOG_FAILURES = ("AccessDenied", "NoSuchBucket", "Unreachable", "WriteFailed")
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
_CREATED = os.environ.get("PROMETHEUS_DISABLE_CREATED_SERIES", "false").lower() not in ("true", "1", "yes", "on")


def status_class(code: int) -> str:
    """The bounded ``class`` label of a status code: who is to blame for it."""
    if code < 400:
        return "success"
    if code < 500:
        return "client_error"
    return "overload" if code == 503 else "server_error"


def _batch_buckets(max_batch_size: int) -> tuple[float, ...]:
    buckets, b = [], 1
    while b < max_batch_size:
        buckets.append(float(b))
        b *= 2
    buckets.append(float(max(1, max_batch_size)))
    return tuple(buckets)


class LoopHistogram:
    """A histogram child updated from one thread (the event loop) without a lock."""

    __slots__ = ("bounds", "counts", "created", "les", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.les = (*(_go_float(b) for b in bounds), "+Inf")
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.created = time.time()

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # bucket i holds bounds[i-1] < v <= bounds[i]
        self.sum += value


class LoopCounter:
    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0
        self.created = time.time()


class LoopGauge:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self) -> None:
        self.value += 1

    def dec(self) -> None:
        self.value -= 1


class _RequestCollector:
    """Exposes the loop-local instruments of :class:`Metrics` in prometheus_client's format."""

    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics

    def collect(self) -> Iterator[Metric]:
        m = self._m
        base = {"model": m.model, "revision": m.revision}
        requests = Metric(PREFIX + "requests", "Inference requests by HTTP status code.", "counter")
        for code, counter in sorted(m.codes.items()):
            labels = {**base, "code": str(code), "class": status_class(code)}
            requests.add_sample(PREFIX + "requests_total", labels, float(counter.value))
            if _CREATED:
                requests.add_sample(PREFIX + "requests_created", labels, counter.created)
        yield requests
        duration = Metric(PREFIX + "request_duration_seconds", "Inference request latency.", "histogram")
        _histogram_samples(duration, base, m.request_seconds)
        yield duration
        phase = Metric(
            PREFIX + "request_phase_seconds", "Time per request phase: decode, queue, infer, encode.", "histogram"
        )
        for name, h in zip(PHASES, (m.decode, m.queue, m.infer, m.encode), strict=True):
            _histogram_samples(phase, {**base, "phase": name}, h)
        yield phase
        inflight = Metric(PREFIX + "inflight_requests", "Inference requests being served now.", "gauge")
        inflight.add_sample(PREFIX + "inflight_requests", base, float(m.inflight.value))
        yield inflight
        batch = Metric(PREFIX + "batch_size", "Rows per model run (dynamic batching).", "histogram")
        _histogram_samples(batch, base, m.batch_size)
        yield batch


def _histogram_samples(metric: Metric, labels: dict[str, str], h: LoopHistogram) -> None:
    total = 0
    for le, count in zip(h.les, h.counts, strict=True):
        total += count
        metric.add_sample(metric.name + "_bucket", {**labels, "le": le}, float(total))
    metric.add_sample(metric.name + "_count", labels, float(total))
    metric.add_sample(metric.name + "_sum", labels, h.sum)
    if _CREATED:
        metric.add_sample(metric.name + "_created", labels, h.created)


class Metrics:
    def __init__(self, model: str, revision: str, max_batch_size: int = 1) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.model, self.revision = model, revision
        labels = ("model", "revision")
        values = (model, revision)
        self._values = values
        # Per request, on the event loop: see the module docstring.
        self.codes: dict[int, LoopCounter] = {}
        self.request_seconds = LoopHistogram(LATENCY_BUCKETS)
        self.decode, self.queue, self.infer, self.encode = (LoopHistogram(LATENCY_BUCKETS) for _ in PHASES)
        self.inflight = LoopGauge()
        self.batch_size = LoopHistogram(_batch_buckets(max_batch_size))
        r.register(_RequestCollector(self))

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(PREFIX + name, doc, labels, registry=r).labels(*values)

        self.model_load_seconds = gauge("model_load_seconds", "onnxruntime session creation, this start.")
        self.download_seconds = gauge("cold_start_download_seconds", "Artifact download, this start (0 on a hit).")
        self.load_seconds = gauge("cold_start_load_seconds", "Model load, this start.")
        self.warmup_seconds = gauge("cold_start_warmup_seconds", "Warm-up inference, this start.")
        self.process_seconds = gauge(
            "cold_start_process_seconds", "From the process's start to ready (imports, server, every phase)."
        )
        self.cache_hit = gauge("artifact_cache_hit", "1 when this start found the artifact in the cache.")
        self.store_bytes = gauge("artifact_store_bytes", "Bytes this start downloaded from the store (0 on a hit).")
        self.artifact_bytes = gauge("artifact_bytes", "Size of this start's artifacts (model and handler).")
        self.node_cache_fallback = gauge(
            "node_cache_fallback", "1 when the node cache was configured but this start downloaded directly."
        )
        self._source = Gauge(
            PREFIX + "artifact_source", "Where this start's model artifact came from.", [*labels, "source"], registry=r
        )
        self.ready = gauge("model_ready", "1 while the model is ready to serve.")
        self._info = Gauge(PREFIX + "model_info", "The loaded model.", [*labels, "device"], registry=r)

        def counter(name: str, doc: str) -> Counter:
            return Counter(PREFIX + name, doc, labels, registry=r).labels(*values)

        # the prediction log's: thread-safe instruments (its writer thread updates them)
        self.prediction_log_records = counter("prediction_log_records", "Prediction records written to the sink.")
        self.prediction_log_dropped = counter(
            "prediction_log_dropped", "Prediction records dropped because the queue to the sink was full."
        )
        self.prediction_log_errors = counter("prediction_log_errors", "Failed writes to the prediction log's sink.")
        # the tracing exporter's (its thread updates them)
        self.trace_spans_exported = counter("trace_spans_exported", "Spans the OTLP collector accepted.")
        self.trace_spans_dropped = counter(
            "trace_spans_dropped", "Spans lost: the exporter's queue was full, or their export failed."
        )
        self.trace_export_errors = counter("trace_export_errors", "Failed span exports to the OTLP collector.")
        self._prediction_log_failing = Gauge(
            PREFIX + "prediction_log_failing",
            "1 for the reason of the last prediction log write when it failed.",
            [*labels, "reason"],
            registry=r,
        )
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)

    def count(self, code: int) -> None:
        counter = self.codes.get(code)
        if counter is None:
            counter = self.codes[code] = LoopCounter()
        counter.value += 1

    def observe_phases(self, decode_s: float, queue_s: float, infer_s: float, encode_s: float) -> None:
        # the four histograms share their buckets: LoopHistogram.observe, inlined (one call per request, not five)
        bounds = LATENCY_BUCKETS
        h = self.decode
        h.counts[bisect_left(bounds, decode_s)] += 1
        h.sum += decode_s
        h = self.queue
        h.counts[bisect_left(bounds, queue_s)] += 1
        h.sum += queue_s
        h = self.infer
        h.counts[bisect_left(bounds, infer_s)] += 1
        h.sum += infer_s
        h = self.encode
        h.counts[bisect_left(bounds, encode_s)] += 1
        h.sum += encode_s

    def set_artifact(self, source: str, store_bytes: int, *, fallback: bool) -> None:
        self._source.labels(*self._values, source).set(1)
        self.store_bytes.set(store_bytes)
        self.node_cache_fallback.set(1 if fallback else 0)

    def set_prediction_log_failing(self, reason: str | None) -> None:
        """The last sink write failed for ``reason`` (1 for it, 0 for the others), or succeeded (None: all 0)."""
        for known in PREDICTION_LOG_FAILURES:
            self._prediction_log_failing.labels(*self._values, known).set(1 if known == reason else 0)

    def set_info(self, device: str) -> None:
        self._info.labels(*self._values, device).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def process_age_seconds(stat: Path = Path("/proc/self/stat")) -> float | None:
    """How long this process has run, from the kernel's record of its start (in clock ticks since boot, 10 ms);
    None where /proc does not say."""
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()  # after the command's name, which may hold anything
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22, starttime
    except (OSError, IndexError, ValueError):
        return None
    return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - started)
