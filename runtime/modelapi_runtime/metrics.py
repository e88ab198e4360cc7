"""Prometheus metrics, one registry per app, labels bounded to model, revision, code and phase.

Names (all prefixed ``modelapi_``):

- ``requests_total{model,revision,code}`` counter of inference requests by HTTP status
- ``request_duration_seconds{model,revision}`` histogram, whole inference request
- ``request_phase_seconds{model,revision,phase}`` histogram, phase in decode|queue|infer|encode
- ``inflight_requests{model,revision}`` gauge of inference requests being served (HPA Pods metric)
- ``batch_size{model,revision}`` histogram of rows per model run
- ``model_load_seconds{model,revision}`` gauge, onnxruntime session creation of this start
- ``cold_start_download_seconds`` / ``cold_start_load_seconds`` / ``cold_start_warmup_seconds``
  ``{model,revision}`` gauges of this start (the operator copies them to ``status.coldStart``)
- ``artifact_cache_hit{model,revision}`` gauge, 1 when this start found the artifact in the cache
- ``model_ready{model,revision}`` gauge, 1 while ready
- ``model_info{model,revision,device}`` gauge, always 1

plus the standard ``process_*`` and ``python_info`` collectors.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

PREFIX = "modelapi_"
PHASES = ("decode", "queue", "infer", "encode")
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


def _batch_buckets(max_batch_size: int) -> tuple[float, ...]:
    buckets, b = [], 1
    while b < max_batch_size:
        buckets.append(float(b))
        b *= 2
    buckets.append(float(max(1, max_batch_size)))
    return tuple(buckets)


class Metrics:
    def __init__(self, model: str, revision: str, max_batch_size: int = 1) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        labels = ("model", "revision")
        values = (model, revision)
        self._requests = Counter(
            PREFIX + "requests", "Inference requests by HTTP status code.", [*labels, "code"], registry=r
        )
        self._codes: dict[int, Counter] = {}
        self._values = values
        self.request_seconds = Histogram(
            PREFIX + "request_duration_seconds", "Inference request latency.", labels,
            buckets=LATENCY_BUCKETS, registry=r,
        ).labels(*values)  # fmt: skip
        phase = Histogram(
            PREFIX + "request_phase_seconds", "Time per request phase: decode, queue, infer, encode.",
            [*labels, "phase"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.decode, self.queue, self.infer, self.encode = (phase.labels(*values, p) for p in PHASES)
        self.inflight = Gauge(
            PREFIX + "inflight_requests", "Inference requests being served now.", labels, registry=r
        ).labels(*values)
        self.batch_size = Histogram(
            PREFIX + "batch_size", "Rows per model run (dynamic batching).", labels,
            buckets=_batch_buckets(max_batch_size), registry=r,
        ).labels(*values)  # fmt: skip

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(PREFIX + name, doc, labels, registry=r).labels(*values)

        self.model_load_seconds = gauge("model_load_seconds", "onnxruntime session creation, this start.")
        self.download_seconds = gauge("cold_start_download_seconds", "Artifact download, this start (0 on a hit).")
        self.load_seconds = gauge("cold_start_load_seconds", "Model load, this start.")
        self.warmup_seconds = gauge("cold_start_warmup_seconds", "Warm-up inference, this start.")
        self.cache_hit = gauge("artifact_cache_hit", "1 when this start found the artifact in the cache.")
        self.ready = gauge("model_ready", "1 while the model is ready to serve.")
        self._info = Gauge(PREFIX + "model_info", "The loaded model.", [*labels, "device"], registry=r)
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)

    def count(self, code: int) -> None:
        child = self._codes.get(code)
        if child is None:
            child = self._codes[code] = self._requests.labels(*self._values, str(code))
        child.inc()

    def set_info(self, device: str) -> None:
        self._info.labels(*self._values, device).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)
