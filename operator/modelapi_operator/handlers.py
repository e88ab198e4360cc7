"""kopf wiring only: every handler is a few lines that hand a ModelAPI (or the operator's life cycle) on.

- startup makes the operator's context (context.py) from what main.py put in kopf's memo and keeps it there, so
  every handler reaches it through its ``memo``; login gives the context's client kopf's credentials;
- create / update / resume reconcile one ModelAPI (triggers.py); the resync loops (resync.py) reconcile every
  ModelAPI once per ``resync_seconds``, and stand by while a kopf peer outranks this replica (peering.py);
- indices keep every child (Deployments, Services, HPAs, PDBs, HTTPRoutes, the activator's EndpointSlices, the
  ``<name>-arms`` ConfigMap, pods) in memory from kopf's watch streams (indices.py), so a reconcile reads nothing
  from the API;
- an event on a child (a pod became ready, a Deployment was deleted by hand) schedules a reconcile of its ModelAPI,
  and so does a change of its Services' EndpointSlices while its Ready waits for them; triggers for one ModelAPI
  coalesce and never run concurrently.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from modelapi_operator import indices, names, resync, triggers
from modelapi_operator.context import MEMO_KEY, OperatorContext, context_of
from modelapi_operator.login import credentials_of
from modelapi_operator.metrics import OperatorMetrics
from modelapi_operator.peering import Peer
from modelapi_operator.persistence import MemoryDiffBaseStorage, UnmarkedProgressStorage
from modelapi_operator.settings import OperatorSettings

MODELAPIS = (names.GROUP, names.VERSION, names.PLURAL)
OURS = {names.LABEL_MANAGED_BY: names.FIELD_MANAGER}
Key = indices.Key
WORKER_IDLE_SECONDS = 0.5


# -- operator lifecycle ------------------------------------------------------------------------------
@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
    """The context from main.py's settings, peer and metrics (kopf.run's memo); then the resync loops."""
    try:
        ours: OperatorSettings = memo["settings"]
        peer: Peer = memo["peer"]
        metrics: OperatorMetrics = memo["metrics"]
    except KeyError as missing:
        raise kopf.PermanentError(f"kopf's memo lacks {missing}: start the operator with modelapi-operator") from None
    context = OperatorContext.create(ours, peer, metrics)
    configure(settings, ours, context.diffbase)
    memo[MEMO_KEY] = context
    resync.start(context, indices.of(kwargs))


def configure(settings: kopf.OperatorSettings, ours: OperatorSettings, diffbase: MemoryDiffBaseStorage) -> None:
    """kopf's own settings from the operator's."""
    settings.posting.level = logging.getLevelName(ours.posting_level)
    settings.watching.server_timeout = ours.watch_server_timeout_seconds
    settings.watching.client_timeout = ours.watch_client_timeout_seconds
    settings.watching.connect_timeout = 30
    settings.watching.inactivity_timeout = ours.watch_inactivity_timeout_seconds
    settings.peering.lifetime = ours.peering_lifetime_seconds
    settings.networking.request_timeout = ours.request_timeout_seconds
    # kopf keeps a worker task per object until it has had no event for this long (5 s by default): a burst of 1,000
    # ModelAPIs touches some 9,000 objects (children, pods, EndpointSlices) every few seconds, and the idle workers
    # were a large part of the operator's peak memory (an idle task waiting with a timeout holds about 6 kB)
    settings.queueing.idle_timeout = WORKER_IDLE_SECONDS
    # the diff base in memory and no kopf-managed marker: no PATCH of every new or changed ModelAPI (persistence.py)
    settings.persistence.progress_storage = UnmarkedProgressStorage(prefix=names.GROUP)
    settings.persistence.diffbase_storage = diffbase
    settings.persistence.finalizer = f"{names.GROUP}/finalizer"


@kopf.on.login()
def login(memo: kopf.Memo, **kwargs: Any) -> kopf.ConnectionInfo | None:
    info = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
    if info is not None:
        context_of(memo).login(credentials_of(info))
    return info


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    if MEMO_KEY in memo:
        await context_of(memo).close()


# -- indices: children in memory ---------------------------------------------------------------------
# Coroutines, though nothing in them waits: kopf runs a plain function in a thread of its executor, a hop to a thread
# and back for every watch event of every child.
@kopf.index(*MODELAPIS)
async def modelapis_idx(*, namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Key, Any]:
    return indices.modelapi_entry(namespace, name, body, ticks=resync.ticks(body))


@kopf.index("apps", "v1", "deployments", labels=OURS)
async def deployments_idx(*, namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Key, Any]:
    return indices.child_entry(namespace, labels, body)


@kopf.index("v1", "services", labels=OURS)
async def services_idx(*, namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Key, Any]:
    return indices.child_entry(namespace, labels, body)


@kopf.index("autoscaling", "v2", "horizontalpodautoscalers", labels=OURS)
async def hpas_idx(*, namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Key, Any]:
    return indices.child_entry(namespace, labels, body)


@kopf.index("policy", "v1", "poddisruptionbudgets", labels=OURS)
async def pdbs_idx(*, namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Key, Any]:
    return indices.child_entry(namespace, labels, body)


@kopf.index("gateway.networking.k8s.io", "v1", "httproutes", labels=OURS)
async def httproutes_idx(*, namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Key, Any]:
    return indices.child_entry(namespace, labels, body)


@kopf.index("discovery.k8s.io", "v1", "endpointslices", labels=OURS)
async def endpointslices_idx(
    *, namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
) -> dict[Key, Any]:
    return indices.slice_entry(namespace, labels, body)


@kopf.index("v1", "configmaps", labels=OURS)
async def configmaps_idx(*, namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Key, Any]:
    return indices.child_entry(namespace, labels, body)


@kopf.index("discovery.k8s.io", "v1", "endpointslices", labels=OURS)
async def service_slices_idx(
    *, namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
) -> dict[Key, Any]:
    return indices.service_slice_entry(namespace, labels, body)


@kopf.index("v1", "pods", labels=OURS)
async def pods_idx(*, namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Key, Any]:
    return indices.pod_entry(namespace, labels, body)


# -- reconcile triggers --------------------------------------------------------------------------------
@kopf.on.resume(*MODELAPIS)
@kopf.on.create(*MODELAPIS)
@kopf.on.update(*MODELAPIS)
async def reconcile_modelapi(
    *, body: kopf.Body, namespace: str | None, name: str, memo: kopf.Memo, **kwargs: Any
) -> None:
    await triggers.reconcile(context_of(memo), (namespace or "", name), indices.plain(body), indices.of(kwargs))


@kopf.on.event("apps", "v1", "deployments", labels=OURS)
@kopf.on.event("v1", "services", labels=OURS)
@kopf.on.event("autoscaling", "v2", "horizontalpodautoscalers", labels=OURS)
@kopf.on.event("policy", "v1", "poddisruptionbudgets", labels=OURS)
@kopf.on.event("v1", "configmaps", labels=OURS)
@kopf.on.event("v1", "pods", labels=OURS)
async def child_changed(*, namespace: str | None, labels: kopf.Labels, memo: kopf.Memo, **kwargs: Any) -> None:
    triggers.schedule(context_of(memo), indices.model_key(namespace, labels), indices.of(kwargs))


@kopf.on.event("discovery.k8s.io", "v1", "endpointslices", labels=OURS)
async def endpoints_changed(*, namespace: str | None, labels: kopf.Labels, memo: kopf.Memo, **kwargs: Any) -> None:
    """The EndpointSlices of a model's Services (the EndpointSlice controller's carry the Services' labels): a
    ModelAPI whose Ready waits for its pods to be listed looks again now, not at its next backed-off recheck."""
    triggers.endpoints_changed(context_of(memo), indices.model_key(namespace, labels), indices.of(kwargs))


@kopf.on.event(*MODELAPIS, annotations={names.ACTIVATE_ANNOTATION: kopf.PRESENT})
async def activation_requested(*, namespace: str | None, name: str, memo: kopf.Memo, **kwargs: Any) -> None:
    """The activator holds requests for a model at zero: reconcile it now (it is woken). An event handler, since
    kopf leaves annotations of its own prefix out of the diff that triggers on.update."""
    triggers.schedule(context_of(memo), (namespace or "", name), indices.of(kwargs))


def _deleted(event: kopf.RawEvent, **_: Any) -> bool:
    return event.get("type") == "DELETED"


@kopf.on.event(*MODELAPIS, when=_deleted)
async def forget_modelapi(*, uid: str, namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> None:
    """A ModelAPI is gone: what the operator kept about it (its status series, last written status, diff base) goes
    too. A watch event, not ``kopf.on.delete``: a ModelAPI has no finalizer (owner references delete the children),
    so it leaves the cluster at once and kopf calls no deletion handler for it, only this DELETED event."""
    context_of(memo).forget(uid, (namespace or "", name))
