"""Golden files of the planner's whole output for each rollout phase, from synthetic observations.

``modelapi render`` is the planner with nothing observed (test_builders_golden.py); these are the same planner over
Deployments shaped like the API server's, one case per phase: steady, rolling, a canary at a step, promote, abort,
rollback and scaled to zero. Run ``pytest tests/unit --update-golden`` after an intended change and review the diff of
tests/unit/operator/golden/plan-*/expected.yaml like any other change of behaviour.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from plan_given import plan_for

from modelapi_operator import names
from modelapi_operator.api import ModelAPISpec
from modelapi_operator.builders import ActivatorEndpoints, Owner, RuntimeImages, build_deployment, compute_revision
from modelapi_operator.canary import Measurement
from modelapi_operator.plan import Plan
from modelapi_operator.revision_record import ROLE_ANNOTATION, CanaryProgress, RevisionRecord, Role
from modelapi_operator.timestamps import rfc3339

GOLDEN = Path(__file__).parent / "golden"
OWNER = Owner(name="iris", namespace="ml", uid="6f1c2a9e-1d2b-4c3d-8e9f-0a1b2c3d4e5f")
IMAGES = RuntimeImages(cpu="modelapi/runtime:test", gpu="modelapi/runtime-gpu:test")
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
OLD_URI = "s3://models/iris/1/model.onnx"
NEW_URI = "s3://models/iris/2/model.onnx"
ACTIVATOR = ActivatorEndpoints(addresses=("10.245.0.7", "10.245.0.8"), port=8080)
STEPS = [{"weight": 10, "pauseSeconds": 60}, {"weight": 50, "pauseSeconds": 60}]
ANALYSIS = {"intervalSeconds": 30, "maxErrorRate": 0.05, "failureLimit": 2}


def _spec(
    uri: str, *, canary: bool = False, min_replicas: int = 2, warm: int = 0, logged: bool = False
) -> ModelAPISpec:
    autoscaling: dict[str, Any] = {"minReplicas": min_replicas, "maxReplicas": 4}
    if min_replicas == 0:
        autoscaling["scaleToZeroAfterSeconds"] = 300
    rollout: dict[str, Any] = {"strategy": "RollingUpdate"}
    if canary:
        rollout = {"strategy": "Canary", "canary": {"steps": STEPS, "analysis": ANALYSIS}}
    if warm:
        rollout["lastKnownGoodReplicas"] = warm
    body: dict[str, Any] = {"model": {"uri": uri}, "autoscaling": autoscaling, "rollout": rollout}
    if logged:
        body["monitoring"] = {"predictionLog": {"sampleRate": 10}}
    return ModelAPISpec.model_validate(body)


def _observed(
    spec: ModelAPISpec, record: RevisionRecord, *, replicas: int, ready: int, created: datetime
) -> dict[str, Any]:
    """A revision's Deployment as the API server returns it: the record, a size, ready replicas, a creation time."""
    revision = compute_revision(spec, OWNER, IMAGES)
    manifest = build_deployment(spec, OWNER, revision, IMAGES)
    manifest["metadata"]["annotations"] = {**manifest["metadata"]["annotations"], **record.encode()}
    manifest["metadata"]["uid"] = f"uid-{revision}"
    manifest["metadata"]["creationTimestamp"] = rfc3339(created)
    manifest["spec"] = {"replicas": replicas, **manifest["spec"]}
    manifest["status"] = {"replicas": replicas, "readyReplicas": ready}
    return manifest


def _serving(spec: ModelAPISpec, role: Role = "stable", replicas: int = 2) -> dict[str, Any]:
    return _observed(spec, RevisionRecord(role=role), replicas=replicas, ready=replicas, created=T0 - timedelta(days=1))


def _canary(spec: ModelAPISpec, progress: CanaryProgress, *, replicas: int, ready: int) -> dict[str, Any]:
    record = RevisionRecord(role="canary", canary=progress)
    return _observed(spec, record, replicas=replicas, ready=ready, created=T0 - timedelta(minutes=10))


def _plan(spec: ModelAPISpec, deployments: list[dict[str, Any]], **extra: Any) -> Plan:
    return plan_for(spec, deployments, owner=OWNER, images=IMAGES, now=T0, **extra)


