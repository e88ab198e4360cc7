"""The operator's own Prometheus metrics (docs/metrics.md "The operator's metrics") and their HTTP endpoint.

Reconciles are counted and timed around ``Reconciler.reconcile`` (triggers.reconcile): their outcome, how long they
took, why they failed (the API's reason, e.g. Conflict, Forbidden, or the exception's type for anything else), how
many wait for their turn and how many run. Watch restarts are counted from kopf's own log lines, as kopf has no hook
for them. Every label of those takes its values from a small fixed set: no ModelAPI name is a label.

The ModelAPI status series (``modelapi_status_*``, built by status_series.py after each reconcile) are the exception:
one set per ModelAPI (labelled namespace and name, like kube-state-metrics' series), removed when it is deleted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager, contextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any, NamedTuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

PREFIX = "modelapi_operator"
# kopf's watch-stream logger and the two messages it logs when a watch is re-established for a reason (a resource
# version the API server has forgotten, 410 Gone; or no event, not even a bookmark, within the inactivity timeout).
# tests/unit/operator/test_operator_metrics.py checks that the installed kopf still logs them.
KOPF_WATCH_LOGGER = "kopf._cogs.clients.watching"
WATCH_RESTART_MESSAGES = {"Restarting the watch-stream": "gone", "is inactive, reconnecting": "inactive"}
STATUS_PREFIX = "modelapi_status"
# The ModelAPI status series: name (after STATUS_PREFIX_) -> (help, label names).
STATUS_SERIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "condition": ("ModelAPI conditions: 1 when the condition has this status.", ("type", "reason")),
    "ready_replicas": ("Ready replicas of the ModelAPI's stable revision.", ()),
    "replicas": ("Desired replicas of the ModelAPI's stable revision.", ()),
    "canary_weight": ("Traffic weight of the canary revision (0 without a canary).", ()),
    "hpa_desired_replicas": ("The replicas the ModelAPI's HPA asks for (status.desiredReplicas).", ()),
    "revision_weight": ("Traffic weight of each revision, labelled with its role (stable, canary, ...).",
                        ("revision", "role")),
}  # fmt: skip
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Sample(NamedTuple):
    """One value of a ModelAPI status series (``series`` is the name after ``modelapi_status_``)."""

    series: str
    labels: Mapping[str, str]
    value: float


class OperatorMetrics:
    """Every series the operator exports, in one registry (main.py makes the process's one, on the default registry,
    and hands it to the handlers through kopf's memo)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.reconciles = Counter(
            f"{PREFIX}_reconciles",
            "Reconciles of a ModelAPI, by result (success, error).",
            ["result"],
            registry=registry,
        )
        self.reconcile_errors = Counter(
            f"{PREFIX}_reconcile_errors",
            "Failed reconciles by reason: the Kubernetes API's (Conflict, Forbidden, ServiceUnavailable, ...) or the "
            "exception's type.",
            ["reason"],
            registry=registry,
        )
        self.reconcile_duration = Histogram(
            f"{PREFIX}_reconcile_duration_seconds",
            "How long one reconcile took (after its turn came).",
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.waiting = Gauge(
            f"{PREFIX}_reconciles_waiting",
            "Reconciles waiting for their turn (the ModelAPI's lock or a free slot).",
            registry=registry,
        )
        self.in_progress = Gauge(f"{PREFIX}_reconciles_in_progress", "Reconciles running now.", registry=registry)
        self.watch_restarts = Counter(
            f"{PREFIX}_watch_restarts",
            "Watches re-established, by cause: gone (410, the resource version expired) or inactive (no event "
            "within the inactivity timeout).",
            ["cause"],
            registry=registry,
        )
        self.build_info = Gauge(
            f"{PREFIX}_build_info", "Always 1; the operator's version.", ["version"], registry=registry
        )
        self.build_info.labels(version=package_version()).set(1)
        self.status = {
            series: Gauge(f"{STATUS_PREFIX}_{series}", text, ["namespace", "name", *labels], registry=registry)
            for series, (text, labels) in STATUS_SERIES.items()
        }
        # the label values published for each ModelAPI (namespace, name): what the next publish or retract removes
        self._published: dict[tuple[str, str], set[tuple[str, tuple[str, ...]]]] = {}

    def publish(self, key: tuple[str, str], samples: Iterable[Sample]) -> None:
        """Set one ModelAPI's status series to these samples; its series that are not among them go away."""
        now: set[tuple[str, tuple[str, ...]]] = set()
        for sample in samples:
            names = ("namespace", "name", *STATUS_SERIES[sample.series][1])
            values = tuple(sample.labels[label] for label in names)
            self.status[sample.series].labels(*values).set(sample.value)
            now.add((sample.series, values))
        for series, values in self._published.get(key, set()) - now:
            self.status[series].remove(*values)
        self._published[key] = now

    def retract_all(self) -> None:
        """Every ModelAPI's status series go away (this replica stands by: the acting one publishes them)."""
        for key in list(self._published):
            self.retract(key)

    def retract(self, key: tuple[str, str]) -> None:
        """A ModelAPI was deleted: its status series go away."""
        for series, values in self._published.pop(key, set()):
            self.status[series].remove(*values)

    @asynccontextmanager
    async def turn(self, *guards: AbstractAsyncContextManager[Any]) -> AsyncIterator[None]:
        """Enter every guard (locks, semaphores) in order, counted as waiting until all are held."""
        async with AsyncExitStack() as stack:
            self.waiting.inc()
            try:
                for guard in guards:
                    await stack.enter_async_context(guard)
            finally:
                self.waiting.dec()
            yield

    @contextmanager
    def reconciling(self, reason_of: Callable[[Exception], str]) -> Iterator[None]:
        """Count and time one reconcile; an exception is counted as an error with ``reason_of(exception)``."""
        self.in_progress.inc()
        started = time.monotonic()
        try:
            yield
        except Exception as error:
            self.reconciles.labels(result="error").inc()
            self.reconcile_errors.labels(reason=reason_of(error)).inc()
            raise
        else:
            self.reconciles.labels(result="success").inc()
        finally:
            self.in_progress.dec()
            self.reconcile_duration.observe(time.monotonic() - started)

    def count_watch_restarts(self, *, verbose: bool) -> None:
        """Count kopf's watch restarts from its debug lines; without ``verbose`` those lines are counted, not logged."""
        watch_logger = logging.getLogger(KOPF_WATCH_LOGGER)
        watch_logger.setLevel(logging.DEBUG)
        watch_logger.addFilter(_WatchRestartCounter(self.watch_restarts, verbose=verbose))


class _WatchRestartCounter(logging.Filter):
    def __init__(self, counter: Counter, *, verbose: bool) -> None:
        super().__init__()
        self.counter = counter
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        for text, cause in WATCH_RESTART_MESSAGES.items():
            if text in message:
                self.counter.labels(cause=cause).inc()
        return self.verbose or record.levelno > logging.DEBUG


def package_version() -> str:
    try:
        return version("modelapi")
    except PackageNotFoundError:  # run from a source tree without installing
        return "unknown"


def parse_address(address: str) -> tuple[str, int]:
    """``host:port`` (the metrics_address setting) as the pair ``start_http_server`` takes."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def serve(metrics: OperatorMetrics, address: str) -> None:
    """Serve ``/metrics`` at ``host:port`` from a daemon thread (the Prometheus client's own server)."""
    host, port = parse_address(address)
    start_http_server(port, addr=host, registry=metrics.registry)
