"""kopf wiring only: every handler is a few lines that hand a ModelAPI to the reconciler.

- create / update / resume reconcile one ModelAPI; an API failure is a ``kopf.TemporaryError`` so
  kopf retries with its own back-off; a background loop reconciles every ModelAPI once per
  ``resync_seconds`` (drift and status), and those with a canary once per ``canary_tick_seconds``;
- indices keep every child (Deployments, Services, HPAs, PDBs, HTTPRoutes, pods) in memory from
  kopf's watch streams, so a reconcile reads nothing from the API;
- an event on a child (a pod became ready, a Deployment was deleted by hand) schedules a reconcile
  of its ModelAPI; triggers for one ModelAPI coalesce and never run concurrently;
- with peering, kopf pauses its watches and handlers while a peer outranks this replica, but not the
  resync loops, which are ours: they ask the peering objects themselves (kopf's rule) and stand by too.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import tempfile
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf

from modelapi_operator import autoscaling, capacity, kube, names
from modelapi_operator.api import ModelAPIStatus
from modelapi_operator.builders import RuntimeImages
from modelapi_operator.cluster_policy import ClusterPolicy
from modelapi_operator.metrics import METRICS
from modelapi_operator.prometheus import Prometheus
from modelapi_operator.reconcile import Observed, Reconciler
from modelapi_operator.routing import ENDPOINTS_NOT_READY
from modelapi_operator.settings import OperatorSettings

log = logging.getLogger("modelapi_operator")

SETTINGS = OperatorSettings()
MODELAPIS = (names.GROUP, names.VERSION, names.PLURAL)
OURS = {names.LABEL_MANAGED_BY: names.FIELD_MANAGER}
GATEWAY_CRD = "httproutes.gateway.networking.k8s.io"
GATEWAY_RECHECK_SECONDS = 300
RETRY_SOON_SECONDS = 10
RETRY_LATER_SECONDS = 60
ENDPOINTS_RECHECK_SECONDS = 1.0
# This replica in kopf's peering (main.py hands both to kopf.run): a random priority unless one is set, so that two
# replicas never tie (kopf pauses every replica of a tied priority).
PEERING_PRIORITY = SETTINGS.peering_priority if SETTINGS.peering_priority is not None else secrets.randbelow(2**31)
PEERING_IDENTITY = f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(3)}"
PEERING_RECHECK_SECONDS = 1.0
KOPF_PEER_LIFETIME_SECONDS = 60  # kopf's assumption for a peer that does not say its lifetime

Key = tuple[str, str]


class _State:
    """Process-wide state of the operator: the API client, the reconciler, the per-ModelAPI locks."""

    def __init__(self) -> None:
        self.client: kube.Kube | None = None
        self.credentials: kube.Credentials | None = None
        self.locks: dict[Key, asyncio.Lock] = {}
        self.pending: set[Key] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.gateway_checked_at = -1e9
        self.reconciler_: Reconciler | None = None
        self.background: list[asyncio.Task[None]] = []
        self._slots: asyncio.Semaphore | None = None
        self.standby = SETTINGS.peering is not None  # until the peering objects are read
        self.standby_checked_at = -1e9
        self.endpoint_rechecks: dict[Key, int] = {}

    def slots(self) -> asyncio.Semaphore:
        """Bounds concurrent reconciles, so a burst of new ModelAPIs queues here, not in the HTTP pool."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(SETTINGS.max_concurrent_reconciles)
        return self._slots

    def kube(self) -> kube.Kube:
        if self.client is None:
            if self.credentials is None:
                raise kopf.TemporaryError("not logged in to the Kubernetes API yet", delay=RETRY_SOON_SECONDS)
            self.client = kube.Kube(self.credentials, timeout_seconds=SETTINGS.request_timeout_seconds)
        return self.client

    async def reconciler(self) -> Reconciler:
        client = self.kube()
        if self.reconciler_ is None:
            images = RuntimeImages(
                cpu=SETTINGS.cpu_image,
                gpu=SETTINGS.gpu_image,
                pull_secrets=tuple(SETTINGS.image_pull_secrets),
                node_cache_port=SETTINGS.node_cache_port,
                max_artifact_size=SETTINGS.max_artifact_size,
            )
            prometheus = (
                Prometheus(SETTINGS.prometheus_url, namespace_label=SETTINGS.prometheus_namespace_label)
                if SETTINGS.prometheus_url
                else None
            )
            activator = tuple(SETTINGS.activator_service.split("/", 1)) if SETTINGS.activator_service else None
            self.reconciler_ = Reconciler(
                client,
                images,
                gateway_api_installed=False,
                prometheus=prometheus,
                policy=ClusterPolicy.from_settings(SETTINGS),
                activator_service=activator,  # type: ignore[arg-type]  # NAMESPACE/NAME: two parts (settings)
                unschedulable_grace_seconds=SETTINGS.unschedulable_grace_seconds,
                autoscaling_limited_seconds=SETTINGS.autoscaling_limited_seconds,
            )
        if time.monotonic() - self.gateway_checked_at > GATEWAY_RECHECK_SECONDS:
            try:
                installed = await client.get(kube.CRD, None, GATEWAY_CRD) is not None
            except kube.KubeError as error:
                if error.retriable:  # overloaded or unreachable: keep what was known, ask again next time
                    log.warning("cannot tell whether Gateway API is installed (%s); asking again soon", error)
                    return self.reconciler_
                # e.g. not allowed to read CRDs: assume absent, say so
                log.warning("cannot tell whether Gateway API is installed (%s); assuming it is not", error)
                installed = False
            self.reconciler_.gateway_api_installed = installed
            self.gateway_checked_at = time.monotonic()
        return self.reconciler_


