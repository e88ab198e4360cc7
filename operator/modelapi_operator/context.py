"""The operator's context: everything one operator process holds, made once at start-up and reached through kopf's
memo (handlers.py puts it there in its startup handler; kopf copies the operator's memo into every resource's).

Nothing here is built at import: the settings, the peering identity and the metrics come from main.py, the API
client and the reconciler are made by ``OperatorContext.create``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from modelapi_operator import kube, names
from modelapi_operator.builders import RuntimeImages
from modelapi_operator.cluster_policy import ClusterPolicy
from modelapi_operator.event_posting import EventQueue, EventSink
from modelapi_operator.indices import Key
from modelapi_operator.metrics import OperatorMetrics
from modelapi_operator.peering import Peer, Standby
from modelapi_operator.persistence import MemoryDiffBaseStorage
from modelapi_operator.prometheus import Prometheus
from modelapi_operator.reconcile import Reconciler
from modelapi_operator.settings import OperatorSettings
from modelapi_operator.slots import ReconcileSlots

log = logging.getLogger(__name__)

MEMO_KEY = "operator"
GATEWAY_CRD = "httproutes.gateway.networking.k8s.io"
GATEWAY_RECHECK_SECONDS = 300
EVENTS_FLUSH_SECONDS = 5  # at shutdown, the Events still queued get this long to be posted


def runtime_images(settings: OperatorSettings) -> RuntimeImages:
    return RuntimeImages(
        cpu=settings.cpu_image,
        gpu=settings.gpu_image,
        pull_secrets=tuple(settings.image_pull_secrets),
        node_cache_port=settings.node_cache_port,
        max_artifact_size=settings.max_artifact_size,
        log_format=settings.log_format,
        tracing_endpoint=settings.tracing_endpoint,
        tracing_sample_rate=settings.tracing_sample_rate,
    )


def activator_service(settings: OperatorSettings) -> tuple[str, str] | None:
    """The activator's Service as (namespace, name); the setting's pattern guarantees the two parts."""
    if not settings.activator_service:
        return None
    namespace, name = settings.activator_service.split("/", 1)
    return namespace, name


def reconciler_for(client: kube.KubeClient, settings: OperatorSettings, events: EventSink | None = None) -> Reconciler:
    prometheus = (
        Prometheus(settings.prometheus_url, namespace_label=settings.prometheus_namespace_label)
        if settings.prometheus_url
        else None
    )
    return Reconciler(
        client,
        runtime_images(settings),
        gateway_api_installed=False,
        prometheus=prometheus,
        policy=ClusterPolicy.from_settings(settings),
        activator_service=activator_service(settings),
        unschedulable_grace_seconds=settings.unschedulable_grace_seconds,
        autoscaling_limited_seconds=settings.autoscaling_limited_seconds,
        events=events,
    )


@dataclass
class OperatorContext:
    """One operator process: its settings, API client, reconciler and the per-ModelAPI bookkeeping of its triggers."""

    settings: OperatorSettings
    metrics: OperatorMetrics
    client: kube.Kube
    reconciler: Reconciler
    standby: Standby
    slots: ReconcileSlots  # bounds concurrent reconciles: a burst of new ModelAPIs queues here, not in the pool
    events: EventQueue  # the reconciles' Events, posted after their status patches (event_posting.py)
    logged_in: bool = False
    locks: dict[Key, asyncio.Lock] = field(default_factory=dict)
    pending: set[Key] = field(default_factory=set)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    background: list[asyncio.Task[None]] = field(default_factory=list)
    endpoint_rechecks: dict[Key, int] = field(default_factory=dict)
    # ModelAPIs that serve with nothing under way, by the fingerprint of what their last reconcile read
    # (triggers.settled): the resync loop skips them while it stays the same, but for one round in FULL_RESYNC_EVERY
    settled: dict[Key, int] = field(default_factory=dict)
    gateway_checked_at: float = -1e9
    # kopf's diff base of each ModelAPI (what it last handled), kept here instead of in an annotation (persistence.py)
    diffbase: MemoryDiffBaseStorage = field(default_factory=lambda: MemoryDiffBaseStorage(names.GROUP))

    @classmethod
    def create(cls, settings: OperatorSettings, peer: Peer, metrics: OperatorMetrics) -> OperatorContext:
        """The client is made before kopf's login and gets its credentials from it (``login``)."""
        client = kube.Kube(None, timeout_seconds=settings.request_timeout_seconds)
        events = EventQueue(client)
        return cls(
            settings=settings,
            metrics=metrics,
            client=client,
            reconciler=reconciler_for(client, settings, events),
            events=events,
            standby=Standby(peer, settings.peering, settings.namespaces),
            slots=ReconcileSlots(settings.max_concurrent_reconciles),
        )

    def login(self, credentials: kube.Credentials) -> None:
        self.client.update_credentials(credentials)
        self.logged_in = True

    async def standing_by(self) -> bool:
        """Whether a peer outranks this replica; a replica that stands by publishes no ModelAPI status series (the
        acting one does), so what it published while it acted goes away."""
        standby = await self.standby.standing_by(self.client, logged_in=self.logged_in)
        if standby:
            self.metrics.retract_all()
        return standby

    async def current_reconciler(self) -> Reconciler:
        """The reconciler, told whether Gateway API is installed (asked again every ``GATEWAY_RECHECK_SECONDS``)."""
        if time.monotonic() - self.gateway_checked_at > GATEWAY_RECHECK_SECONDS:
            try:
                installed = await self.client.get(kube.CRD, None, GATEWAY_CRD) is not None
            except kube.KubeError as error:
                if error.retriable:  # overloaded or unreachable: keep what was known, ask again next time
                    log.warning("cannot tell whether Gateway API is installed (%s); asking again soon", error)
                    return self.reconciler
                # e.g. not allowed to read CRDs: assume absent, say so
                log.warning("cannot tell whether Gateway API is installed (%s); assuming it is not", error)
                installed = False
            self.reconciler.gateway_api_installed = installed
            self.gateway_checked_at = time.monotonic()
        return self.reconciler

    def forget(self, uid: str, key: Key) -> None:
        """A ModelAPI was deleted: drop what was kept about it."""
        self.reconciler.forget(uid)
        self.diffbase.forget(uid)
        self.metrics.retract(key)
        self.locks.pop(key, None)
        self.endpoint_rechecks.pop(key, None)
        self.settled.pop(key, None)

    async def close(self) -> None:
        for task in self.background:
            task.cancel()
        await self.events.flush(EVENTS_FLUSH_SECONDS)
        await self.client.close()


def context_of(memo: Mapping[str, Any]) -> OperatorContext:
    """The context from kopf's memo (the operator's, or a resource's copy of it)."""
    context = memo.get(MEMO_KEY)
    if not isinstance(context, OperatorContext):
        raise LookupError("the operator's context is not in kopf's memo: start the operator with modelapi-operator")
    return context
