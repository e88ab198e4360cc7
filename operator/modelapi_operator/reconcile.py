"""One level-based reconcile of a ModelAPI: gather → build → apply → observe → status.

The cluster is the source of truth: which revision is stable is read from the role annotation of
each revision's Deployment, so a restarted operator continues a rollout where it stopped. Every
desired child is applied only when it drifted from what is observed; every owned child that is no
longer desired is deleted. Replica counts change only through the scale subresource, never through
server-side apply, so the HorizontalPodAutoscaler can own them without being reset.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from modelapi_operator import kube, names, rollout
from modelapi_operator.api import ModelAPISpec, ModelAPIStatus, format_validation_error
from modelapi_operator.builders import (
    Manifest,
    Owner,
    RuntimeImages,
    build_deployment,
    build_hpa,
    build_httproute,
    build_pdb,
    build_service,
    compute_revision,
    effective_surge_and_unavailable,
    service_url,
    uses_gateway_api,
    wants_pdb,
)
from modelapi_operator.builders.deployment import ANNOTATION_MODEL_SHA256, ANNOTATION_MODEL_URI
from modelapi_operator.diagnose import INVALID_SPEC, SERVICE_ACCOUNT_NOT_FOUND, Failure, diagnose_revision
from modelapi_operator.status import EventRecord, Observation, RevisionView, compute_status

log = logging.getLogger(__name__)

ROLE_ANNOTATION = f"{names.GROUP}/role"
ROLLOUT_REPLICAS_ANNOTATION = f"{names.GROUP}/rollout-replicas"


@dataclass(frozen=True)
class Observed:
    """The children of one ModelAPI as the operator currently sees them (from its watch caches)."""

    deployments: Sequence[Manifest] = ()
    services: Sequence[Manifest] = ()
    hpas: Sequence[Manifest] = ()
    pdbs: Sequence[Manifest] = ()
    httproutes: Sequence[Manifest] = ()
    pods: Sequence[Manifest] = ()

    def children(self) -> Iterable[Manifest]:
        yield from self.deployments
        yield from self.services
        yield from self.hpas
        yield from self.pdbs
        yield from self.httproutes


@dataclass
class Plan:
    """What one reconcile does to the cluster."""

    stable_revision: str = ""  # the revision the Services and the PDB point at after this reconcile
    apply: list[Manifest] = field(default_factory=list)
    create: list[Manifest] = field(default_factory=list)
    scale: dict[str, int] = field(default_factory=dict)  # Deployment name -> replicas
    keep_deployments: set[str] = field(default_factory=set)


def now_rfc3339() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


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


def _owned_by(uid: str, manifests: Iterable[Manifest]) -> list[Manifest]:
    return [
        item
        for item in manifests
        if any(ref.get("uid") == uid for ref in item.get("metadata", {}).get("ownerReferences") or [])
    ]


def _revision_of(manifest: Mapping[str, Any]) -> str:
    return str(manifest.get("metadata", {}).get("labels", {}).get(names.LABEL_REVISION, ""))


def _annotation(manifest: Mapping[str, Any], key: str) -> str | None:
    value = (manifest.get("metadata", {}).get("annotations") or {}).get(key)
    return str(value) if value is not None else None


def _replicas(deployment: Mapping[str, Any]) -> int:
    return int((deployment.get("spec") or {}).get("replicas", 1))


def _ready(deployment: Mapping[str, Any]) -> int:
    status = deployment.get("status") or {}
    # A replica counts once the Deployment controller has seen the current spec.
    return int(status.get("readyReplicas") or 0)


def _with_annotations(manifest: Manifest, annotations: Mapping[str, str]) -> Manifest:
    meta = dict(manifest["metadata"])
    meta["annotations"] = {**(meta.get("annotations") or {}), **annotations}
    return {**manifest, "metadata": meta}


class Reconciler:
    """Reconciles ModelAPIs with one Kubernetes client and one set of operator settings."""

    def __init__(self, client: kube.Kube, images: RuntimeImages, *, gateway_api_installed: bool) -> None:
        self.kube = client
        self.images = images
        self.gateway_api_installed = gateway_api_installed
        # The status this process last wrote, by ModelAPI uid. The operator is the only writer of status, so
        # this is never older than the copy in a watch event that may not have caught up with our last patch
        # (which would otherwise repeat transitions and their Events).
        self._written: dict[str, ModelAPIStatus] = {}

    def forget(self, uid: str) -> None:
        self._written.pop(uid, None)

    async def reconcile(self, body: Mapping[str, Any], observed: Observed) -> ModelAPIStatus:
        meta = body["metadata"]
        owner = Owner(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])
        previous = self._written.get(owner.uid) or ModelAPIStatus.model_validate(body.get("status") or {})
        deployments = _owned_by(owner.uid, observed.deployments)
        try:
            spec = ModelAPISpec.model_validate(body.get("spec") or {})
        except ValidationError as error:
            problems = format_validation_error(error).problems
            message = "; ".join(f"spec.{problem}" if problem.path else problem.message for problem in problems)
            invalid = Failure(INVALID_SPEC, f"{message}. Fix the manifest and apply it again.")
            return await self._finish(
                body=body,
                owner=owner,
                revision=None,
                invalid=invalid,
                deployments=deployments,
                observed=observed,
                previous=previous,
            )

        revision = compute_revision(spec, owner, self.images)
        plan = self._plan(spec, owner, revision, deployments)
        await self._execute(plan, owner, deployments, observed)
        deployments = self._after(plan, deployments)
        reference_problem = await self._check_references(spec, owner)
        return await self._finish(
            body=body,
            owner=owner,
            revision=revision,
            invalid=reference_problem,
            deployments=deployments,
            observed=observed,
            previous=previous,
        )

    # -- plan -------------------------------------------------------------------------------------
    def _plan(self, spec: ModelAPISpec, owner: Owner, revision: str, deployments: list[Manifest]) -> Plan:
        by_revision = {_revision_of(d): d for d in deployments}
        stables = sorted(
            (d for d in deployments if _annotation(d, ROLE_ANNOTATION) == "stable"),
            key=lambda d: str(d["metadata"].get("creationTimestamp", "")),
        )
        stable = stables[-1] if stables else None
        plan = Plan()
        if stable is None or _revision_of(stable) == revision:
            self._plan_steady(plan, spec, owner, revision, by_revision.get(revision))
        else:
            self._plan_rollout(
                plan=plan, spec=spec, owner=owner, stable=stable, revision=revision, existing=by_revision.get(revision)
            )
        self._plan_shared(plan, spec, owner)
        return plan

    def _deployment(self, spec: ModelAPISpec, owner: Owner, revision: str, annotations: Mapping[str, str]) -> Manifest:
        return _with_annotations(build_deployment(spec, owner, revision, self.images), annotations)

    def _plan_steady(
        self, plan: Plan, spec: ModelAPISpec, owner: Owner, revision: str, existing: Manifest | None
    ) -> None:
        """One stable revision whose size the HPA owns (also the end of a rollout: the promotion)."""
        plan.stable_revision = revision
        deployment = self._deployment(spec, owner, revision, {ROLE_ANNOTATION: "stable"})
        if existing is None:
            initial = {**deployment, "spec": {"replicas": spec.autoscaling.min_replicas, **deployment["spec"]}}
            plan.create.append(initial)
        plan.apply.append(deployment)
        plan.keep_deployments.add(deployment["metadata"]["name"])
        plan.apply.append(build_hpa(spec.autoscaling, owner, revision))

    def _plan_rollout(
        self,
        *,
        plan: Plan,
        spec: ModelAPISpec,
        owner: Owner,
        stable: Manifest,
        revision: str,
        existing: Manifest | None,
    ) -> None:
        """Two revisions sized by the operator step by step; the HPA is left out until the promotion, so it
        never resizes a revision the rollout is sizing."""
        stable_name = stable["metadata"]["name"]
        plan.stable_revision = _revision_of(stable)
        recorded = _annotation(existing, ROLLOUT_REPLICAS_ANNOTATION) if existing is not None else None
        total = (
            int(recorded) if recorded and recorded.isdigit() else max(_replicas(stable), spec.autoscaling.min_replicas)
        )
        surge, unavailable = effective_surge_and_unavailable(spec.rollout, spec.runtime.resources.gpu)
        max_surge, max_unavailable = rollout.bounds(surge, unavailable, total)
        step = rollout.next_step(
            total=total,
            max_surge=max_surge,
            max_unavailable=max_unavailable,
            old_replicas=_replicas(stable),
            new_replicas=_replicas(existing) if existing is not None else 0,
            new_ready=_ready(existing) if existing is not None else 0,
        )
        if step.complete and existing is not None:
            # Promotion: the new revision becomes stable, the HPA moves to it, the old one is deleted.
            self._plan_steady(plan, spec, owner, revision, existing)
            return
        incoming = self._deployment(
            spec, owner, revision, {ROLE_ANNOTATION: "next", ROLLOUT_REPLICAS_ANNOTATION: str(total)}
        )
        name = incoming["metadata"]["name"]
        if existing is None:
            plan.create.append({**incoming, "spec": {"replicas": 0, **incoming["spec"]}})
        plan.apply.append(incoming)
        plan.keep_deployments.update({name, stable_name})
        # The stable Deployment stays as it is (its own revision's template); only its size changes.
        if existing is None or _replicas(existing) != step.new_replicas:
            plan.scale[name] = step.new_replicas
        if _replicas(stable) != step.old_replicas:
            plan.scale[stable_name] = step.old_replicas

    def _plan_shared(self, plan: Plan, spec: ModelAPISpec, owner: Owner) -> None:
        stable_revision = plan.stable_revision
        plan.apply.append(build_service(owner, "main", stable_revision))
        plan.apply.append(build_service(owner, "stable", stable_revision))
        if wants_pdb(spec.autoscaling):
            plan.apply.append(build_pdb(owner, stable_revision))
        canary = spec.rollout.canary
        if (
            canary is not None
            and canary.gateway is not None
            and uses_gateway_api(spec, gateway_api_installed=self.gateway_api_installed)
        ):
            plan.apply.append(build_httproute(canary.gateway, owner, stable_revision, canary_weight=None))

    # -- execute ----------------------------------------------------------------------------------
    async def _execute(self, plan: Plan, owner: Owner, deployments: list[Manifest], observed: Observed) -> None:
        for manifest in plan.create:
            try:
                await self.kube.create(manifest)
            except kube.KubeError as error:
                if error.status != 409:  # already created (our cache was behind): apply takes it from here
                    raise
        existing = {
            (item["kind"], item["metadata"]["name"]): item for item in _owned_by(owner.uid, observed.children())
        }
        for manifest in plan.apply:
            current = existing.get((manifest["kind"], manifest["metadata"]["name"]))
            if current is None or not is_subset(manifest, current):
                await self.kube.apply(manifest)
            fix = exact_map_fix(manifest, current) if current is not None else None
            if fix is not None:
                await self.kube.merge_patch(kube.kind_of(manifest), owner.namespace, manifest["metadata"]["name"], fix)
        for name, replicas in plan.scale.items():
            await self.kube.scale(kube.DEPLOYMENT, owner.namespace, name, replicas)
        wanted = {(m["kind"], m["metadata"]["name"]) for m in plan.apply}
        for (kind_name, name), item in existing.items():
            if (kind_name, name) in wanted or (kind_name == "Deployment" and name in plan.keep_deployments):
                continue
            await self.kube.delete(kube.kind_of(item), owner.namespace, name, uid=item["metadata"].get("uid"))
            log.info("deleted %s %s/%s: no longer desired", kind_name, owner.namespace, name)

    def _after(self, plan: Plan, deployments: list[Manifest]) -> list[Manifest]:
        """The Deployments as they will be after this plan (for status, without waiting for the watch)."""
        result = []
        for deployment in deployments:
            name = deployment["metadata"]["name"]
            if name not in plan.keep_deployments:
                continue
            desired = next((m for m in plan.apply if m["kind"] == "Deployment" and m["metadata"]["name"] == name), None)
            merged = dict(deployment)
            if desired is not None:
                merged["metadata"] = {
                    **deployment["metadata"],
                    "annotations": desired["metadata"].get("annotations", {}),
                }
            if name in plan.scale:
                merged["spec"] = {**deployment.get("spec", {}), "replicas": plan.scale[name]}
            result.append(merged)
        known = {d["metadata"]["name"] for d in result}
        for created in plan.create:
            if created["metadata"]["name"] not in known:
                result.append(created)
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
    ) -> ModelAPIStatus:
        views = _views(deployments, observed.pods)
        observation = Observation(
            generation=int(body["metadata"].get("generation") or 0),
            desired_revision=revision,
            invalid=invalid,
            revisions=views,
            url=service_url(owner),
            previous=previous,
            now=now_rfc3339(),
        )
        status, events = compute_status(observation)
        if _comparable(status) != _comparable(previous):
            await self.kube.patch_status(
                kube.MODELAPI, owner.namespace, owner.name, status.model_dump(mode="json", exclude_none=True)
            )
        self._written[owner.uid] = status
        for event in events:
            await self._post(body, event)
        return status

    async def _post(self, body: Mapping[str, Any], event: EventRecord) -> None:
        try:
            await self.kube.post_event(body, event.type, event.reason, event.message, now_rfc3339())
        except kube.KubeError as error:  # an Event is best effort; the status already says it
            log.warning("could not post event %s: %s", event.reason, error)


def _comparable(status: ModelAPIStatus) -> dict[str, Any]:
    return status.model_dump(mode="json", exclude_none=True)


def _views(deployments: Sequence[Manifest], pods: Sequence[Manifest]) -> list[RevisionView]:
    views = []
    for deployment in sorted(deployments, key=lambda d: str(d["metadata"].get("creationTimestamp", "~")), reverse=True):
        revision = _revision_of(deployment)
        role = _annotation(deployment, ROLE_ANNOTATION) or "next"
        revision_pods = [p for p in pods if _revision_of(p) == revision]
        views.append(
            RevisionView(
                name=deployment["metadata"]["name"],
                revision=revision,
                role="stable" if role == "stable" else "next",
                model_uri=_annotation(deployment, ANNOTATION_MODEL_URI) or "",
                sha256=_annotation(deployment, ANNOTATION_MODEL_SHA256),
                desired=_replicas(deployment),
                ready=_ready(deployment),
                failure=diagnose_revision(deployment, revision_pods),
            )
        )
    return views