STATE = _State()


# -- operator lifecycle ------------------------------------------------------------------------------
@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.level = logging.getLevelName(SETTINGS.posting_level)
    settings.watching.server_timeout = SETTINGS.watch_server_timeout_seconds
    settings.watching.client_timeout = SETTINGS.watch_client_timeout_seconds
    settings.watching.connect_timeout = 30
    settings.watching.inactivity_timeout = SETTINGS.watch_inactivity_timeout_seconds
    settings.peering.lifetime = SETTINGS.peering_lifetime_seconds
    settings.networking.request_timeout = SETTINGS.request_timeout_seconds
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=names.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=names.GROUP, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{names.GROUP}/finalizer"


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    info = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
    if info is not None:
        STATE.credentials = _credentials(info)
        if STATE.client is not None:
            STATE.client.update_credentials(STATE.credentials)
    return info


@kopf.on.startup()
async def start_resync(**kwargs: Any) -> None:
    """One loop for every ModelAPI instead of a kopf timer per object: timers make kopf put a finalizer on
    each ModelAPI, and a finalizer would keep a ModelAPI from being deleted whenever the operator is not running."""
    indices = _indices(kwargs)
    STATE.background = [
        asyncio.get_running_loop().create_task(_resync_loop(indices, SETTINGS.resync_seconds, canaries_only=False)),
        asyncio.get_running_loop().create_task(_resync_loop(indices, SETTINGS.canary_tick_seconds, canaries_only=True)),
    ]
    for task in STATE.background:
        task.add_done_callback(_loop_ended)


def _loop_ended(task: asyncio.Task[None]) -> None:
    """A resync loop never ends but by cancellation at exit: say so loudly if one did (nothing else would)."""
    if not task.cancelled() and task.exception() is not None:
        log.error("a resync loop stopped: no more resyncs or canary steps", exc_info=task.exception())


async def _resync_loop(indices: Mapping[str, kopf.Index[Key, Any]], interval: float, *, canaries_only: bool) -> None:
    """Reconcile every ModelAPI (or every one with a canary running) once per ``interval``, spread over it; nothing
    while a peer outranks this replica (the indices stop being updated then: acting on them would undo the active
    replica's work)."""
    while True:
        if await _standing_by():
            await asyncio.sleep(min(interval, PEERING_RECHECK_SECONDS))
            continue
        keys = list(indices["modelapis_idx"].keys())
        if canaries_only:  # and those that may scale to zero: idleness, demand, the activator's endpoints
            keys = [key for key in keys if any(_ticks(body) for body in _values(indices["modelapis_idx"], key))]
        pause = interval / max(len(keys), 1)
        for key in keys:
            if await _standing_by():
                break
            _schedule(key, indices)
            await asyncio.sleep(pause)
        if not keys:
            await asyncio.sleep(interval)


def _ticks(body: Mapping[str, Any]) -> bool:
    """A ModelAPI reconciled every canary tick: a canary runs, or it may scale to zero."""
    autoscaling = (body.get("spec") or {}).get("autoscaling") or {}
    return bool((body.get("status") or {}).get("canary")) or autoscaling.get("minReplicas") == 0


