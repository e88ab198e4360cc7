"""What one reconcile should do, decided from the spec and the observed Deployments (pure).

Three situations, read from the role in each revision's record (its Deployment's annotations):

- steady: the desired revision is stable (or nothing exists yet); the HPA owns its size;
- RollingUpdate: a ``next`` revision grows and the stable one shrinks within maxSurge/maxUnavailable,
  then the next one is promoted and the old one kept as ``lastKnownGood``;
- Canary: a ``canary`` revision gets the weight of its step (HTTPRoute weights, or a replica ratio
  behind the ``<name>`` Service), steps advance on time, readiness and analysis, and the canary is
  promoted (the old stable is kept as ``lastKnownGood``) or aborted (kept at zero, never retried for the
  same spec).

Only the newest last-known-good revision is kept (an older one is deleted), at
``spec.rollout.lastKnownGoodReplicas`` warm replicas while one revision serves, and at zero during a rollout or a
canary (the ``<name>`` Service then selects every revision of the model, and a warm replica of an old model must
take no traffic). A rollback requested with the ``serving.modelapi.io/rollback: "true"`` annotation makes the
last-known-good revision stable again at once, with no canary, after either strategy; during a rollout or a canary
it stops that rollout instead (the stable revision keeps serving).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from modelapi_operator import canary as policy
from modelapi_operator import names, rollout, zero
from modelapi_operator.api import CanaryStatus, ColdStart, ModelAPISpec
from modelapi_operator.builders import (
    ActivatorEndpoints,
    Manifest,
    Owner,
    RuntimeImages,
    build_activator_slice,
    build_arms,
    build_deployment,
    build_expose_route,
    build_hpa,
    build_httproute,
    build_pdb,
    build_service,
    compute_revision,
    effective_surge_and_unavailable,
    uses_gateway_api,
    wants_pdb,
)
from modelapi_operator.diagnose import Failure
from modelapi_operator.reasons import CANARY_PROMOTED, CANARY_STEP, ROLLBACK_UNAVAILABLE, ROLLED_BACK, ROLLOUT_ABORTED
from modelapi_operator.revision_record import (
    ROLE_ANNOTATION,
    Aborted,
    CanaryProgress,
    Patch,
    RevisionRecord,
    Role,
    patch,
)
from modelapi_operator.status import EventRecord


@dataclass
class Plan:
    """What one reconcile does to the cluster, and what it learned for the status."""

    stable_revision: str = ""  # the revision the Services and the PDB point at after this reconcile
    apply: list[Manifest] = field(default_factory=list)
    create: list[Manifest] = field(default_factory=list)
    scale: dict[str, int] = field(default_factory=dict)  # Deployment name -> replicas
    # Deployment name -> a merge patch of its revision record (revision_record.patch). Older revisions are never
    # re-applied: their template comes from an older spec, and a partial server-side apply by the same manager would
    # delete the fields it leaves out.
    annotate: dict[str, Patch] = field(default_factory=dict)
    keep_deployments: set[str] = field(default_factory=set)
    canary: CanaryStatus | None = None
    target_failure: Failure | None = None
    events: list[EventRecord] = field(default_factory=list)
    clear_rollback_request: bool = False
    clear_activation_request: bool = False
    checked: bool = False  # a canary analysis ran (its time is now recorded)
    zero: zero.ZeroDecision | None = None  # scale to zero of the stable revision (steady state only)
    # The ``<name>`` Service selects the stable revision only: one revision serves and warm replicas of the
    # last-known-good one are kept (they must take no traffic).
    main_one_revision: bool = False


@dataclass(frozen=True)
class PlanInput:
    spec: ModelAPISpec
    owner: Owner
    revision: str
    images: RuntimeImages
    deployments: Sequence[Manifest]
    now: datetime
    gateway_api_installed: bool
    analysis_available: bool = False
    measurement: policy.Measurement | None = None
    rollback_requested: bool = False
    activation_requested: bool = False  # the activator holds requests for this model (annotation on the ModelAPI)
    idle: bool | None = None  # Prometheus: no request over scaleToZeroAfterSeconds (None: not asked / no answer)
    activator: ActivatorEndpoints | None = None  # the activator's ready endpoints (None: none installed or ready)
    # The size of this spec's artifact when a revision already served it (known_artifact_bytes): a new revision's
    # model volume and ephemeral-storage request are sized from it, and it is recorded on its Deployment.
    artifact_bytes: int | None = None
    # spec.expose: False while another ModelAPI's route holds the same host and paths (the first keeps them)
    expose_allowed: bool = True


def revision_of(manifest: Mapping[str, Any]) -> str:
    return str(manifest.get("metadata", {}).get("labels", {}).get(names.LABEL_REVISION, ""))


def role_of(manifest: Mapping[str, Any]) -> Role:
    return RevisionRecord.of(manifest).role or "next"


def replicas_of(deployment: Mapping[str, Any]) -> int:
    return int((deployment.get("spec") or {}).get("replicas", 1))


def ready_of(deployment: Mapping[str, Any]) -> int:
    return int((deployment.get("status") or {}).get("readyReplicas") or 0)


def _with_record(manifest: Manifest, record: RevisionRecord) -> Manifest:
    meta = dict(manifest["metadata"])
    meta["annotations"] = {**(meta.get("annotations") or {}), **record.encode()}
    return {**manifest, "metadata": meta}


def _newest(deployments: Sequence[Manifest], role: Role) -> Manifest | None:
    found = sorted(
        (d for d in deployments if role_of(d) == role),
        key=lambda d: str(d["metadata"].get("creationTimestamp", "")),
    )
    return found[-1] if found else None


def known_artifact_bytes(
    spec: ModelAPISpec, cold_start: ColdStart | None, deployments: Sequence[Manifest]
) -> int | None:
    """The artifact's size when a revision of this ModelAPI already loaded this very artifact: the revision whose
    cold start was measured has the spec's sha256 (content-addressed: without a sha256 the object behind a URI may
    change), and the spec has no handler (whose size is not measured apart). None otherwise."""
    model = spec.model
    if not model.sha256 or model.handler or cold_start is None or cold_start.artifact_bytes is None:
        return None
    measured = next((d for d in deployments if revision_of(d) == cold_start.revision), None)
    if measured is None or RevisionRecord.of(measured).model_sha256 != model.sha256.lower():
        return None
    return cold_start.artifact_bytes


def aborted_reason(deployment: Mapping[str, Any] | None) -> Failure | None:
    """A revision that was aborted or rolled back stays so until the spec changes (``Reason: message``)."""
    aborted = RevisionRecord.of(deployment).aborted
    if aborted is None:
        return None
    return Failure(aborted.reason or ROLLOUT_ABORTED, aborted.message)


class Planner:
    def __init__(self, given: PlanInput) -> None:
        self.given = given
        self.plan = Plan()
        self.by_revision = {revision_of(d): d for d in given.deployments}

    # -- building blocks ----------------------------------------------------------------------------
    def artifact_bytes(self, revision: str) -> int | None:
        """What this revision's model volume is sized from: fixed when its Deployment was created (recorded on it),
        so its template never changes once its pods exist."""
        existing = self.by_revision.get(revision)
        return RevisionRecord.of(existing).artifact_bytes if existing is not None else self.given.artifact_bytes

    def deployment(self, revision: str, record: RevisionRecord) -> Manifest:
        spec, owner, images = self.given.spec, self.given.owner, self.given.images
        built = build_deployment(spec, owner, revision, images, artifact_bytes=self.artifact_bytes(revision))
        return _with_record(built, record)

    def ensure(
        self,
        revision: str,
        record: RevisionRecord,
        *,
        initial_replicas: int,
        created_with: RevisionRecord | None = None,
    ) -> Manifest:
        """Apply this revision's Deployment (created first with ``initial_replicas`` and the ``created_with``
        record fields when missing: those are not applied, so a later apply never removes them)."""
        manifest = self.deployment(revision, record)
        if revision not in self.by_revision:
            first = replace(created_with or RevisionRecord(), artifact_bytes=self.given.artifact_bytes)
            created = _with_record(manifest, first)
            self.plan.create.append({**created, "spec": {"replicas": initial_replicas, **manifest["spec"]}})
        self.plan.apply.append(manifest)
        self.plan.keep_deployments.add(manifest["metadata"]["name"])
        return manifest

    def keep(self, deployment: Manifest, replicas: int | None = None) -> None:
        """Keep an older revision's Deployment as it is (its template is from an older spec); maybe resize it."""
        name = deployment["metadata"]["name"]
        self.plan.keep_deployments.add(name)
        if replicas is not None and replicas_of(deployment) != replicas:
            self.plan.scale[name] = replicas

    def keep_with_role(self, deployment: Manifest, role: Role, replicas: int | None = None) -> None:
        """Keep an older revision and change only the role in its record."""
        self.keep(deployment, replicas)
        if role_of(deployment) != role:
            self.plan.annotate.setdefault(deployment["metadata"]["name"], {}).update(patch(RevisionRecord(role=role)))

    def keep_last_known_good(self, *, besides: str, warm: bool) -> None:
        """Keep the newest last-known-good revision (an older one is not kept, so it is deleted): at its warm size
        when ``warm`` (one revision serves), else at zero. Not ``besides``, the revision being rolled out: a spec set
        back to the last-known-good one rolls out its Deployment again, as it is."""
        good = _newest(self.given.deployments, "lastKnownGood")
        if good is not None and revision_of(good) != besides:
            self.keep(good, replicas=self.warm_replicas if warm else 0)

    def demote(self, previous_stable: Manifest) -> None:
        """The stable revision a promotion replaces becomes the last-known-good one, at its warm size, with the time it
        stopped serving; the previous last-known-good one is no longer kept (so it is deleted)."""
        self.keep(previous_stable, self.warm_replicas)
        if role_of(previous_stable) != "lastKnownGood":
            demoted = RevisionRecord(role="lastKnownGood", last_served=self.given.now)
            self.plan.annotate.setdefault(previous_stable["metadata"]["name"], {}).update(patch(demoted))

    @property
    def warm_replicas(self) -> int:
        return self.given.spec.rollout.last_known_good_replicas

    def shared(self, canary_weight: int | None, canary_revision: str | None) -> None:
        spec, owner, stable = self.given.spec, self.given.owner, self.plan.stable_revision
        activator = self.given.activator if self.plan.zero is not None and self.plan.zero.via_activator else None
        for role in ("main", "stable"):
            service = build_service(
                owner, role, stable, via_activator=activator is not None, one_revision=self.plan.main_one_revision
            )
            if activator is not None:
                # The slice first: the Service loses its selector only once the activator is its endpoint.
                self.plan.apply.append(build_activator_slice(owner, service["metadata"]["name"], stable, activator))
            self.plan.apply.append(service)
        if canary_revision is not None:
            self.plan.apply.append(build_service(owner, "canary", canary_revision))
        if wants_pdb(spec.autoscaling):
            self.plan.apply.append(build_pdb(owner, stable))
        canary_spec = spec.rollout.canary
        split = uses_gateway_api(spec, gateway_api_installed=self.given.gateway_api_installed)
        if canary_spec is not None and canary_spec.gateway is not None and split:
            self.plan.apply.append(build_httproute(canary_spec.gateway, owner, stable, canary_weight))
        if spec.expose is not None and self.given.gateway_api_installed and self.given.expose_allowed:
            self.plan.apply.append(build_expose_route(spec.expose, owner, stable, canary_weight, split=split))

    # -- situations ---------------------------------------------------------------------------------
    def steady(
        self, revision: str, previous_stable: Manifest | None = None, *, at_zero_since: str | None = None
    ) -> None:
        """One stable revision whose size the HPA owns (also the end of a rollout or a canary), or that scale to zero
        holds at 0 replicas. ``at_zero_since``: a new revision that replaces one at zero starts at zero too."""
        spec, given = self.given.spec, self.given
        self.plan.stable_revision = revision
        existing = self.by_revision.get(revision)
        self.ensure(
            revision,
            RevisionRecord(role="stable"),
            initial_replicas=0 if at_zero_since is not None else max(spec.autoscaling.min_replicas, 1),
            created_with=RevisionRecord(scaled_to_zero_at=at_zero_since),
        )
        name = names.revision_name(given.owner.name, revision)
        decision = zero.decide(
            zero.ZeroInput(
                autoscaling=spec.autoscaling,
                parked_since=zero.parked_since(existing) if existing is not None else at_zero_since,
                replicas=replicas_of(existing) if existing is not None else (0 if at_zero_since else 1),
                ready=ready_of(existing) if existing is not None else 0,
                now=given.now,
                demand=given.activation_requested,
                idle=given.idle,
                activator_ready=given.activator is not None,
                prometheus=given.analysis_available,
            )
        )
        self.plan.zero = decision
        if decision.replicas is not None:
            self.plan.scale[name] = decision.replicas
        if decision.record:
            self.plan.annotate.setdefault(name, {}).update(decision.record)
        if decision.hpa:
            self.plan.apply.append(build_hpa(spec.autoscaling, self.given.owner, revision))
        if previous_stable is not None:
            self.demote(previous_stable)
        else:
            self.keep_last_known_good(besides=revision, warm=True)
        self.plan.main_one_revision = self.warm_replicas > 0

    def rolling_update(self, stable: Manifest, existing: Manifest | None) -> None:
        """Size both revisions; the HPA is left out until the promotion, so it never resizes either."""
        spec, revision = self.given.spec, self.given.revision
        self.plan.stable_revision = revision_of(stable)
        recorded = RevisionRecord.of(existing).rollout_replicas
        total = recorded if recorded is not None else max(replicas_of(stable), spec.autoscaling.min_replicas)
        surge, unavailable = effective_surge_and_unavailable(spec.rollout, spec.runtime.resources.gpu)
        max_surge, max_unavailable = rollout.bounds(surge, unavailable, total)
        step = rollout.next_step(
            total=total,
            max_surge=max_surge,
            max_unavailable=max_unavailable,
            old_replicas=replicas_of(stable),
            new_replicas=replicas_of(existing) if existing is not None else 0,
            new_ready=ready_of(existing) if existing is not None else 0,
        )
        failure = aborted_reason(existing)
        if existing is not None and failure is not None:
            # Rolled back (or aborted): goes to zero once the stable revision is fully ready (after a rollback the
            # restored revision may still be starting, and the ``<name>`` Service still reaches this one's pods).
            stable_ready = ready_of(stable) >= max(replicas_of(stable), 1)
            self.keep(existing, replicas=0 if stable_ready else None)
            self.keep(stable, max(replicas_of(stable), spec.autoscaling.min_replicas))
            self.keep_last_known_good(besides=revision, warm=True)
            self.plan.main_one_revision = self.warm_replicas > 0 and ready_of(stable) > 0
            self.plan.apply.append(build_hpa(spec.autoscaling, self.given.owner, revision_of(stable)))
            self.plan.target_failure = failure
            return
        if step.complete and existing is not None:
            self.steady(revision, previous_stable=stable)  # promotion: the old stable becomes last-known-good
            return
        self.keep_last_known_good(besides=revision, warm=False)
        incoming = self.ensure(revision, RevisionRecord(role="next", rollout_replicas=total), initial_replicas=0)
        name = incoming["metadata"]["name"]
        if existing is None or replicas_of(existing) != step.new_replicas:
            self.plan.scale[name] = step.new_replicas
        self.keep(stable, step.old_replicas)

    def canary(self, stable: Manifest, existing: Manifest | None) -> None:
        given = self.given
        spec, revision, owner = given.spec, given.revision, given.owner
        canary_spec = spec.rollout.canary
        if canary_spec is None or not canary_spec.steps:  # the API refuses this; stay safe without steps
            self.rolling_update(stable, existing)
            self.shared(canary_weight=None, canary_revision=None)
            return
        stable_revision = revision_of(stable)
        self.plan.stable_revision = stable_revision
        self.plan.apply.append(build_hpa(spec.autoscaling, owner, stable_revision))
        self.keep(stable)

        failure = aborted_reason(existing)
        if existing is not None and failure is not None:
            # Aborted (or rolled back) before: goes to zero once the stable revision is fully ready (after a
            # rollback the restored revision may still be starting), and stays there until the spec changes.
            stable_ready = ready_of(stable) >= max(replicas_of(stable), 1)
            self.keep(existing, replicas=0 if stable_ready else None)
            self.keep_last_known_good(besides=revision, warm=True)
            self.plan.main_one_revision = self.warm_replicas > 0 and ready_of(stable) > 0
            self.plan.target_failure = failure
            self.shared(canary_weight=None, canary_revision=None)
            return

        self.keep_last_known_good(besides=revision, warm=False)
        routing: policy.Routing = (
            "gatewayAPI" if uses_gateway_api(spec, gateway_api_installed=given.gateway_api_installed) else "replicas"
        )
        progress = RevisionRecord.of(existing).canary or CanaryProgress()
        stable_replicas = max(replicas_of(stable), 1)
        weight = canary_spec.steps[min(progress.step, len(canary_spec.steps) - 1)].weight
        wanted = policy.canary_replicas(stable_replicas, weight, routing)
        # >=: while it is promoted, the canary grows past its step's size and stays ready.
        canary_ready = existing is not None and replicas_of(existing) >= wanted and ready_of(existing) >= wanted
        decision = policy.decide(
            canary_spec,
            progress,
            now=given.now,
            canary_ready=canary_ready,
            analysis_available=given.analysis_available,
            measurement=given.measurement,
        )
        self.plan.checked = decision.checked
        name = names.revision_name(owner.name, revision)
        if decision.action == "abort":
            message = (
                f"canary {name} rolled back: {decision.message}; revision {stable['metadata']['name']} kept serving"
            )
            aborted = RevisionRecord(role="canary", aborted=Aborted(ROLLOUT_ABORTED, message), canary=decision.progress)
            self.ensure(revision, aborted, initial_replicas=0)
            self.plan.scale[name] = 0
            self.plan.target_failure = Failure(ROLLOUT_ABORTED, message)
            self.plan.events.append(EventRecord("Warning", ROLLOUT_ABORTED, message))
            self.shared(canary_weight=None, canary_revision=None)
            return
        if decision.action == "promote":
            self.promote(stable, existing, stable_replicas, decision.message)
            return
        progress = decision.progress
        weight = canary_spec.steps[progress.step].weight
        wanted = policy.canary_replicas(stable_replicas, weight, routing)
        self.ensure(revision, RevisionRecord(role="canary", canary=progress), initial_replicas=0)
        if existing is None or replicas_of(existing) != wanted:
            self.plan.scale[name] = wanted
        if decision.action == "advance":
            self.plan.events.append(EventRecord("Normal", CANARY_STEP, decision.message))
        elif existing is None:
            self.plan.events.append(
                EventRecord("Normal", CANARY_STEP, f"step 1/{len(canary_spec.steps)}: {weight}% of traffic to {name}")
            )
        self.plan.canary = self._status(
            name=name,
            stable=stable,
            existing=existing,
            progress=progress,
            weight=weight,
            routing=routing,
            decision=decision,
        )
        self.shared(canary_weight=weight if routing == "gatewayAPI" else None, canary_revision=revision)

    def _status(
        self,
        *,
        name: str,
        stable: Manifest,
        existing: Manifest | None,
        progress: CanaryProgress,
        weight: int,
        routing: policy.Routing,
        decision: policy.Decision,
    ) -> CanaryStatus:
        canary_spec = self.given.spec.rollout.canary
        measurement = self.given.measurement if decision.checked else None
        analysis = decision.message
        if canary_spec is not None and canary_spec.analysis is not None and not self.given.analysis_available:
            analysis += "; no analysis ran: the operator has no Prometheus URL, steps advance on readiness and time"
        return CanaryStatus(
            revision=name,
            step=progress.step,
            weight=policy.achieved_weight(ready_of(stable), ready_of(existing) if existing else 0, weight, routing),
            error_rate=measurement.canary_error_rate if measurement else None,
            latency_p99_ms=measurement.canary_latency_p99_ms if measurement else None,
            stable_error_rate=measurement.stable_error_rate if measurement else None,
            stable_latency_p99_ms=measurement.stable_latency_p99_ms if measurement else None,
            failed_checks=progress.failed_checks,
            analysis=analysis,
        )

    def promote(self, stable: Manifest, existing: Manifest | None, stable_replicas: int, why: str) -> None:
        """Grow the canary to the stable size, then make it stable; the old stable becomes last-known-good."""
        revision = self.given.revision
        name = names.revision_name(self.given.owner.name, revision)
        if existing is not None and ready_of(existing) >= stable_replicas and replicas_of(existing) >= stable_replicas:
            # Start over from an empty plan: the HPA moves to the new stable, the old stable becomes the
            # last-known-good, and the previous last-known-good is no longer kept (so it is deleted).
            self.plan = Plan(events=[EventRecord("Normal", CANARY_PROMOTED, f"{name} promoted: {why}")])
            self.steady(revision, previous_stable=stable)
            self.shared(canary_weight=None, canary_revision=None)
            return
        progress = RevisionRecord.of(existing).canary  # kept as it was when the last step passed
        self.ensure(revision, RevisionRecord(role="canary", canary=progress), initial_replicas=0)
        if existing is None or replicas_of(existing) != stable_replicas:
            self.plan.scale[name] = stable_replicas
        self.plan.canary = CanaryStatus(
            revision=name,
            step=len(self.given.spec.rollout.canary.steps) - 1 if self.given.spec.rollout.canary else 0,
            weight=0,
            analysis=f"promoting: {why}; growing to {stable_replicas} replicas",
        )
        self.shared(canary_weight=None, canary_revision=revision)

    def rollback(self, stable: Manifest, good: Manifest) -> None:
        """Make the last-known-good revision stable again, at once; the current one is marked rolled back."""
        total = max(replicas_of(stable), self.given.spec.autoscaling.min_replicas)
        good_name, stable_name = good["metadata"]["name"], stable["metadata"]["name"]
        self.plan.clear_rollback_request = True
        self.plan.stable_revision = revision_of(good)
        message = f"rolled back on request from {stable_name} to {good_name}; change the spec to roll forward"
        # The current revision is demoted before the good one is promoted (annotations are written in this order):
        # a process killed in between leaves no stable, which plan_children finishes as a rollback, never two.
        self.plan.annotate[stable_name] = patch(RevisionRecord(role="canary", aborted=Aborted(ROLLED_BACK, message)))
        self.keep(stable)  # keeps serving until the restored revision is ready, then goes to zero
        self.keep_with_role(good, "stable", replicas=total)
        # Warm replicas of the restored revision serve at once; without any, the ``<name>`` Service keeps reaching
        # the current revision's pods until the restored ones are ready.
        self.plan.main_one_revision = self.warm_replicas > 0 and ready_of(good) > 0
        self.plan.apply.append(build_hpa(self.given.spec.autoscaling, self.given.owner, revision_of(good)))
        self.plan.events.append(EventRecord("Warning", ROLLED_BACK, message))
        self.plan.target_failure = Failure(ROLLED_BACK, message)
        self.shared(canary_weight=None, canary_revision=None)

    def stop_rollout(self, stable: Manifest, incoming: Manifest) -> None:
        """A rollback requested while a new revision rolls out (or runs as a canary) rolls that rollout back: the
        stable revision, what served before the change, keeps serving at its full size; the new one is marked rolled
        back (its pods go once the stable one is ready again) and is not retried for this spec. The last-known-good
        revision stays as it is."""
        spec, owner = self.given.spec, self.given.owner
        stable_name, incoming_name = stable["metadata"]["name"], incoming["metadata"]["name"]
        total = max(
            replicas_of(stable), RevisionRecord.of(incoming).rollout_replicas or 0, spec.autoscaling.min_replicas
        )
        message = (
            f"rollout of {incoming_name} rolled back on request; {stable_name} keeps serving; change the spec to roll "
            "forward"
        )
        self.plan.clear_rollback_request = True
        self.plan.stable_revision = revision_of(stable)
        self.plan.annotate[incoming_name] = patch(RevisionRecord(role="canary", aborted=Aborted(ROLLED_BACK, message)))
        self.keep(incoming)
        self.keep(stable, total)
        self.keep_last_known_good(besides=self.given.revision, warm=False)
        self.plan.apply.append(build_hpa(spec.autoscaling, owner, revision_of(stable)))
        self.plan.events.append(EventRecord("Warning", ROLLED_BACK, message))
        self.plan.target_failure = Failure(ROLLED_BACK, message)
        self.shared(canary_weight=None, canary_revision=None)


