"""One level-based reconcile of a ModelAPI: gather → build → apply → observe → status.

The cluster is the source of truth: which revision is stable is read from the revision record of
each revision's Deployment (revision_record.py), so a restarted operator continues a rollout where it stopped. Every
desired child is applied only when it drifted from what is observed; every owned child that is no
longer desired is deleted. Replica counts change only through the scale subresource, never through
server-side apply, so the HorizontalPodAutoscaler can own them without being reset.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from modelapi_operator import kube, names, zero
from modelapi_operator.api import ColdStart, ModelAPISpec, ModelAPIStatus, format_validation_error
from modelapi_operator.autoscaling import DEFAULT_LIMITED_SECONDS, read_hpa
from modelapi_operator.builders import (
    EXPOSE_LABEL,
    ActivatorEndpoints,
    Manifest,
    Owner,
    RuntimeImages,
    compute_revision,
    expose_route_name,
    gateway_of,
    service_url,
)
from modelapi_operator.builders.service import SERVICE_NAME_LABEL, SLICE_MANAGED_BY_LABEL
from modelapi_operator.canary import Measurement
from modelapi_operator.capacity import DEFAULT_GRACE_SECONDS, diagnose_revision, unschedulable_pods
from modelapi_operator.cluster_policy import ClusterPolicy
from modelapi_operator.diagnose import Failure
from modelapi_operator.event_posting import EventSink, InlineEvents
from modelapi_operator.expose import Exposure, claim_holder, exposed_condition
from modelapi_operator.plan import (
    Plan,
    PlanInput,
    analysis_target,
    known_artifact_bytes,
    plan_children,
    ready_of,
    replicas_of,
    revision_of,
    role_of,
)
from modelapi_operator.prometheus import Prometheus, PrometheusError
from modelapi_operator.reasons import (
    ENDPOINTS_NOT_READY,
    INVALID_SPEC,
    NAME_CONFLICT,
    PERMISSION_DENIED,
    POLICY_VIOLATION,
    SERVICE_ACCOUNT_NOT_FOUND,
)
from modelapi_operator.redaction import redact_text, redact_uri
from modelapi_operator.revision_record import RevisionRecord
from modelapi_operator.routing import routable_pods
from modelapi_operator.status import Observation, RevisionView, compute_status
from modelapi_operator.timestamps import now_rfc3339, rfc3339

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Observed:
    """The children of one ModelAPI as the operator currently sees them (from its watch caches)."""

    deployments: Sequence[Manifest] = ()
    services: Sequence[Manifest] = ()
    hpas: Sequence[Manifest] = ()
    pdbs: Sequence[Manifest] = ()
    httproutes: Sequence[Manifest] = ()
    pods: Sequence[Manifest] = ()
    endpointslices: Sequence[Manifest] = ()
    configmaps: Sequence[Manifest] = ()
    # The EndpointSlice controller's slices of the ``<name>`` Service (slim: which pods, ready or not), from the
    # operator's index; None: not kept, Ready lists them from the API when it is about to become True.
    service_slices: Sequence[Manifest] | None = None

    def children(self) -> Iterable[Manifest]:
        yield from self.deployments
        yield from self.services
        yield from self.hpas
        yield from self.pdbs
        yield from self.httproutes
        yield from self.endpointslices
        yield from self.configmaps


def is_subset(desired: Any, observed: Any) -> bool:
    """True when every field the operator sets already has that value (so applying would change nothing)."""
    if isinstance(desired, Mapping):
        return isinstance(observed, Mapping) and all(
            key in observed and is_subset(value, observed[key]) for key, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(observed, list)
            and len(desired) == len(observed)
            and all(is_subset(d, o) for d, o in zip(desired, observed, strict=True))
        )
    return bool(desired == observed)


# Maps whose extra keys change behaviour (a selector with one more label selects nothing): they must match exactly.
# Server-side apply leaves keys that another manager added, so those are removed with a merge patch.
EXACT_MAPS: tuple[tuple[str, ...], ...] = (("spec", "selector"), ("spec", "selector", "matchLabels"))


def dropped_selector_fix(desired: Mapping[str, Any], observed: Mapping[str, Any]) -> dict[str, Any] | None:
    """A Service that must have no selector (its endpoints are the operator's EndpointSlice) but has one: a merge
    patch that removes it (server-side apply skipped as a subset would leave it)."""
    if desired.get("kind") != "Service" or "selector" in (desired.get("spec") or {}):
        return None
    return {"spec": {"selector": None}} if (observed.get("spec") or {}).get("selector") else None


def _at(manifest: Mapping[str, Any], path: Sequence[str]) -> Any:
    value: Any = manifest
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value


def exact_map_fix(desired: Mapping[str, Any], observed: Mapping[str, Any]) -> dict[str, Any] | None:
    """A merge patch that deletes keys someone added to a map that must match exactly, or None."""
    for path in EXACT_MAPS:
        want, have = _at(desired, path), _at(observed, path)
        if not isinstance(want, Mapping) or not isinstance(have, Mapping):
            continue
        if all(isinstance(v, str) for v in want.values()) and set(have) - set(want):
            patch: dict[str, Any] = dict.fromkeys(sorted(set(have) - set(want)))
            for key in reversed(path):
                patch = {key: patch}
            return patch
    return None


ACTIVATOR_READ_SECONDS = 2.0
# Ready pods the <name> Service's EndpointSlices do not list yet: Ready=False EndpointsNotReady is written (a status
# patch and an Event) only when the slices have not followed within this long, which they usually do.
ENDPOINTS_GRACE_SECONDS = 2.0
SLICE_CONTROLLER = "endpointslice-controller.k8s.io"
SLICE_CONTROLLERS = (SLICE_CONTROLLER, "endpointslicemirroring-controller.k8s.io")


def activator_from_slices(slices: Iterable[Manifest]) -> ActivatorEndpoints | None:
    """Ready, not terminating addresses and the ``http`` port (else the first) of the activator's EndpointSlices."""
    addresses: list[str] = []
    port: int | None = None
    address_type = "IPv4"
    for item in slices:
        ports = item.get("ports") or []
        named = next((p for p in ports if p.get("name") == "http"), ports[0] if ports else None)
        if named is None or named.get("port") is None:
            continue
        for endpoint in item.get("endpoints") or []:
            conditions = endpoint.get("conditions") or {}
            if conditions.get("ready") is False or conditions.get("terminating") is True:
                continue
            addresses += endpoint.get("addresses") or []
            port = int(named["port"])
            address_type = str(item.get("addressType") or "IPv4")
    if not addresses or port is None:
        return None
    return ActivatorEndpoints(addresses=tuple(sorted(set(addresses))), port=port, address_type=address_type)


def forbidden_failure(error: kube.KubeError) -> Failure:
    """The API server's own words name the verb, the resource and the identity; say what to do about it."""
    return Failure(
        PERMISSION_DENIED,
        f"the operator is not allowed to manage this ModelAPI's children: {error.message}. Grant the permission to "
        "the operator's ServiceAccount (the Helm chart's Role has every one it needs); the ModelAPI recovers on "
        "its own.",
    )


def controlled_by(uid: str, item: Mapping[str, Any]) -> bool:
    """Whether this ModelAPI (by uid) is the object's controller: the only objects the operator writes or deletes."""
    return any(
        ref.get("uid") == uid and ref.get("controller") is True
        for ref in item.get("metadata", {}).get("ownerReferences") or []
    )


def _key(manifest: Mapping[str, Any]) -> tuple[str, str]:
    return (manifest["kind"], manifest["metadata"]["name"])


def _cached(manifest: Mapping[str, Any], observed: Observed) -> Manifest | None:
    """The object of this child's kind and name in the watch caches (any owner's), or None."""
    kind, name = manifest["kind"], manifest["metadata"]["name"]
    return next(
        (item for item in observed.children() if item.get("kind") == kind and item["metadata"]["name"] == name),
        None,
    )


def _owned_by(uid: str, manifests: Iterable[Manifest]) -> list[Manifest]:
    return [item for item in manifests if controlled_by(uid, item)]


def _controller_of(item: Mapping[str, Any]) -> str:
    ref = next((r for r in item.get("metadata", {}).get("ownerReferences") or [] if r.get("controller") is True), None)
    return f"{ref.get('kind', '?')} {ref.get('name', '?')}" if ref is not None else "no controller"


def name_conflict(foreign: Sequence[Manifest], owner: Owner) -> Failure:
    """Children whose names are taken by objects this ModelAPI does not control: say which, and what to do."""
    named = "; ".join(
        f"{item.get('kind', '?')} {owner.namespace}/{item['metadata']['name']} exists and is not controlled by this "
        f"ModelAPI ({_controller_of(item)})"
        for item in foreign
    )
    return Failure(
        NAME_CONFLICT,
        f"{named}. The operator leaves it untouched and does not manage that child: delete or rename the object, "
        "or give this ModelAPI another name; it recovers on its own once the name is free.",
    )


class Reconciler:
    """Reconciles ModelAPIs with one Kubernetes client and one set of operator settings."""

    def __init__(
        self,
        client: kube.KubeClient,
        images: RuntimeImages,
        *,
        gateway_api_installed: bool,
        prometheus: Prometheus | None = None,
        policy: ClusterPolicy | None = None,
        activator_service: tuple[str, str] | None = None,
        unschedulable_grace_seconds: float = DEFAULT_GRACE_SECONDS,
        autoscaling_limited_seconds: float = DEFAULT_LIMITED_SECONDS,
        endpoints_grace_seconds: float = ENDPOINTS_GRACE_SECONDS,
        events: EventSink | None = None,
    ) -> None:
        self.kube = client
        # where a reconcile's Events go after its status patch: the operator queues them (event_posting.EventQueue)
        self.events: EventSink = events or InlineEvents(client)
        self.endpoints_grace_seconds = endpoints_grace_seconds
        self.unschedulable_grace_seconds = unschedulable_grace_seconds
        self.autoscaling_limited_seconds = autoscaling_limited_seconds
        self.policy = policy or ClusterPolicy()
        self.images = images
        self.gateway_api_installed = gateway_api_installed
        self.prometheus = prometheus
        self.activator_service = activator_service  # (namespace, name) of the activator's Service
        self._activator: tuple[float, ActivatorEndpoints | None] = (-1e9, None)
        # The status this process last wrote, by ModelAPI uid. The operator is the only writer of status, so
        # this is never older than the copy in a watch event that may not have caught up with our last patch
        # (which would otherwise repeat transitions and their Events). Kept as its JSON: a sixth of the memory of
        # the model (at 1,000 ModelAPIs, 0.9 MB against 5.7 MB), parsed again once per reconcile.
        self._written: dict[str, str] = {}
        # Pods a cluster autoscaler last announced a scale-up for, by ModelAPI uid: kept through a failed read, so
        # a passing API error does not flip WaitingForCapacity to Unschedulable and back.
        self._scaling_up: dict[str, frozenset[str]] = {}
        # When this process first saw a ModelAPI's ready pods not yet listed by its EndpointSlices (monotonic), by
        # uid, while that lasts without having been written (``_endpoints_wait_is_young``).
        self._endpoints_waiting: dict[str, float] = {}
        # The ModelAPI's resourceVersion after this process's last status patch, by uid, until the caller takes it
        # (``written_version``).
        self._written_versions: dict[str, str] = {}

    def written_version(self, uid: str) -> str | None:
        """The resourceVersion the last reconcile of ``uid`` left the ModelAPI at by writing its status, if it did
        (once: taken, it is forgotten). What the next look at the ModelAPI should find when nothing else changed."""
        return self._written_versions.pop(uid, None)

    def forget(self, uid: str) -> None:
        self._written.pop(uid, None)
        self._written_versions.pop(uid, None)
        self._scaling_up.pop(uid, None)
        self._endpoints_waiting.pop(uid, None)

    async def reconcile(self, body: Mapping[str, Any], observed: Observed) -> ModelAPIStatus:
        meta = body["metadata"]
        owner = Owner(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])
        written = self._written.get(owner.uid)
        previous = (
            ModelAPIStatus.model_validate_json(written)
            if written is not None
            else ModelAPIStatus.model_validate(body.get("status") or {})
        )
        deployments = _owned_by(owner.uid, observed.deployments)
        try:
            spec = ModelAPISpec.model_validate(body.get("spec") or {})
        except ValidationError as error:
            problems = format_validation_error(error).problems
            message = "; ".join(f"spec.{problem}" if problem.path else problem.message for problem in problems)
            invalid = Failure(INVALID_SPEC, f"{redact_text(message)}. Fix the manifest and apply it again.")
            return await self._finish(
                body=body,
                owner=owner,
                revision=None,
                invalid=invalid,
                deployments=deployments,
                observed=observed,
                previous=previous,
                plan=Plan(),
            )

        violations = self.policy.violations(spec)
        if violations:
            # Like an invalid spec: nothing is applied, nothing deleted; a revision that serves keeps serving.
            message = "; ".join(violations)
            refused = Failure(
                POLICY_VIOLATION,
                f"the cluster policy refuses this spec: {message}. Nothing of it was applied (a revision that "
                "already serves keeps serving); change the spec, or ask the cluster admin about the policy.",
            )
            return await self._finish(
                body=body,
                owner=owner,
                revision=None,
                invalid=refused,
                deployments=deployments,
                observed=observed,
                previous=previous,
                plan=Plan(),
            )
        revision = compute_revision(spec, owner, self.images)
        now = datetime.now(UTC)
        exposure = await self._exposure(spec, owner)
        annotations = meta.get("annotations") or {}
        plan = plan_children(
            PlanInput(
                spec=spec,
                owner=owner,
                revision=revision,
                images=self.images,
                deployments=deployments,
                now=now,
                gateway_api_installed=self.gateway_api_installed,
                analysis_available=self.prometheus is not None,
                measurement=await self._measure(spec, owner, deployments, revision, now),
                rollback_requested=annotations.get(names.ROLLBACK_ANNOTATION) == "true",
                activation_requested=bool(annotations.get(names.ACTIVATE_ANNOTATION)),
                idle=await self._idle(spec, owner, deployments, revision, now),
                activator=await self.activator_endpoints() if spec.autoscaling.scales_to_zero else None,
                artifact_bytes=known_artifact_bytes(spec, previous.cold_start, deployments),
                expose_allowed=exposure is None or exposure.holder is None,
            )
        )
        try:
            foreign = await self._execute(plan, owner, observed)
        except kube.Forbidden as error:
            # RBAC refused a write: say which (condition and Event) instead of failing silently, then let the
            # caller retry as for any API error; once the permission is back the next pass converges. (A namespace
            # being deleted refuses new objects with a 403 too: nothing to report there.)
            if "being terminated" in error.message:
                raise
            await self._finish(
                body=body,
                owner=owner,
                revision=revision,
                invalid=None,
                forbidden=forbidden_failure(error),
                deployments=deployments,
                observed=observed,
                previous=previous,
                plan=Plan(stable_revision=plan.stable_revision, canary=plan.canary),
            )
            raise
        deployments = self._after(
            plan, deployments, skipped={item["metadata"]["name"] for item in foreign if item["kind"] == "Deployment"}
        )
        conflict = name_conflict(foreign, owner) if foreign else None
        missing_reference = None if foreign else await self._check_references(spec, owner)
        cold_start = await self._cold_start(owner, plan.stable_revision, previous)
        prediction_log_failures = await self._prediction_log_failures(spec, owner)
        return await self._finish(
            body=body,
            owner=owner,
            revision=revision,
            invalid=None,
            conflict=conflict,
            missing_reference=missing_reference,
            deployments=deployments,
            observed=observed,
            previous=previous,
            plan=plan,
            cold_start=cold_start,
            exposure=exposure,
            prediction_log_failures=prediction_log_failures,
        )

    async def _prediction_log_failures(self, spec: ModelAPISpec, owner: Owner) -> list[tuple[str, str]] | None:
        """(revision, reason) of the revisions whose prediction log fails to write, from the runtime's
        modelapi_prediction_log_failing series; None without spec.monitoring.predictionLog, without Prometheus or
        when it does not answer (no PredictionLog condition then)."""
        if spec.monitoring.prediction_log is None or self.prometheus is None:
            return None
        try:
            return await self.prometheus.prediction_log_failures(namespace=owner.namespace, model=owner.name)
        except PrometheusError as error:
            log.info("prediction log of %s/%s not checked: Prometheus: %s", owner.namespace, owner.name, error)
            return None

    async def _exposure(self, spec: ModelAPISpec, owner: Owner) -> Exposure | None:
        """spec.expose as the cluster has it: the Gateway, this ModelAPI's route and who else claims its address.

        Every expose route is listed (one list, by label, across namespaces; in this namespace only when the
        operator may not list them all)."""
        if spec.expose is None:
            return None
        if not self.gateway_api_installed:
            return Exposure(spec.expose, owner, False, gateway=None, route=None, holder=None)
        try:
            routes = await self.kube.list(kube.HTTPROUTE, None, {EXPOSE_LABEL: "true"})
        except kube.Forbidden:
            routes = await self.kube.list(kube.HTTPROUTE, owner.namespace, {EXPOSE_LABEL: "true"})
        namespace, name = gateway_of(spec.expose, owner)
        try:
            gateway = await self.kube.get(kube.GATEWAY, namespace, name)
        except kube.Forbidden:
            gateway = None  # the operator may not read it: reported as not found, with its name
        route_name = expose_route_name(owner.name)
        own = next(
            (
                route
                for route in routes
                if route["metadata"]["name"] == route_name and route["metadata"].get("namespace") == owner.namespace
            ),
            None,
        )
        holder = claim_holder(spec.expose, owner, routes)
        return Exposure(spec.expose, owner, True, gateway=gateway, route=own, holder=holder)

    async def _measure(
        self, spec: ModelAPISpec, owner: Owner, deployments: Sequence[Manifest], revision: str, now: datetime
    ) -> Measurement | None:
        target = analysis_target(spec, deployments, revision, now)
        if target is None or self.prometheus is None or spec.rollout.canary is None:
            return None
        analysis = spec.rollout.canary.analysis
        window = analysis.interval_seconds if analysis is not None else 30
        try:
            return await self.prometheus.measure(
                namespace=owner.namespace,
                model=owner.name,
                canary_revision=target[0],
                stable_revision=target[1],
                window=window,
            )
        except PrometheusError as error:  # no verdict this interval: neither a pass nor a failure
            log.warning("canary analysis of %s/%s skipped: Prometheus: %s", owner.namespace, owner.name, error)
            return None

    async def _idle(
        self, spec: ModelAPISpec, owner: Owner, deployments: Sequence[Manifest], revision: str, now: datetime
    ) -> bool | None:
        """Whether the model received no request over scaleToZeroAfterSeconds (asked only when it could go to zero
        now); None when not asked or Prometheus has no answer (never read as idle)."""
        stable = next((d for d in deployments if role_of(d) == "stable" and revision_of(d) == revision), None)
        if self.prometheus is None or not zero.idle_check_due(spec.autoscaling, stable, now):
            return None
        try:
            requests = await self.prometheus.requests_over(
                namespace=owner.namespace, model=owner.name, window=spec.autoscaling.idle_seconds
            )
        except PrometheusError as error:
            log.warning("idleness of %s/%s not known: Prometheus: %s", owner.namespace, owner.name, error)
            return None
        return None if requests is None else requests <= 0

    async def activator_endpoints(self) -> ActivatorEndpoints | None:
        """The activator's ready endpoints, from its Service's EndpointSlices (read at most every 2 s)."""
        if self.activator_service is None:
            return None
        read_at, known = self._activator
        if time.monotonic() - read_at < ACTIVATOR_READ_SECONDS:
            return known
        namespace, name = self.activator_service
        try:
            slices = await self.kube.list(kube.ENDPOINT_SLICE, namespace, {SERVICE_NAME_LABEL: name})
        except kube.KubeError as error:
            # What was known stands (a passing API error must not wake every model at zero); asked again soon.
            log.warning("activator endpoints not read (%s): keeping the last known", error)
            self._activator = (time.monotonic(), known)
            return known
        found = activator_from_slices(slices)
        self._activator = (time.monotonic(), found)
        return found

    async def _cold_start(self, owner: Owner, revision: str, previous: ModelAPIStatus) -> ColdStart | None:
        """Cold-start timings of the stable revision, read once per revision (when Prometheus has them)."""
        known = previous.cold_start
        if self.prometheus is None or not revision or (known is not None and known.revision == revision):
            return None
        try:
            phases = await self.prometheus.cold_start(namespace=owner.namespace, model=owner.name, revision=revision)
        except PrometheusError as error:
            log.info("cold start of %s/%s not read: %s", owner.namespace, owner.name, error)
            return None
        from_store, store_bytes = phases.get("from_store"), phases.get("store_bytes")
        size = phases.get("artifact_bytes")
        # The runtime exports its cold-start gauges (as 0) from its first scrape on, while it still downloads and
        # loads; where the artifact came from is set only once the start is over: until then there is nothing to
        # record (and the revision would keep zeros, as it is read once).
        if from_store is None:
            return None
        return ColdStart(
            revision=revision,
            download_seconds=phases["download"],
            load_seconds=phases["load"],
            warmup_seconds=phases["warmup"],
            source=None if from_store is None else ("store" if from_store >= 1 else "cache"),
            store_bytes=None if store_bytes is None else int(store_bytes),
            artifact_bytes=None if size is None else int(size),
        )

    # -- execute ----------------------------------------------------------------------------------
    async def _foreign(self, manifest: Manifest, owner: Owner, observed: Observed) -> Manifest | None:
        """The object that holds this child's name without being controlled by this ModelAPI, or None.

        Read from the watch caches first (every child the operator labelled is there); only a name the caches do
        not know is read from the API, after a create or ``apply_new`` found it taken (the cache was behind, or
        someone else holds it: while a conflict lasts), never for a child the operator already controls.
        """
        cached = _cached(manifest, observed)
        if cached is not None:
            found: Manifest | None = cached
        else:
            found = await self.kube.get(kube.kind_of(manifest), owner.namespace, manifest["metadata"]["name"])
        if found is None or controlled_by(owner.uid, found):
            return None
        return {**found, "kind": manifest["kind"]}

    async def _execute(self, plan: Plan, owner: Owner, observed: Observed) -> list[Manifest]:
        """Carry the plan out; returns the objects that hold a child's name without being ours (left untouched)."""
        existing = {_key(item): item for item in _owned_by(owner.uid, observed.children())}
        to_create = {_key(manifest) for manifest in plan.create}
        unknown = [m for m in plan.apply if _key(m) not in existing and _key(m) not in to_create]
        # The children the caches do not know are applied only if nobody holds their names, beside the creates.
        (foreign, created), (taken, applied_new) = await asyncio.gather(
            self._create(plan.create, owner, observed), self._apply_new(unknown, owner, observed)
        )
        foreign += taken
        blocked = {_key(item) for item in foreign}
        # Older revisions change role before the new one is applied as stable: a process killed in between leaves
        # at most one stable, so a promoted canary's old stable is never mistaken for a stray and deleted.
        for name, extra in plan.annotate.items():
            await self.kube.merge_patch(kube.DEPLOYMENT, owner.namespace, name, {"metadata": {"annotations": extra}})
        for manifest in plan.apply:
            key = (manifest["kind"], manifest["metadata"]["name"])
            if key in blocked:
                continue
            if key in applied_new:
                continue
            # Not cached: created just now, or found to be ours (the cache was behind) by _create or _apply_new
            current = existing.get(key, created.get(key))
            if current is None or not is_subset(manifest, current):
                await self.kube.apply(manifest)
            for fix in (exact_map_fix, dropped_selector_fix):
                patch = fix(manifest, current) if current is not None else None
                if patch is not None:
                    kind = kube.kind_of(manifest)
                    await self.kube.merge_patch(kind, owner.namespace, manifest["metadata"]["name"], patch)
        for manifest in plan.apply:
            if manifest["kind"] == "Service" and "selector" not in manifest["spec"]:
                await self._drop_controller_slices(owner.namespace, manifest["metadata"]["name"])
        for name, replicas in plan.scale.items():
            if ("Deployment", name) in blocked:
                continue
            await self.kube.scale(kube.DEPLOYMENT, owner.namespace, name, replicas)
        wanted = {(m["kind"], m["metadata"]["name"]) for m in plan.apply}
        for (kind_name, name), item in existing.items():
            if (kind_name, name) in wanted or (kind_name == "Deployment" and name in plan.keep_deployments):
                continue
            if kind_name == "EndpointSlice" and not await self._pods_take_over(owner.namespace, item):
                continue  # the activator keeps taking the Service's traffic until its pods' endpoints are there
            await self.kube.delete(kube.kind_of(item), owner.namespace, name, uid=item["metadata"].get("uid"))
            log.info("deleted %s %s/%s: no longer desired", kind_name, owner.namespace, name)
        if plan.clear_activation_request:
            await self.kube.merge_patch(
                kube.MODELAPI,
                owner.namespace,
                owner.name,
                {"metadata": {"annotations": {names.ACTIVATE_ANNOTATION: None}}},
            )
        if plan.clear_rollback_request:
            await self.kube.merge_patch(
                kube.MODELAPI,
                owner.namespace,
                owner.name,
                {"metadata": {"annotations": {names.ROLLBACK_ANNOTATION: None}}},
            )
        return foreign

    async def _create(
        self, manifests: Sequence[Manifest], owner: Owner, observed: Observed
    ) -> tuple[list[Manifest], dict[tuple[str, str], Manifest]]:
        """Create these children, in order; returns those whose names someone else holds, and what was created (as
        the API server answered: an apply of the same fields right after changes nothing and is skipped)."""
        foreign: list[Manifest] = []
        created: dict[tuple[str, str], Manifest] = {}
        for manifest in manifests:
            try:
                created[_key(manifest)] = await self.kube.create(manifest)
            except kube.KubeError as error:
                if error.status != 409:
                    raise
                # Already there: ours when our cache was behind (apply takes it from here), else someone else's.
                taken = await self._foreign(manifest, owner, observed)
                if taken is not None:
                    foreign.append(taken)
        return foreign, created

    async def _apply_new(
        self, manifests: Sequence[Manifest], owner: Owner, observed: Observed
    ) -> tuple[list[Manifest], set[tuple[str, str]]]:
        """Apply these children the caches do not know, all at once, only where no object holds the name yet
        (``apply_new``): a new ModelAPI's Services, HPA and PDB cost one request each. A name that is taken is read:
        someone else's is returned (never applied: server-side apply with force would take it over); ours (the
        cache was behind) is left to the caller's apply. Returns the foreign holders and what was applied."""

        async def one(manifest: Manifest) -> tuple[bool, Manifest | None]:
            """(applied, the foreign holder of its name)"""
            if _cached(manifest, observed) is not None:  # in a cache, not ours: another ModelAPI's, no request
                return False, await self._foreign(manifest, owner, observed)
            try:
                await self.kube.apply_new(manifest)
                return True, None
            except kube.KubeError as error:
                if error.status not in (400, 409, 422):
                    raise
                # 409: the name is taken. 400/422: the manifest is invalid, on its own or, should an API server
                # validate the merge into an existing object before its precondition (v1.33 does not: a PDB whose
                # merge would be invalid still gets the 409), as merged into someone else's: the holder tells.
                holder = await self._foreign(manifest, owner, observed)
                if error.status != 409 and holder is None:
                    raise
            return False, holder

        outcomes = await asyncio.gather(*(one(manifest) for manifest in manifests))
        foreign = [holder for _, holder in outcomes if holder is not None]
        applied = {_key(manifest) for manifest, (done, _) in zip(manifests, outcomes, strict=True) if done}
        return foreign, applied

    async def _pods_take_over(self, namespace: str, activator_slice: Manifest) -> bool:
        """Whether the EndpointSlice controller lists a ready pod for the Service of this activator slice: deleting the
        slice before would leave the Service without endpoints for a moment (kube-proxy rejects connections then)."""
        service = (activator_slice["metadata"].get("labels") or {}).get(SERVICE_NAME_LABEL)
        if not service:
            return True
        slices = await self.kube.list(
            kube.ENDPOINT_SLICE, namespace, {SERVICE_NAME_LABEL: service, SLICE_MANAGED_BY_LABEL: SLICE_CONTROLLER}
        )
        return any(
            (endpoint.get("conditions") or {}).get("ready") is not False
            for item in slices
            for endpoint in item.get("endpoints") or []
        )

    async def _drop_controller_slices(self, namespace: str, service: str) -> None:
        """A Service that lost its selector keeps what the controllers wrote for it with its pods' addresses: the
        EndpointSlice controller's slices (it stops syncing the Service, it does not delete them) and the Endpoints
        object, which the mirroring controller then copies into a slice of its own. Those stale addresses would take
        traffic beside the activator's slice, so they go (the Endpoints first: its mirror goes with it)."""
        try:
            await self.kube.delete(kube.ENDPOINTS, namespace, service)
        except kube.KubeError as error:
            log.warning("stale Endpoints %s/%s not deleted: %s", namespace, service, error)
        for manager in SLICE_CONTROLLERS:
            stale = await self.kube.list(
                kube.ENDPOINT_SLICE, namespace, {SERVICE_NAME_LABEL: service, SLICE_MANAGED_BY_LABEL: manager}
            )
            for item in stale:
                meta = item["metadata"]
                await self.kube.delete(kube.ENDPOINT_SLICE, namespace, meta["name"], uid=meta.get("uid"))

    def _after(self, plan: Plan, deployments: list[Manifest], *, skipped: set[str]) -> list[Manifest]:
        """The Deployments as they will be after this plan (for status, without waiting for the watch)."""
        result = []
        for deployment in deployments:
            name = deployment["metadata"]["name"]
            if name not in plan.keep_deployments:
                continue
            desired = next((m for m in plan.apply if m["kind"] == "Deployment" and m["metadata"]["name"] == name), None)
            annotations = dict(deployment["metadata"].get("annotations") or {})
            if desired is not None:
                annotations.update(desired["metadata"].get("annotations") or {})
            annotations.update(plan.annotate.get(name, {}))
            merged = {**deployment, "metadata": {**deployment["metadata"], "annotations": annotations}}
            if name in plan.scale:
                merged["spec"] = {**deployment.get("spec", {}), "replicas": plan.scale[name]}
            result.append(merged)
        known = {d["metadata"]["name"] for d in result}
        result += [created for created in plan.create if created["metadata"]["name"] not in known | skipped]
        return result

    async def _check_references(self, spec: ModelAPISpec, owner: Owner) -> Failure | None:
        account = spec.storage.service_account_name
        if account and await self.kube.get(kube.SERVICE_ACCOUNT, owner.namespace, account) is None:
            return Failure(
                SERVICE_ACCOUNT_NOT_FOUND,
                f"spec.storage.serviceAccountName: ServiceAccount {account} does not exist in namespace "
                f"{owner.namespace}: create it or fix the name.",
            )
        return None

    # -- status -----------------------------------------------------------------------------------
    async def _finish(
        self,
        *,
        body: Mapping[str, Any],
        owner: Owner,
        revision: str | None,
        invalid: Failure | None,
        deployments: Sequence[Manifest],
        observed: Observed,
        previous: ModelAPIStatus,
        plan: Plan,
        cold_start: ColdStart | None = None,
        forbidden: Failure | None = None,
        conflict: Failure | None = None,
        missing_reference: Failure | None = None,
        exposure: Exposure | None = None,
        prediction_log_failures: list[tuple[str, str]] | None = None,
    ) -> ModelAPIStatus:
        now = datetime.now(UTC)
        scaling_up = await self._read_scaling_up(owner, observed.pods, now)
        views = _views(
            deployments,
            observed.pods,
            revision,
            plan.target_failure,
            now=now,
            grace=self.unschedulable_grace_seconds,
            scaling_up=scaling_up,
        )
        stable_after = next((d for d in deployments if revision_of(d) == plan.stable_revision), None)
        observation = Observation(
            generation=int(body["metadata"].get("generation") or 0),
            desired_revision=revision,
            invalid=invalid,
            forbidden=forbidden,
            conflict=conflict,
            missing_reference=missing_reference,
            revisions=views,
            url=service_url(owner),
            previous=previous,
            now=now_rfc3339(),
            canary=plan.canary,
            cold_start=cold_start,
            zero_state=plan.zero.state if plan.zero is not None else None,
            zero_since=zero.parked_since(stable_after),
            zero_notice=plan.zero.notice if plan.zero is not None else None,
            autoscaling=read_hpa(hpa := _hpa_of(owner, observed), _scale_target(hpa, deployments)),
            autoscaling_limited_seconds=self.autoscaling_limited_seconds,
            exposed=None if exposure is None else exposed_condition(exposure, service_url(owner)),
            prediction_log_failures=prediction_log_failures,
        )
        routable = await self._routable(
            owner,
            views=views,
            revision=revision,
            failed=observation.modelapi_failure is not None,
            pods=observed.pods,
            slices=observed.service_slices,
            previous=previous,
        )
        observation = replace(observation, routable=routable)
        status, events = compute_status(observation)
        if not plan.events and self._endpoints_wait_is_young(owner.uid, status, previous):
            # Nothing written yet: the slices usually list the pods within a moment, and Ready=True then follows
            # the previous status directly (one status patch and one Event fewer). The status is returned as
            # computed, so the caller looks again soon (triggers.py) and a change of the slices reconciles at once.
            return status
        if _comparable(status) != _comparable(previous):
            # A merge patch: None becomes null, which removes a field (e.g. the canary block after a promotion).
            patch = status.model_dump(mode="json")
            version = await self.kube.patch_status(kube.MODELAPI, owner.namespace, owner.name, patch)
            if version is not None:
                self._written_versions[owner.uid] = version
        self._written[owner.uid] = status.model_dump_json()
        # After the status they tell of (an Event never announces a status that was not written), and not waited for
        # by the reconcile's slot where the operator queues them (event_posting.py).
        happened = now_rfc3339()
        for event in [*plan.events, *events]:
            await self.events.post(body, event, happened)
        return status

    def _endpoints_wait_is_young(self, uid: str, status: ModelAPIStatus, previous: ModelAPIStatus) -> bool:
        """Whether Ready=False EndpointsNotReady is newly computed and has lasted less than the grace."""
        if _ready_reason(status) != ENDPOINTS_NOT_READY:
            self._endpoints_waiting.pop(uid, None)
            return False
        if _ready_reason(previous) == ENDPOINTS_NOT_READY:
            return False  # already written: nothing to hold back
        since = self._endpoints_waiting.setdefault(uid, time.monotonic())
        if time.monotonic() - since < self.endpoints_grace_seconds:
            return True
        self._endpoints_waiting.pop(uid, None)
        return False

    async def _routable(
        self,
        owner: Owner,
        *,
        views: Sequence[RevisionView],
        revision: str | None,
        failed: bool,
        pods: Sequence[Manifest],
        slices: Sequence[Manifest] | None,
        previous: ModelAPIStatus,
    ) -> int | None:
        """Pods of the current revision that the ``<name>`` Service's EndpointSlices list as ready, looked at only
        when Ready is about to become True: from ``slices`` (the operator's index) when given, else read (one list,
        by label), so a ModelAPI that serves costs no read. None: not checked, or the slices could not be read
        (ready replicas decide, as before)."""
        target = next((view for view in views if view.revision == revision), None)
        was_ready = any(c.type == "Ready" and c.status == "True" for c in previous.conditions)
        if was_ready or failed or target is None or target.role != "stable":
            return None
        if target.desired < 1 or target.ready < target.desired or target.failure is not None:
            return None
        own = {str(pod.get("metadata", {}).get("name")) for pod in pods if revision_of(pod) == revision}
        if slices is not None:
            return routable_pods(slices, own)
        try:
            listed = await self.kube.list(kube.ENDPOINT_SLICE, owner.namespace, {SERVICE_NAME_LABEL: owner.name})
        except kube.KubeError as error:
            log.info(
                "EndpointSlices of %s/%s not read (%s): Ready follows ready replicas",
                owner.namespace,
                owner.name,
                error,
            )
            return None
        return routable_pods(listed, own)

    async def _read_scaling_up(self, owner: Owner, pods: Sequence[Manifest], now: datetime) -> frozenset[str]:
        """Pods a cluster autoscaler announced a scale-up for (its ``TriggeredScaleUp`` Events). Read only while
        some pod is unschedulable past the grace: one list per reconcile, filtered by the API server. A failed read
        keeps the last answer (none at first: the reason says ``Unschedulable``, which is still true)."""
        stuck = unschedulable_pods(pods, now, self.unschedulable_grace_seconds)
        if not stuck:
            self._scaling_up.pop(owner.uid, None)
            return frozenset()
        try:
            events = await self.kube.list(
                kube.EVENT, owner.namespace, {}, fields={"involvedObject.kind": "Pod", "reason": "TriggeredScaleUp"}
            )
        except kube.KubeError as error:
            log.info("autoscaler events in %s not read (%s): keeping what was known", owner.namespace, error)
            return self._scaling_up.get(owner.uid, frozenset())
        names_ = {str(pod.get("metadata", {}).get("name")) for pod in stuck}
        found = frozenset(
            name for event in events if (name := (event.get("involvedObject") or {}).get("name")) in names_
        )
        self._scaling_up[owner.uid] = found
        return found