async def _standing_by() -> bool:
    """Whether a live peer outranks this replica, from the peering objects (read at most once per second)."""
    if SETTINGS.peering is None:
        return False
    now = time.monotonic()
    if now - STATE.standby_checked_at < PEERING_RECHECK_SECONDS or STATE.credentials is None:
        return STATE.standby  # (before kopf's login: kopf itself is paused until it has read the peering objects)
    client = STATE.kube()
    places: list[tuple[kube.Kind, str | None]]
    if SETTINGS.namespaces:
        places = [(kube.KOPF_PEERING, namespace) for namespace in SETTINGS.namespaces]
    else:
        places = [(kube.CLUSTER_KOPF_PEERING, None)]
    try:
        bodies = [await client.get(kind, namespace, SETTINGS.peering) for kind, namespace in places]
    except kube.KubeError as error:  # keep the last answer; kopf cannot read them either
        log.warning("cannot read the peering objects (%s); %s", error, "standing by" if STATE.standby else "acting")
        return STATE.standby
    peers = [((body or {}).get("status") or {}) for body in bodies]
    standby = outranked(peers, identity=PEERING_IDENTITY, priority=PEERING_PRIORITY, now=datetime.now(UTC))
    if standby != STATE.standby or STATE.standby_checked_at < 0:
        log.info(
            "resync loops %s (peering %r: %s is priority %d; peers %s)",
            "stand by: a live peer outranks this replica" if standby else "act",
            SETTINGS.peering,
            PEERING_IDENTITY,
            PEERING_PRIORITY,
            peers,
        )
    STATE.standby = standby
    STATE.standby_checked_at = now
    return STATE.standby


def outranked(statuses: Iterable[Mapping[str, Any]], *, identity: str, priority: int, now: datetime) -> bool:
    """kopf's rule (kopf._core.engines.peering): a replica pauses while any live peer in any of its peering objects'
    ``status`` (``{identity: {priority, lifetime, lastseen}}``) has a priority higher than or equal to its own."""
    for status in statuses:
        for peer, info in status.items():
            if peer == identity or not isinstance(info, Mapping):
                continue
            try:
                lastseen = info.get("lastseen")
                seen = datetime.fromisoformat(lastseen) if lastseen else now
                lifetime = timedelta(seconds=int(info.get("lifetime", KOPF_PEER_LIFETIME_SECONDS)))
                if seen + lifetime > now and int(info.get("priority", 0)) >= priority:
                    return True
            except (TypeError, ValueError):
                continue
    return False


@kopf.on.cleanup()
async def close(**_: Any) -> None:
    for task in STATE.background:
        task.cancel()
    if STATE.client is not None:
        await STATE.client.close()


def _as_file(data: str | bytes | None, suffix: str) -> str | None:
    """Certificate material embedded in a kubeconfig, written to a private file for ssl."""
    if data is None:
        return None
    raw = data.encode() if isinstance(data, str) else data
    handle, path = tempfile.mkstemp(prefix="modelapi-", suffix=suffix)
    with os.fdopen(handle, "wb") as file:
        file.write(raw)
    return path


def _credentials(info: kopf.ConnectionInfo) -> kube.Credentials:
    ca_data = info.ca_data.decode() if isinstance(info.ca_data, bytes) else info.ca_data
    return kube.Credentials(
        server=info.server,
        ca_path=os.fsdecode(info.ca_path) if info.ca_path else None,
        ca_data=ca_data,
        insecure=bool(info.insecure),
        token=info.token,
        scheme=info.scheme or "Bearer",
        certificate_path=os.fsdecode(info.certificate_path)
        if info.certificate_path
        else _as_file(info.certificate_data, ".crt"),
        private_key_path=os.fsdecode(info.private_key_path)
        if info.private_key_path
        else _as_file(info.private_key_data, ".key"),
    )


# -- indices: children in memory ---------------------------------------------------------------------
def _model_key(namespace: str | None, labels: Mapping[str, str]) -> Key | None:
    model = labels.get(names.LABEL_NAME)
    return (namespace or "", model) if model else None


@kopf.index(*MODELAPIS)
def modelapis_idx(*, namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Key, Any]:
    return {(namespace or "", name): _plain(body)}


def _child_index(namespace: str | None, labels: Mapping[str, str], body: kopf.Body) -> dict[Key, Any]:
    key = _model_key(namespace, labels)
    return {key: _plain(body)} if key else {}


@kopf.index("apps", "v1", "deployments", labels=OURS)
def deployments_idx(*, namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Key, Any]:
    return _child_index(namespace, labels, body)


@kopf.index("v1", "services", labels=OURS)
def services_idx(*, namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Key, Any]:
    return _child_index(namespace, labels, body)