def plan_children(given: PlanInput) -> Plan:
    plan = _plan_children(given)
    # The activator's request is answered by this plan (a model at zero is woken): it is cleared either way.
    plan.clear_activation_request = given.activation_requested
    if given.spec.monitoring.prediction_log is not None:
        roles = revision_roles(plan, given.deployments)
        plan.apply.append(build_arms(given.owner, plan.stable_revision, roles))
    return plan


def revision_roles(plan: Plan, deployments: Sequence[Manifest]) -> dict[str, str]:
    """The role of every revision this plan keeps, as it is once the plan is carried out (revision -> role): the
    role annotated by the plan, else the one in the Deployment it applies, else the observed one."""
    known: dict[str, tuple[str, str]] = {d["metadata"]["name"]: (revision_of(d), role_of(d)) for d in deployments}
    for manifest in plan.apply:
        if manifest["kind"] == "Deployment":
            known[manifest["metadata"]["name"]] = (revision_of(manifest), role_of(manifest))
    roles: dict[str, str] = {}
    for name in sorted(plan.keep_deployments & known.keys()):
        revision, role = known[name]
        roles[revision] = plan.annotate.get(name, {}).get(ROLE_ANNOTATION) or role
    return roles


def _plan_children(given: PlanInput) -> Plan:
    planner = Planner(given)
    deployments = given.deployments
    stable = _newest(deployments, "stable")
    existing = planner.by_revision.get(given.revision)
    good = _newest(deployments, "lastKnownGood")
    if given.rollback_requested:
        in_progress = existing is not None and aborted_reason(existing) is None
        if stable is not None and existing is not None and in_progress and revision_of(existing) != revision_of(stable):
            planner.stop_rollout(stable, existing)  # a rollout or a canary in progress: it is what is rolled back
            return planner.plan
        if stable is not None and good is not None:
            planner.rollback(stable, good)
            return planner.plan
        planner.plan.clear_rollback_request = True
        planner.plan.events.append(
            EventRecord(
                "Warning",
                ROLLBACK_UNAVAILABLE,
                "no last-known-good revision to roll back to (one is kept once a rolling update or a canary has "
                "promoted a new revision, and none right after a rollback)",
            )
        )
    interrupted = aborted_reason(existing)
    if stable is None and existing is not None and good is not None and interrupted is not None:
        # A rollback stopped between its two writes (the current revision demoted, the good one not yet promoted).
        planner.rollback(existing, good)
        planner.plan.clear_rollback_request = False
        return planner.plan
    if stable is None or revision_of(stable) == given.revision:
        planner.steady(given.revision)
        planner.shared(canary_weight=None, canary_revision=None)
    elif zero.parked_since(stable) is not None and replicas_of(stable) == 0:
        # A new spec while at zero: nothing is served, so nothing to roll out. The new revision replaces the old one
        # at zero (which is deleted), and the next request wakes the new one.
        planner.steady(given.revision, at_zero_since=zero.parked_since(stable))
        planner.shared(canary_weight=None, canary_revision=None)
    elif given.spec.rollout.strategy == "Canary":
        planner.canary(stable, existing)
    else:
        planner.rolling_update(stable, existing)
        planner.shared(canary_weight=None, canary_revision=None)
    return planner.plan