def _hpa_of(owner: Owner, observed: Observed) -> Manifest | None:
    """The HPA ``<name>`` (the stable revision's), as the watch last saw it."""
    return next((h for h in _owned_by(owner.uid, observed.hpas) if h["metadata"]["name"] == owner.name), None)


def _scale_target(hpa: Manifest | None, deployments: Sequence[Manifest]) -> Manifest | None:
    """The Deployment the HPA scales (what one more replica costs is its pod's requests)."""
    if hpa is None:
        return None
    target = (hpa.get("spec") or {}).get("scaleTargetRef", {}).get("name")
    return next((d for d in deployments if d["metadata"]["name"] == target), None)


def _ready_reason(status: ModelAPIStatus) -> str | None:
    return next((c.reason for c in status.conditions if c.type == "Ready"), None)


def _comparable(status: ModelAPIStatus) -> dict[str, Any]:
    return status.model_dump(mode="json", exclude_none=True)


_ROLE_AGE = {"lastKnownGood": 0, "stable": 1, "next": 2, "canary": 2}


def _age_order(deployment: Manifest) -> tuple[str, int]:
    """Newest first; revisions created within the same second are ordered by role (incoming before stable before
    last-known-good), so the order never depends on the order the watch delivered them in."""
    return (str(deployment["metadata"].get("creationTimestamp", "~")), _ROLE_AGE.get(role_of(deployment), 2))


def _views(
    deployments: Sequence[Manifest],
    pods: Sequence[Manifest],
    revision: str | None,
    target_failure: Failure | None,
    *,
    now: datetime,
    grace: float,
    scaling_up: frozenset[str],
) -> list[RevisionView]:
    views = []
    for deployment in sorted(deployments, key=_age_order, reverse=True):
        own = revision_of(deployment)
        record = RevisionRecord.of(deployment)
        failure = diagnose_revision(
            deployment, [p for p in pods if revision_of(p) == own], now=now, grace=grace, scaling_up=scaling_up
        )
        if own == revision and target_failure is not None:
            failure = target_failure
        views.append(
            RevisionView(
                name=deployment["metadata"]["name"],
                revision=own,
                role=record.role or "next",
                # redacted again: a Deployment annotated by an older operator may still hold a query string
                model_uri=redact_uri(record.model_uri or ""),
                sha256=record.model_sha256,
                desired=replicas_of(deployment),
                ready=ready_of(deployment),
                failure=failure,
                last_served=rfc3339(record.last_served) if record.last_served is not None else None,
            )
        )
    return views