def steady(logged: bool = False) -> Plan:
    """One stable revision, ready: applied as it is, the HPA owns its size."""
    spec = _spec(OLD_URI, logged=logged)
    return _plan(spec, [_serving(spec)])


def rolling() -> Plan:
    """A rolling update half way: the next revision has 1 of 2 replicas, not ready yet; the old one keeps 2."""
    spec = _spec(NEW_URI)
    incoming = _observed(
        spec,
        RevisionRecord(role="next", rollout_replicas=2),
        replicas=1,
        ready=0,
        created=T0 - timedelta(minutes=1),
    )
    return _plan(spec, [_serving(_spec(OLD_URI)), incoming])


def canary_step(logged: bool = False) -> Plan:
    """A canary at its second step (50 %), its pause not over, with a passing analysis due."""
    spec = _spec(NEW_URI, canary=True, logged=logged)
    progress = CanaryProgress(step=1, step_started=T0 - timedelta(seconds=40), last_check=T0 - timedelta(seconds=40))
    stable = _serving(_spec(OLD_URI, canary=True, logged=logged))
    deployments = [stable, _canary(spec, progress, replicas=2, ready=2)]
    good = Measurement(canary_error_rate=0.01, canary_latency_p99_ms=12.0, stable_error_rate=0.0)
    return _plan(spec, deployments, analysis_available=True, measurement=good)


def promote(logged: bool = False) -> Plan:
    """Every step passed and the canary is at the stable size: it becomes stable, the old one last-known-good."""
    spec = _spec(NEW_URI, canary=True, logged=logged)
    progress = CanaryProgress(
        step=1,
        step_started=T0 - timedelta(seconds=90),
        last_check=T0 - timedelta(seconds=20),
        step_check_passed=True,
    )
    deployments = [_serving(_spec(OLD_URI, canary=True, logged=logged)), _canary(spec, progress, replicas=2, ready=2)]
    return _plan(spec, deployments, analysis_available=True)


def abort() -> Plan:
    """The canary's analysis fails for the failureLimit-th time in a row: it goes to zero and stays there."""
    spec = _spec(NEW_URI, canary=True)
    progress = CanaryProgress(
        step=0, step_started=T0 - timedelta(seconds=70), failed_checks=1, last_check=T0 - timedelta(seconds=35)
    )
    deployments = [_serving(_spec(OLD_URI, canary=True)), _canary(spec, progress, replicas=1, ready=1)]
    bad = Measurement(canary_error_rate=0.4, canary_latency_p99_ms=15.0, stable_error_rate=0.0)
    return _plan(spec, deployments, analysis_available=True, measurement=bad)


def rollback() -> Plan:
    """A rollback request: the last-known-good revision is stable again at once, the current one rolled back."""
    spec = _spec(NEW_URI, canary=True)
    good = _observed(
        _spec(OLD_URI, canary=True),
        RevisionRecord(role="lastKnownGood"),
        replicas=0,
        ready=0,
        created=T0 - timedelta(days=2),
    )
    return _plan(spec, [_serving(spec), good], rollback_requested=True)


OLDEST_URI = "s3://models/iris/0/model.onnx"


def _last_known_good(spec: ModelAPISpec, *, replicas: int = 0) -> dict[str, Any]:
    record = RevisionRecord(role="lastKnownGood", last_served=T0 - timedelta(days=1))
    return _observed(spec, record, replicas=replicas, ready=replicas, created=T0 - timedelta(days=2))


def rolling_promote() -> Plan:
    """A rolling update complete (the next revision has all its replicas ready, the old one none): the next one is
    stable, the old one becomes last-known-good with the time it stopped serving, the older last-known-good goes."""
    spec = _spec(NEW_URI)
    incoming = _observed(
        spec,
        RevisionRecord(role="next", rollout_replicas=2),
        replicas=2,
        ready=2,
        created=T0 - timedelta(minutes=1),
    )
    old = _observed(_spec(OLD_URI), RevisionRecord(role="stable"), replicas=0, ready=0, created=T0 - timedelta(days=1))
    return _plan(spec, [old, incoming, _last_known_good(_spec(OLDEST_URI))])


def rolling_rollback() -> Plan:
    """A rollback request after a rolling update: the last-known-good revision is scaled back up as stable, with no
    new revision; the current one keeps its pods (the ``<name>`` Service reaches them) until the restored is ready."""
    spec = _spec(NEW_URI)
    return _plan(spec, [_serving(spec), _last_known_good(_spec(OLD_URI))], rollback_requested=True)