# The order ``desired_children`` lists them in: the workload first, then what routes to it and what sizes it.
RENDER_ORDER = (
    "Deployment",
    "ConfigMap",
    "Service",
    "EndpointSlice",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
    "HTTPRoute",
)


def desired_children(
    spec: ModelAPISpec, owner: Owner, images: RuntimeImages, *, gateway_api_installed: bool, now: datetime
) -> list[Manifest]:
    """What the operator applies for ``spec`` in a cluster where none of its children exist yet: the planner with
    nothing observed (no Deployments, no activator, no Prometheus), so ``modelapi render`` can never drift from the
    operator. Listed by kind in ``RENDER_ORDER``, in the planner's order within a kind."""
    plan = plan_children(
        PlanInput(
            spec=spec,
            owner=owner,
            revision=compute_revision(spec, owner, images),
            images=images,
            deployments=(),
            now=now,
            gateway_api_installed=gateway_api_installed,
        )
    )
    return sorted(plan.apply, key=lambda manifest: RENDER_ORDER.index(manifest["kind"]))


def analysis_target(
    given_spec: ModelAPISpec, deployments: Sequence[Manifest], revision: str, now: datetime
) -> tuple[str, str] | None:
    """(canary revision, stable revision) when a canary analysis is due now, else None."""
    canary_spec = given_spec.rollout.canary
    if given_spec.rollout.strategy != "Canary" or canary_spec is None or canary_spec.analysis is None:
        return None
    stable = _newest(deployments, "stable")
    existing = next((d for d in deployments if revision_of(d) == revision), None)
    if stable is None or existing is None or revision_of(stable) == revision or aborted_reason(existing):
        return None
    progress = RevisionRecord.of(existing).canary or CanaryProgress()
    if progress.step_started is None or not policy.analysis_due(canary_spec, progress, now):
        return None
    return revision, revision_of(stable)
