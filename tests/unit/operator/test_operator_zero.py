"""Scale to zero: the planner's decisions over Deployments shaped like the API server's, and the status (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from plan_given import plan_for

from modelapi_operator import zero
from modelapi_operator.api import ModelAPISpec, ModelAPIStatus
from modelapi_operator.builders import ActivatorEndpoints, Owner, RuntimeImages, build_deployment, compute_revision
from modelapi_operator.plan import Plan
from modelapi_operator.reconcile import activator_from_slices, dropped_selector_fix
from modelapi_operator.revision_record import ACTIVE_SINCE_ANNOTATION, ROLE_ANNOTATION, SCALED_TO_ZERO_ANNOTATION
from modelapi_operator.status import Observation, RevisionView, compute_status
from modelapi_operator.timestamps import rfc3339

OWNER = Owner(name="iris", namespace="ml", uid="uid-1")
IMAGES = RuntimeImages(cpu="cpu:1", gpu="gpu:1")
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
CREATED = "2026-11-30T11:00:00Z"  # an hour before T0: past any idle time
ACTIVATOR = ActivatorEndpoints(addresses=("10.245.0.7", "10.245.0.8"), port=8080)


def _spec(uri: str = "s3://models/iris/1/model.onnx", min_replicas: int = 0) -> ModelAPISpec:
    autoscaling: dict[str, Any] = {"minReplicas": min_replicas, "maxReplicas": 3}
    if min_replicas == 0:
        autoscaling["scaleToZeroAfterSeconds"] = 60
    return ModelAPISpec.model_validate({"model": {"uri": uri}, "autoscaling": autoscaling})


SPEC = _spec()
REVISION = compute_revision(SPEC, OWNER, IMAGES)
NAME = f"iris-{REVISION}"


def _deployment(spec: ModelAPISpec, replicas: int, ready: int, **annotations: str) -> dict[str, Any]:
    revision = compute_revision(spec, OWNER, IMAGES)
    manifest = build_deployment(spec, OWNER, revision, IMAGES)
    manifest["metadata"]["annotations"] = {
        **manifest["metadata"]["annotations"],
        ROLE_ANNOTATION: "stable",
        **annotations,
    }
    manifest["metadata"]["uid"] = f"uid-{revision}"
    manifest["metadata"]["creationTimestamp"] = CREATED
    manifest["spec"]["replicas"] = replicas
    manifest["status"] = {"readyReplicas": ready}
    return manifest


def _parked(spec: ModelAPISpec = SPEC, replicas: int = 0, ready: int = 0) -> dict[str, Any]:
    return _deployment(spec, replicas, ready, **{SCALED_TO_ZERO_ANNOTATION: "2026-11-30T11:30:00Z"})


def _plan(deployments: list[dict[str, Any]], spec: ModelAPISpec = SPEC, **extra: Any) -> Plan:
    extra.setdefault("analysis_available", True)
    extra.setdefault("activator", ACTIVATOR)
    return plan_for(spec, deployments, owner=OWNER, images=IMAGES, now=T0, **extra)


def _applied(plan: Plan, kind: str) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["name"]: m for m in plan.apply if m["kind"] == kind}


def _via_activator(plan: Plan) -> bool:
    services = _applied(plan, "Service")
    slices = _applied(plan, "EndpointSlice")
    without = {name for name, s in services.items() if "selector" not in s["spec"]}
    if without:
        assert without == {"iris", "iris-stable"}
        assert set(slices) == {"iris-activator", "iris-stable-activator"}
        return True
    assert not slices
    return False


def test_an_idle_model_goes_to_zero_behind_the_activator() -> None:
    plan = _plan([_deployment(SPEC, 2, 2)], idle=True)
    assert plan.scale == {NAME: 0}
    assert plan.annotate[NAME] == {SCALED_TO_ZERO_ANNOTATION: "2026-11-30T12:00:00Z"}
    assert not _applied(plan, "HorizontalPodAutoscaler"), "the HPA is out of the way at zero"
    assert _via_activator(plan)
    endpoints = _applied(plan, "EndpointSlice")["iris-activator"]
    assert endpoints["metadata"]["labels"]["kubernetes.io/service-name"] == "iris"
    assert [e["addresses"] for e in endpoints["endpoints"]] == [["10.245.0.7"], ["10.245.0.8"]]
    assert endpoints["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP", "appProtocol": "http"}]
    # the slice is applied before the Service loses its selector
    order = [m["metadata"]["name"] for m in plan.apply if m["kind"] in ("Service", "EndpointSlice")]
    assert order.index("iris-activator") < order.index("iris")


@pytest.mark.parametrize("idle", [False, None])
def test_a_model_with_requests_or_unknown_idleness_stays_warm(idle: bool | None) -> None:
    plan = _plan([_deployment(SPEC, 1, 1)], idle=idle)
    assert plan.scale == {}
    assert _applied(plan, "HorizontalPodAutoscaler")["iris"]["spec"]["minReplicas"] == 1
    assert not _via_activator(plan)


@pytest.mark.parametrize(
    ("extra", "words"),
    [({"activator": None}, "no ready activator"), ({"analysis_available": False}, "no Prometheus URL")],
)
def test_without_activator_or_prometheus_the_model_keeps_a_replica_and_says_why(
    extra: dict[str, Any], words: str
) -> None:
    plan = _plan([_deployment(SPEC, 1, 1)], idle=True, **extra)
    assert plan.scale == {}
    assert plan.zero is not None
    assert plan.zero.notice is not None
    assert words in plan.zero.notice
    assert not _via_activator(plan)


def test_at_zero_nothing_moves_until_a_request() -> None:
    plan = _plan([_parked()])
    assert plan.scale == {}
    assert NAME not in plan.annotate
    assert not _applied(plan, "HorizontalPodAutoscaler")
    assert _via_activator(plan)
    assert plan.zero is not None
    assert plan.zero.state == "zero"


def test_a_request_at_zero_wakes_the_stable_revision_and_is_cleared() -> None:
    plan = _plan([_parked()], activation_requested=True)
    assert plan.scale == {NAME: 1}
    assert plan.annotate[NAME] == {ACTIVE_SINCE_ANNOTATION: "2026-11-30T12:00:00Z"}
    assert _applied(plan, "HorizontalPodAutoscaler")["iris"]["spec"]["minReplicas"] == 1
    assert _via_activator(plan), "traffic stays on the activator until a replica is ready"
    assert plan.clear_activation_request


def test_a_ready_replica_takes_traffic_back_from_the_activator() -> None:
    plan = _plan([_parked(replicas=1, ready=0)])
    assert plan.zero is not None
    assert plan.zero.state == "waking"
    assert plan.scale == {}
    assert _via_activator(plan)
    plan = _plan([_parked(replicas=1, ready=1)])
    assert plan.annotate[NAME] == {SCALED_TO_ZERO_ANNOTATION: None}
    assert not _via_activator(plan)
    assert _applied(plan, "Service")["iris"]["spec"]["selector"] == {"serving.modelapi.io/name": "iris"}


def test_a_model_at_zero_whose_activator_went_away_is_woken() -> None:
    """Never a model stuck at zero behind nothing: without an activator it gets a replica back."""
    plan = _plan([_parked()], activator=None)
    assert plan.scale == {NAME: 1}
    assert not _via_activator(plan)


def test_min_replicas_raised_at_zero_wakes_the_model() -> None:
    spec = _spec(min_replicas=1)
    plan = _plan([_parked(spec)], spec=spec)
    assert plan.scale == {f"iris-{compute_revision(spec, OWNER, IMAGES)}": 1}


def test_a_new_model_at_zero_replaces_the_old_revision_at_zero() -> None:
    """No rollout at zero: the new revision is created at 0 replicas, still parked; the old one is deleted; the next
    request wakes the new one."""
    new_spec = _spec("s3://models/iris/2/model.onnx")
    new_name = f"iris-{compute_revision(new_spec, OWNER, IMAGES)}"
    plan = _plan([_parked()], spec=new_spec)
    assert [(m["metadata"]["name"], m["spec"]["replicas"]) for m in plan.create] == [(new_name, 0)]
    assert plan.create[0]["metadata"]["annotations"][SCALED_TO_ZERO_ANNOTATION] == "2026-11-30T11:30:00Z"
    assert SCALED_TO_ZERO_ANNOTATION not in _applied(plan, "Deployment")[new_name]["metadata"]["annotations"]
    assert plan.keep_deployments == {new_name}, "the old revision is deleted"
    assert plan.stable_revision == compute_revision(new_spec, OWNER, IMAGES)
    assert _via_activator(plan)
    assert plan.scale == {}
    woken = _plan([_parked()], spec=new_spec, activation_requested=True)
    assert woken.scale == {new_name: 1}


def test_a_new_modelapi_with_min_zero_starts_with_one_replica() -> None:
    plan = _plan([])
    assert [m["spec"]["replicas"] for m in plan.create] == [1]


def test_idle_is_asked_only_after_the_idle_time_since_the_revision_started() -> None:
    deployment = _deployment(SPEC, 1, 1)
    assert zero.idle_check_due(SPEC.autoscaling, deployment, T0)
    woken = _deployment(SPEC, 1, 1, **{ACTIVE_SINCE_ANNOTATION: rfc3339(T0 - timedelta(seconds=30))})
    assert not zero.idle_check_due(SPEC.autoscaling, woken, T0)
    assert zero.idle_check_due(SPEC.autoscaling, woken, T0 + timedelta(seconds=30))
    assert not zero.idle_check_due(SPEC.autoscaling, _parked(), T0)
    assert not zero.idle_check_due(_spec(min_replicas=1).autoscaling, deployment, T0)


def test_a_selector_left_on_a_service_that_must_have_none_is_removed() -> None:
    desired = {"kind": "Service", "spec": {"type": "ClusterIP", "ports": []}}
    observed = {"kind": "Service", "spec": {"type": "ClusterIP", "selector": {"a": "b"}, "ports": []}}
    assert dropped_selector_fix(desired, observed) == {"spec": {"selector": None}}
    assert dropped_selector_fix(desired, {"kind": "Service", "spec": {"ports": []}}) is None
    assert dropped_selector_fix({**desired, "spec": {"selector": {"a": "b"}}}, observed) is None


def test_activator_endpoints_are_the_ready_ones() -> None:
    slices = [
        {
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": [
                {"addresses": ["10.0.0.2"], "conditions": {"ready": True}},
                {"addresses": ["10.0.0.3"], "conditions": {"ready": False}},
                {"addresses": ["10.0.0.4"], "conditions": {"ready": True, "terminating": True}},
            ],
        }
    ]
    assert activator_from_slices(slices) == ActivatorEndpoints(addresses=("10.0.0.2",), port=8080)
    assert activator_from_slices([{**slices[0], "endpoints": []}]) is None
    assert activator_from_slices([]) is None


def _status(state: zero.ZeroState | None, desired: int, ready: int, notice: str | None = None) -> ModelAPIStatus:
    view = RevisionView(
        name=NAME, revision=REVISION, role="stable", model_uri="s3://m", sha256=None, desired=desired, ready=ready
    )
    status, _ = compute_status(
        Observation(
            generation=1,
            desired_revision=REVISION,
            invalid=None,
            revisions=[view],
            url="http://iris.ml.svc.cluster.local",
            previous=ModelAPIStatus(),
            now="2026-11-30T12:00:00Z",
            zero_state=state,
            zero_since="2026-11-30T11:30:00Z" if state in ("zero", "waking") else None,
            zero_notice=notice,
        )
    )
    return status


def _conditions(status: ModelAPIStatus) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in status.conditions}


def test_status_at_zero_is_ready_with_reason_scaled_to_zero() -> None:
    status = _status("zero", 0, 0)
    assert _conditions(status) == {
        "Ready": ("True", "ScaledToZero"),
        "Progressing": ("False", "ScaledToZero"),
        "Degraded": ("False", "AsExpected"),
    }
    assert status.scaled_to_zero_at == "2026-11-30T11:30:00Z"


def test_status_while_waking_is_activating() -> None:
    status = _status("waking", 1, 0)
    assert _conditions(status)["Ready"] == ("True", "Activating")
    assert _conditions(status)["Progressing"] == ("True", "Activating")


def test_status_warm_without_activator_names_the_reason() -> None:
    status = _status("warm", 1, 1, notice="scale to zero is off: no ready activator")
    ready = next(c for c in status.conditions if c.type == "Ready")
    assert (ready.status, ready.reason) == ("True", "ScaleToZeroUnavailable")
    assert "no ready activator" in ready.message
    assert status.scaled_to_zero_at is None
    assert _conditions(_status("warm", 1, 1))["Ready"] == ("True", "Serving")