def rollback_during_rollout() -> Plan:
    """A rollback request half way through a rolling update: that rollout is rolled back, the stable revision sized
    back to the full count, the last-known-good one untouched."""
    spec = _spec(NEW_URI)
    incoming = _observed(
        spec, RevisionRecord(role="next", rollout_replicas=2), replicas=2, ready=1, created=T0 - timedelta(minutes=1)
    )
    current = _observed(
        _spec(OLD_URI), RevisionRecord(role="stable"), replicas=1, ready=1, created=T0 - timedelta(days=1)
    )
    return _plan(spec, [current, incoming, _last_known_good(_spec(OLDEST_URI))], rollback_requested=True)


def warm_last_known_good() -> Plan:
    """One revision serves with lastKnownGoodReplicas 1: the last-known-good one keeps a warm replica, and the
    ``<name>`` Service selects the stable revision only (the warm replica takes no traffic)."""
    spec = _spec(NEW_URI, warm=1)
    return _plan(spec, [_serving(spec), _last_known_good(_spec(OLD_URI, warm=1))])


def warm_during_rollout() -> Plan:
    """A rolling update with lastKnownGoodReplicas 1: the warm replica goes (the ``<name>`` Service selects every
    revision while two serve), and the Service selects every revision again."""
    spec = _spec(NEW_URI, warm=1)
    current = _spec(OLD_URI, warm=1)
    incoming = _observed(
        spec, RevisionRecord(role="next", rollout_replicas=2), replicas=1, ready=0, created=T0 - timedelta(minutes=1)
    )
    return _plan(spec, [_serving(current), incoming, _last_known_good(_spec(OLDEST_URI, warm=1), replicas=1)])


def scaled_to_zero() -> Plan:
    """minReplicas 0, idle past scaleToZeroAfterSeconds, an activator ready: the Services point at the activator."""
    spec = _spec(OLD_URI, min_replicas=0)
    return _plan(spec, [_serving(spec, replicas=1)], analysis_available=True, idle=True, activator=ACTIVATOR)


PHASES: dict[str, Callable[[], Plan]] = {
    "steady": steady,
    "rolling": rolling,
    "canary-step": canary_step,
    "promote": promote,
    "abort": abort,
    "rollback": rollback,
    "scaled-to-zero": scaled_to_zero,
    "rolling-promote": rolling_promote,
    "rolling-rollback": rolling_rollback,
    "rollback-during-rollout": rollback_during_rollout,
    "warm-last-known-good": warm_last_known_good,
    "warm-during-rollout": warm_during_rollout,
    # with spec.monitoring.predictionLog: the <name>-arms ConfigMap beside the other children
    "steady-logged": functools.partial(steady, logged=True),
    "canary-step-logged": functools.partial(canary_step, logged=True),
    "promote-logged": functools.partial(promote, logged=True),
}


def plan_document(plan: Plan) -> dict[str, Any]:
    """The planner's whole output, in a stable order."""
    return {
        "stableRevision": plan.stable_revision,
        "create": plan.create,
        "apply": plan.apply,
        "scale": plan.scale,
        "annotate": plan.annotate,
        "keepDeployments": sorted(plan.keep_deployments),
        "canary": plan.canary.model_dump(mode="json", by_alias=True, exclude_none=True) if plan.canary else None,
        "targetFailure": asdict(plan.target_failure) if plan.target_failure else None,
        "events": [asdict(event) for event in plan.events],
        "clearRollbackRequest": plan.clear_rollback_request,
        "clearActivationRequest": plan.clear_activation_request,
        "analysisChecked": plan.checked,
        "zero": {**asdict(plan.zero), "record": dict(plan.zero.record)} if plan.zero else None,
        "mainServiceOneRevision": plan.main_one_revision,
    }


@pytest.mark.parametrize("phase", PHASES)
def test_plan_matches_golden(phase: str, update_golden: bool) -> None:
    actual = yaml.safe_dump(plan_document(PHASES[phase]()), sort_keys=False, width=120)
    expected = GOLDEN / f"plan-{phase}" / "expected.yaml"
    if update_golden:
        expected.parent.mkdir(exist_ok=True)
        expected.write_text(actual, encoding="utf-8")
    assert expected.exists(), f"missing {expected}: run pytest tests/unit --update-golden"
    assert actual == expected.read_text(encoding="utf-8")