@kopf.index("autoscaling", "v2", "horizontalpodautoscalers", labels=OURS)
def hpas_idx(*, namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Key, Any]:
    return _child_index(namespace, labels, body)


@kopf.index("policy", "v1", "poddisruptionbudgets", labels=OURS)
def pdbs_idx(*, namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Key, Any]:
    return _child_index(namespace, labels, body)


@kopf.index("gateway.networking.k8s.io", "v1", "httproutes", labels=OURS)
def httproutes_idx(*, namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Key, Any]:
    return _child_index(namespace, labels, body)


@kopf.index("discovery.k8s.io", "v1", "endpointslices", labels=OURS)
def endpointslices_idx(*, namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Key, Any]:
    return _child_index(namespace, labels, body)


@kopf.index("v1", "pods", labels=OURS)
def pods_idx(*, namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Key, Any]:
    key = _model_key(namespace, labels)
    if key is None:
        return {}
    # Only what diagnosis reads: pods are the most numerous objects, keep them small.
    status = body.get("status") or {}
    slim = {
        "metadata": {"name": body["metadata"].get("name"), "labels": dict(labels)},
        "status": {
            field: status[field]
            for field in ("phase", "reason", "message", "conditions", "containerStatuses", "initContainerStatuses")
            if field in status
        },
    }
    return {key: slim}


def _plain(body: Mapping[str, Any]) -> dict[str, Any]:
    """A plain dict of the object without metadata.managedFields (nothing reads them; a third of the memory)."""
    plain = {key: body[key] for key in body}
    meta = plain.get("metadata")
    if isinstance(meta, Mapping) and "managedFields" in meta:
        plain["metadata"] = {key: value for key, value in meta.items() if key != "managedFields"}
    return plain


def _values(index: kopf.Index[Key, Any], key: Key) -> list[Any]:
    store = index.get(key)
    return list(store) if store is not None else []


def _observed(key: Key, indices: Mapping[str, kopf.Index[Key, Any]]) -> Observed:
    return Observed(
        deployments=_values(indices["deployments_idx"], key),
        services=_values(indices["services_idx"], key),
        hpas=_values(indices["hpas_idx"], key),
        pdbs=_values(indices["pdbs_idx"], key),
        httproutes=_values(indices["httproutes_idx"], key),
        pods=_values(indices["pods_idx"], key),
        endpointslices=_values(indices["endpointslices_idx"], key),
    )


INDEX_NAMES = (
    "modelapis_idx",
    "deployments_idx",
    "services_idx",
    "hpas_idx",
    "pdbs_idx",
    "httproutes_idx",
    "pods_idx",
    "endpointslices_idx",
)


def _indices(kwargs: Mapping[str, Any]) -> dict[str, kopf.Index[Key, Any]]:
    return {name: kwargs[name] for name in INDEX_NAMES}


# -- reconcile triggers --------------------------------------------------------------------------------
async def _reconcile(key: Key, body: Mapping[str, Any], indices: Mapping[str, kopf.Index[Key, Any]]) -> None:
    if body.get("metadata", {}).get("deletionTimestamp"):
        return  # being deleted: owner references remove the children; recreating them would only be refused
    lock = STATE.locks.setdefault(key, asyncio.Lock())
    async with METRICS.turn(lock, STATE.slots()):
        STATE.pending.discard(key)
        reconciler = await STATE.reconciler()
        observed = _observed(key, indices)
        try:
            with METRICS.reconciling(_error_reason):
                status = await reconciler.reconcile(body, observed)
        except kube.KubeError as error:
            # kopf retries the handler after ``delay``: the server's Retry-After when it sent one (429, 503)
            delay = error.retry_delay(soon=RETRY_SOON_SECONDS, later=RETRY_LATER_SECONDS)
            raise kopf.TemporaryError(f"Kubernetes API: {error} (retry in {delay:g} s)", delay=delay) from error
    _recheck_after_grace(key, observed.pods, indices)
    _recheck_endpoints(key, status, indices)
    _recheck_autoscaling_limit(key, observed.hpas, status, indices)


def _error_reason(error: Exception) -> str:
    """A failed reconcile's reason for the metrics: the API's (a short CamelCase word) or the exception's type."""
    if isinstance(error, kube.KubeError):
        return error.reason if error.reason.isalnum() else f"HTTP{error.status}"
    return type(error).__name__


