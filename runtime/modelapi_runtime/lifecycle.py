"""Start-up and shutdown of one served model: pull -> load -> warm up -> ready -> draining.

Loading runs in a background thread while the HTTP server already answers: liveness is true from
the first second (a long download must not look like a hung process), readiness only after the
warm-up inference passed. A start-up failure is reported through ``on_fatal`` (the CLI exits
non-zero and writes the reason to the termination log for the operator).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

from modelapi_runtime.exceptions import ModelLoadFailed, ModelNotFound, NotReady, StartupError
from modelapi_runtime.handler import Handler, load_handler
from modelapi_runtime.limits import ByteBudget, default_budget_bytes
from modelapi_runtime.metrics import Metrics, process_age_seconds
from modelapi_runtime.model import Model
from modelapi_runtime.prediction_log import PredictionLog, open_prediction_log
from modelapi_runtime.pull import Artifacts, pull_artifacts
from modelapi_runtime.service import InferenceService
from modelapi_runtime.settings import RuntimeSettings
from modelapi_runtime.storage import ArtifactOrigin, display_uri
from modelapi_runtime.tracing import Tracer, open_tracer

log = logging.getLogger(__name__)

FatalHook = Callable[[StartupError], None]


@dataclass(frozen=True, slots=True)
class ColdStart:
    download_s: float
    load_s: float
    warmup_s: float
    cache_hit: bool
    origin: ArtifactOrigin = "store"  # the model artifact's: "cache" (the pod's or the node's) or "store"
    store_bytes: int = 0  # downloaded from the store for this start (model and handler)
    node_cache_fallback: bool = False  # the node cache was configured but could not be used
    artifact_bytes: int = 0  # the size of the artifacts (model and handler), wherever they came from


@dataclass(frozen=True, slots=True)
class Loaded:
    model: Model
    handler: Handler | None
    cold_start: ColdStart
    steady_run_s: float


def load(settings: RuntimeSettings, pulling: Future[Artifacts] | None = None) -> Loaded:
    """Blocking: the artifacts (``pulling``'s, when ``serve`` started their pull early), the session, the warm-up."""
    artifacts = pulling.result() if pulling is not None else pull_artifacts(settings)
    handler_path = artifacts.handler.path if artifacts.handler else None

    t = time.perf_counter()
    model = Model(artifacts.model.path, threads=settings.threads, device=settings.device)
    handler = load_handler(handler_path, display_uri(settings.handler or "")) if handler_path else None
    load_s = time.perf_counter() - t

    warmup_s = model.warm_up()
    steady = time.perf_counter()
    model.warm_up()  # a second run measures the steady state (the first pays one-time costs)
    steady_run_s = time.perf_counter() - steady
    log.info(
        "cold start: download %.3fs (from the %s, %d bytes from the store), load %.3fs, warm-up %.3fs, "
        "steady run %.6fs",
        artifacts.seconds, artifacts.model.origin, artifacts.store_bytes, load_s, warmup_s, steady_run_s,
    )  # fmt: skip
    cold_start = ColdStart(
        artifacts.seconds, load_s, warmup_s, artifacts.cache_hit, artifacts.model.origin, artifacts.store_bytes,
        artifacts.node_cache_fallback, artifacts.size,
    )  # fmt: skip
    return Loaded(model, handler, cold_start, steady_run_s)


class Runtime:
    """What the routes ask: is it ready, which service serves ``name``."""

    def __init__(
        self, settings: RuntimeSettings, loader: Callable[[RuntimeSettings], Loaded] = load, *, freeze_gc: bool = False
    ) -> None:
        self.settings = settings
        self.freeze_gc = freeze_gc
        self.metrics = Metrics(settings.name, settings.revision, settings.max_batch_size)
        self.service: InferenceService | None = None
        self.failure: StartupError | None = None
        self.draining = False
        # process-wide: the bytes of every request in progress, on both HTTP layers
        self.budget = ByteBudget(settings.max_inflight_bytes or default_budget_bytes())
        self.settled = asyncio.Event()  # set when the start ends: ready, or failed
        self._loader = loader
        # the sampled requests' records (None: off); its writer thread runs from start() to stop()
        self.predictions: PredictionLog | None = open_prediction_log(settings, self.metrics)
        # the OTEL_* environment's tracer (None: off); its exporter thread runs from start() to stop()
        m = self.metrics
        self.tracer: Tracer | None = open_tracer(
            None,
            settings.name,
            settings.revision,
            on_exported=m.trace_spans_exported.inc,
            on_dropped=m.trace_spans_dropped.inc,
            on_error=m.trace_export_errors.inc,
        )

    @property
    def ready(self) -> bool:
        return self.service is not None and not self.draining

    def service_for(self, name: str) -> InferenceService:
        if name != self.settings.name:
            raise ModelNotFound(f"model {name!r} is not served here (this runtime serves {self.settings.name!r})")
        if self.service is None:
            raise NotReady(f"model {name!r} is still loading" if self.failure is None else self.failure.message)
        return self.service

    async def start(self, on_fatal: FatalHook | None = None) -> None:
        if self.predictions is not None:
            self.predictions.start()
        if self.tracer is not None:
            self.tracer.exporter.start()
            log.info("tracing: spans to %s (sampler %s)", self.tracer.config.url, self.tracer.config.sampler)
        try:
            loaded = await asyncio.to_thread(self._loader, self.settings)
        except StartupError as exc:
            self._fail(exc, on_fatal)
            return
        except Exception as exc:  # a bug or an unexpected library error: still a clean, reported exit
            log.exception("unexpected error while loading the model")
            self._fail(ModelLoadFailed(f"unexpected error while loading: {type(exc).__name__}: {exc}"), on_fatal)
            return
        s = self.settings
        service = InferenceService(
            loaded.model,
            self.metrics,
            name=s.name,
            version=s.revision,
            handler=loaded.handler,
            max_batch_size=s.max_batch_size,
            max_latency_s=s.max_latency_ms / 1000,
            fill_when_idle=s.batch_fill_when_idle,
            tracer=self.tracer,
            max_queue=s.max_queue,
            steady_run_s=loaded.steady_run_s,
            max_json_values=s.max_json_values,
            # a tensor has no more elements than its request has bytes (binary) or values (JSON)
            max_tensor_elements=s.max_request_bytes,
        )
        await service.start()
        m, cs = self.metrics, loaded.cold_start
        m.download_seconds.set(cs.download_s)
        m.load_seconds.set(cs.load_s)
        m.model_load_seconds.set(cs.load_s)
        m.warmup_seconds.set(cs.warmup_s)
        m.cache_hit.set(1 if cs.cache_hit else 0)
        m.set_artifact(cs.origin, cs.store_bytes, fallback=cs.node_cache_fallback)
        m.artifact_bytes.set(cs.artifact_bytes)
        m.set_info(loaded.model.device)
        if self.freeze_gc:
            # The ~80k objects of the libraries and the model never become garbage: keep them out of
            # every later collection. A full collection over them stalls the event loop for ~25 ms
            # (measured here), a p99 spike whenever the collector's oldest generation runs. The start's
            # own garbage is young: collecting the two younger generations frees it (~1 ms; a full
            # collection found nothing more and cost 20-30 ms, 40-60 ms of Ready at a 500m CPU limit).
            gc.collect(1)
            gc.freeze()
        self.service = service
        age = process_age_seconds()
        if age is not None:
            m.process_seconds.set(age)
        m.ready.set(1)
        self.settled.set()
        log.info(
            "ready: model %r on %s, batching %s, inference %s",
            s.name, loaded.model.device, "on" if service.batching else "off",
            "inline" if service.inline else "in a worker thread",
        )  # fmt: skip

    async def wait_settled(self, timeout_s: float) -> None:
        """Until the start ends (ready or failed), at most ``timeout_s``."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.settled.wait(), timeout_s)

    def _fail(self, exc: StartupError, on_fatal: FatalHook | None) -> None:
        self.failure = exc
        self.settled.set()
        log.error("cannot serve: %s: %s", exc.reason, exc.message)
        if on_fatal is not None:
            on_fatal(exc)

    def begin_drain(self) -> None:
        """Readiness false from now on; requests still arriving are served until the listener closes."""
        self.draining = True
        self.metrics.ready.set(0)

    async def stop(self) -> None:
        self.begin_drain()
        if self.service is not None:
            await self.service.stop()
        if self.predictions is not None:  # after the last request: what is queued and buffered is written
            await asyncio.to_thread(self.predictions.stop)
        if self.tracer is not None:  # after the last request: the spans still queued are exported
            await asyncio.to_thread(self.tracer.exporter.stop)