def test_each_phase_is_the_one_its_name_says() -> None:
    """The goldens would still match if a synthetic observation stopped reaching its phase: pin each phase down."""
    assert steady().scale == {}
    assert not steady().create
    rolling_plan = rolling()
    assert rolling_plan.stable_revision != compute_revision(_spec(NEW_URI), OWNER, IMAGES)
    assert any(m["kind"] == "HorizontalPodAutoscaler" for m in steady().apply)
    assert not any(m["kind"] == "HorizontalPodAutoscaler" for m in rolling_plan.apply), "no HPA while rolling"
    step = canary_step()
    assert step.canary is not None
    assert step.canary.step == 1
    assert step.checked
    assert [e.reason for e in promote().events] == ["CanaryPromoted"]
    aborted = abort()
    assert aborted.target_failure is not None
    assert aborted.target_failure.reason == "RolloutAborted"
    rolled_back = rollback()
    assert rolled_back.clear_rollback_request
    assert rolled_back.target_failure is not None
    assert rolled_back.target_failure.reason == "RolledBack"
    zero_plan = scaled_to_zero()
    assert zero_plan.zero is not None
    assert zero_plan.zero.state == "zero"
    old, new = (names.revision_name(OWNER.name, compute_revision(_spec(u), OWNER, IMAGES)) for u in (OLD_URI, NEW_URI))
    oldest = names.revision_name(OWNER.name, compute_revision(_spec(OLDEST_URI), OWNER, IMAGES))
    promoted = rolling_promote()
    assert promoted.stable_revision == compute_revision(_spec(NEW_URI), OWNER, IMAGES)
    assert promoted.annotate[old][ROLE_ANNOTATION] == "lastKnownGood"
    assert promoted.keep_deployments == {old, new}, "the older last-known-good one is deleted"
    restored = rolling_rollback()
    assert not restored.create, "a rollback creates no revision"
    assert restored.scale == {old: 2}
    assert restored.annotate[old] == {ROLE_ANNOTATION: "stable"}
    warm = warm_last_known_good()
    main = next(m for m in warm.apply if m["kind"] == "Service" and m["metadata"]["name"] == OWNER.name)
    assert main["spec"]["selector"][names.LABEL_REVISION] == compute_revision(_spec(NEW_URI, warm=1), OWNER, IMAGES)
    assert warm.scale == {names.revision_name(OWNER.name, compute_revision(_spec(OLD_URI, warm=1), OWNER, IMAGES)): 1}
    stopped = rollback_during_rollout()
    assert stopped.scale == {old: 2}
    assert stopped.stable_revision == compute_revision(_spec(OLD_URI), OWNER, IMAGES)
    assert oldest in stopped.keep_deployments
    during = warm_during_rollout()
    assert not during.main_one_revision
    assert during.scale[oldest] == 0


def _arms(plan: Plan) -> dict[str, str] | None:
    found = [m for m in plan.apply if m["kind"] == "ConfigMap"]
    assert len(found) <= 1
    return found[0]["data"] if found else None


def test_the_arms_config_map_maps_each_kept_revision_to_its_role_after_the_plan() -> None:
    old, new = (compute_revision(_spec(u, canary=True, logged=True), OWNER, IMAGES) for u in (OLD_URI, NEW_URI))
    assert _arms(steady(logged=True)) == {compute_revision(_spec(OLD_URI, logged=True), OWNER, IMAGES): "stable"}
    assert _arms(canary_step(logged=True)) == {old: "stable", new: "canary"}
    assert _arms(promote(logged=True)) == {old: "lastKnownGood", new: "stable"}, "a promotion flips the roles"
    for phase in (steady, canary_step, promote):
        assert _arms(phase()) is None, "no ConfigMap without spec.monitoring.predictionLog"
    arms = next(m for m in promote(logged=True).apply if m["kind"] == "ConfigMap")
    assert arms["metadata"]["name"] == "iris-arms"
    assert arms["metadata"]["labels"][names.LABEL_REVISION] == new
    assert arms["metadata"]["ownerReferences"][0]["uid"] == OWNER.uid