def _recheck_endpoints(key: Key, status: ModelAPIStatus, indices: Mapping[str, kopf.Index[Key, Any]]) -> None:
    """EndpointSlices are not watched: while Ready waits for them, look again soon (the controller lists a ready pod
    within a moment), backing off to the resync interval if it does not."""
    if not any(c.type == "Ready" and c.reason == ENDPOINTS_NOT_READY for c in status.conditions):
        STATE.endpoint_rechecks.pop(key, None)
        return
    tries = STATE.endpoint_rechecks.get(key, 0)
    STATE.endpoint_rechecks[key] = tries + 1
    delay = min(ENDPOINTS_RECHECK_SECONDS * 2**tries, SETTINGS.resync_seconds)
    asyncio.get_running_loop().call_later(delay, _schedule, key, indices)


def _recheck_after_grace(
    key: Key, pods: Iterable[Mapping[str, Any]], indices: Mapping[str, kopf.Index[Key, Any]]
) -> None:
    """A pod still within its unschedulable grace changes nothing when the grace ends: look again then."""
    wait = capacity.grace_remaining(pods, datetime.now(UTC), SETTINGS.unschedulable_grace_seconds)
    if wait is not None:
        asyncio.get_running_loop().call_later(wait + 1.0, _schedule, key, indices)


def _recheck_autoscaling_limit(
    key: Key, hpas: Iterable[Mapping[str, Any]], status: ModelAPIStatus, indices: Mapping[str, kopf.Index[Key, Any]]
) -> None:
    """An HPA held at its maximum changes nothing when it has been so for long enough: look again then."""
    hpa = next((h for h in hpas if h.get("metadata", {}).get("name") == key[1]), None)
    was_limited = any(
        c.type == "Autoscaling" and c.reason == autoscaling.AUTOSCALING_LIMITED for c in status.conditions
    )
    wait = autoscaling.recheck_in(
        autoscaling.read_hpa(hpa),
        was_limited=was_limited,
        now=datetime.now(UTC),
        sustain=SETTINGS.autoscaling_limited_seconds,
    )
    if wait is not None:
        asyncio.get_running_loop().call_later(wait + 1.0, _schedule, key, indices)


@kopf.on.resume(*MODELAPIS)
@kopf.on.create(*MODELAPIS)
@kopf.on.update(*MODELAPIS)
async def reconcile_modelapi(*, body: kopf.Body, namespace: str | None, name: str, **kwargs: Any) -> None:
    await _reconcile((namespace or "", name), _plain(body), _indices(kwargs))


def _schedule(key: Key | None, indices: Mapping[str, kopf.Index[Key, Any]]) -> None:
    """Reconcile the ModelAPI a child belongs to, soon; triggers that arrive meanwhile coalesce."""
    if key is None or key in STATE.pending:
        return
    bodies = _values(indices["modelapis_idx"], key)
    if not bodies:
        return
    STATE.pending.add(key)

    async def run() -> None:
        current = _values(indices["modelapis_idx"], key)
        if not current:
            STATE.pending.discard(key)
            return
        try:
            await _reconcile(key, current[0], indices)
        except kopf.TemporaryError as error:
            log.warning("reconcile of %s/%s after a change failed (the resync loop retries): %s", *key, error)

    task = asyncio.get_running_loop().create_task(run())
    STATE.tasks.add(task)
    task.add_done_callback(STATE.tasks.discard)


@kopf.on.event("apps", "v1", "deployments", labels=OURS)
@kopf.on.event("v1", "services", labels=OURS)
@kopf.on.event("autoscaling", "v2", "horizontalpodautoscalers", labels=OURS)
@kopf.on.event("policy", "v1", "poddisruptionbudgets", labels=OURS)
@kopf.on.event("v1", "pods", labels=OURS)
async def child_changed(*, namespace: str | None, labels: kopf.Labels, **kwargs: Any) -> None:
    _schedule(_model_key(namespace, labels), _indices(kwargs))


@kopf.on.event(*MODELAPIS, annotations={names.ACTIVATE_ANNOTATION: kopf.PRESENT})
async def activation_requested(*, namespace: str | None, name: str, **kwargs: Any) -> None:
    """The activator holds requests for a model at zero: reconcile it now (it is woken). An event handler, since
    kopf leaves annotations of its own prefix out of the diff that triggers on.update."""
    _schedule((namespace or "", name), _indices(kwargs))


@kopf.on.delete(*MODELAPIS, optional=True)  # optional: no finalizer; owner references delete the children
def forget_modelapi(*, uid: str, namespace: str | None, name: str, **_: Any) -> None:
    if STATE.reconciler_ is not None:
        STATE.reconciler_.forget(uid)
    STATE.locks.pop((namespace or "", name), None)
    STATE.endpoint_rechecks.pop((namespace or "", name), None)
