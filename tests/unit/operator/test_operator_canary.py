"""The canary policy and the planner's decisions over Deployments shaped like the API server's (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from plan_given import plan_for

from modelapi_operator import canary as policy
from modelapi_operator.api import ModelAPISpec
from modelapi_operator.builders import Owner, RuntimeImages, build_deployment, compute_revision
from modelapi_operator.plan import Plan
from modelapi_operator.revision_record import (
    ABORTED_ANNOTATION,
    FAILED_CHECKS_ANNOTATION,
    LAST_SERVED_ANNOTATION,
    ROLE_ANNOTATION,
    STEP_ANNOTATION,
    CanaryProgress,
    RevisionRecord,
)
from modelapi_operator.timestamps import rfc3339

OWNER = Owner(name="iris", namespace="ml", uid="uid-1")
IMAGES = RuntimeImages(cpu="cpu:1", gpu="gpu:1")
T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def _spec(uri: str = "s3://models/iris/2/model.onnx", **canary: Any) -> ModelAPISpec:
    canary_spec = {"steps": [{"weight": 10, "pauseSeconds": 60}, {"weight": 50, "pauseSeconds": 60}], **canary}
    return ModelAPISpec.model_validate(
        {
            "model": {"uri": uri},
            "autoscaling": {"minReplicas": 2},
            "rollout": {"strategy": "Canary", "canary": canary_spec},
        }
    )


STABLE_SPEC = _spec("s3://models/iris/1/model.onnx")
STABLE = compute_revision(STABLE_SPEC, OWNER, IMAGES)


def _deployment(spec: ModelAPISpec, role: str, replicas: int, ready: int, **annotations: str) -> dict[str, Any]:
    revision = compute_revision(spec, OWNER, IMAGES)
    manifest = build_deployment(spec, OWNER, revision, IMAGES)
    manifest["metadata"]["annotations"] = {**manifest["metadata"]["annotations"], ROLE_ANNOTATION: role, **annotations}
    manifest["metadata"]["uid"] = f"uid-{revision}"
    manifest["metadata"]["creationTimestamp"] = "2026-11-27T11:00:00Z" if role != "canary" else "2026-11-27T11:30:00Z"
    manifest["spec"]["replicas"] = replicas
    manifest["status"] = {"readyReplicas": ready}
    return manifest


def _plan(spec: ModelAPISpec, deployments: list[dict[str, Any]], now: datetime = T0, **extra: Any) -> Plan:
    gateway = extra.pop("gateway", False)
    return plan_for(spec, deployments, owner=OWNER, images=IMAGES, now=now, gateway_api_installed=gateway, **extra)


def _kinds(plan: Plan) -> dict[str, str]:
    return {
        f"{m['kind']}/{m['metadata']['name']}": m["metadata"].get("annotations", {}).get(ROLE_ANNOTATION, "")
        for m in plan.apply
    }


def test_replica_ratio_and_achieved_weight() -> None:
    assert policy.canary_replicas(9, 10, "replicas") == 1
    assert policy.canary_replicas(2, 50, "replicas") == 2
    assert policy.canary_replicas(4, 25, "gatewayAPI") == 1
    assert policy.achieved_weight(9, 1, 10, "replicas") == 10
    assert policy.achieved_weight(2, 1, 10, "replicas") == 33, "status shows what the ratio gives, not what was asked"
    assert policy.achieved_weight(2, 0, 10, "gatewayAPI") == 0


def test_a_model_change_starts_a_canary_at_the_first_step() -> None:
    spec = _spec()
    plan = _plan(spec, [_deployment(STABLE_SPEC, "stable", 2, 2)])
    canary_name = f"iris-{compute_revision(spec, OWNER, IMAGES)}"
    assert [m["spec"]["replicas"] for m in plan.create] == [0]
    assert plan.scale == {canary_name: 1}
    kinds = _kinds(plan)
    assert kinds[f"Deployment/{canary_name}"] == "canary"
    assert {"Service/iris", "Service/iris-stable", "Service/iris-canary", "HorizontalPodAutoscaler/iris"} <= set(kinds)
    hpa = next(m for m in plan.apply if m["kind"] == "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == f"iris-{STABLE}", "the stable keeps its autoscaling"
    assert plan.canary is not None
    assert (plan.canary.step, plan.canary.weight) == (0, 0)
    assert [e.reason for e in plan.events] == ["CanaryStep"]


def _running(
    spec: ModelAPISpec, step: int, started: datetime, ready: int = 1, annotations: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    progress = RevisionRecord(canary=CanaryProgress(step=step, step_started=started)).encode()
    return [
        _deployment(STABLE_SPEC, "stable", 2, 2),
        _deployment(spec, "canary", 1 if step == 0 else 2, ready, **{**progress, **(annotations or {})}),
    ]


def test_a_step_holds_until_its_pause_has_passed_then_advances() -> None:
    spec = _spec()
    held = _plan(spec, _running(spec, 0, T0), now=T0 + timedelta(seconds=30))
    assert held.canary is not None
    assert "pause 30/60 s" in (held.canary.analysis or "")
    assert not held.events
    advanced = _plan(spec, _running(spec, 0, T0), now=T0 + timedelta(seconds=61))
    assert [e.reason for e in advanced.events] == ["CanaryStep"]
    assert advanced.canary is not None
    assert advanced.canary.step == 1
    canary = next(m for m in advanced.apply if m["kind"] == "Deployment")
    assert canary["metadata"]["annotations"][STEP_ANNOTATION] == "1"
    assert list(advanced.scale.values()) == [2], "50% of a 2-replica stable is 2 canary replicas"


def test_analysis_failures_abort_after_the_limit_and_the_canary_is_not_retried() -> None:
    spec = _spec(analysis={"intervalSeconds": 10, "maxErrorRate": 0.05, "failureLimit": 2})
    bad = policy.Measurement(canary_error_rate=0.4, canary_latency_p99_ms=5.0, stable_error_rate=0.0)
    deployments = _running(spec, 0, T0, annotations={FAILED_CHECKS_ANNOTATION: "1"})
    plan = _plan(spec, deployments, now=T0 + timedelta(seconds=20), analysis_available=True, measurement=bad)
    assert plan.target_failure is not None
    assert plan.target_failure.reason == "RolloutAborted"
    assert "error rate 40.00% > 5.00%" in plan.target_failure.message
    assert list(plan.scale.values()) == [0]
    assert "Service/iris-canary" not in _kinds(plan)
    aborted = next(m for m in plan.apply if m["kind"] == "Deployment")
    again = _plan(
        spec,
        [
            _deployment(STABLE_SPEC, "stable", 2, 2),
            {**aborted, "spec": {**aborted["spec"], "replicas": 0}, "status": {}},
        ],
        now=T0 + timedelta(minutes=10),
    )
    assert again.target_failure is not None
    assert again.target_failure.reason == "RolloutAborted"
    assert again.scale == {}, "re-applying the same spec does not restart the canary"


def test_one_good_analysis_lets_a_step_advance() -> None:
    spec = _spec(analysis={"intervalSeconds": 10})
    good = policy.Measurement(canary_error_rate=0.0, canary_latency_p99_ms=3.0)
    waiting = _plan(spec, _running(spec, 0, T0), now=T0 + timedelta(seconds=70), analysis_available=True)
    assert waiting.canary is not None
    assert "waiting for a passing analysis" in (waiting.canary.analysis or "")
    advanced = _plan(
        spec, _running(spec, 0, T0), now=T0 + timedelta(seconds=70), analysis_available=True, measurement=good
    )
    assert advanced.canary is not None
    assert advanced.canary.step == 1
    assert advanced.canary.error_rate == 0.0


def test_without_prometheus_steps_advance_on_time_and_status_says_no_analysis_ran() -> None:
    spec = _spec(analysis={"intervalSeconds": 10})
    plan = _plan(spec, _running(spec, 0, T0), now=T0 + timedelta(seconds=61), analysis_available=False)
    assert plan.canary is not None
    assert plan.canary.step == 1
    assert "no analysis ran" in (plan.canary.analysis or "")


def test_promotion_keeps_the_old_stable_as_last_known_good() -> None:
    spec = _spec(steps=[{"weight": 10, "pauseSeconds": 60}, {"weight": 20, "pauseSeconds": 60}])
    last_step = _running(spec, 1, T0, ready=1)
    last_step[1]["spec"]["replicas"] = 1  # 20% of traffic next to 2 stable replicas is 1 canary replica
    growing = _plan(spec, last_step, now=T0 + timedelta(seconds=61))
    assert growing.canary is not None
    assert "promoting" in (growing.canary.analysis or "")
    assert list(growing.scale.values()) == [2], "the canary grows to the stable size before it takes over"
    last_step[1]["spec"]["replicas"] = 2
    last_step[1]["status"]["readyReplicas"] = 2
    promoted = _plan(spec, last_step, now=T0 + timedelta(seconds=61))
    canary_name = last_step[1]["metadata"]["name"]
    assert [e.reason for e in promoted.events] == ["CanaryPromoted"]
    assert promoted.stable_revision == compute_revision(spec, OWNER, IMAGES)
    assert _kinds(promoted)[f"Deployment/{canary_name}"] == "stable"
    demoted_at = rfc3339(T0 + timedelta(seconds=61))
    assert promoted.annotate == {
        f"iris-{STABLE}": {ROLE_ANNOTATION: "lastKnownGood", LAST_SERVED_ANNOTATION: demoted_at}
    }
    assert promoted.scale == {f"iris-{STABLE}": 0}
    assert promoted.canary is None
    hpa = next(m for m in promoted.apply if m["kind"] == "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == canary_name


def test_rollback_on_request_makes_last_known_good_stable_at_once() -> None:
    spec = _spec()
    current = _deployment(spec, "stable", 2, 2)
    good = _deployment(STABLE_SPEC, "lastKnownGood", 0, 0)
    plan = _plan(spec, [current, good], rollback_requested=True)
    assert plan.clear_rollback_request
    assert plan.stable_revision == STABLE
    assert plan.scale == {good["metadata"]["name"]: 2}, "the current revision serves until the restored one is ready"
    assert plan.annotate[good["metadata"]["name"]] == {ROLE_ANNOTATION: "stable"}
    aborted = plan.annotate[current["metadata"]["name"]][ABORTED_ANNOTATION]
    assert aborted is not None
    assert aborted.startswith("RolledBack: ")
    assert plan.target_failure is not None
    assert plan.target_failure.reason == "RolledBack"
    rolled_back = {
        **current,
        "metadata": {
            **current["metadata"],
            "annotations": {**current["metadata"]["annotations"], **plan.annotate[current["metadata"]["name"]]},
        },
    }
    restored = {
        **good,
        "metadata": {**good["metadata"], "annotations": {**good["metadata"]["annotations"], ROLE_ANNOTATION: "stable"}},
    }
    starting = _plan(
        spec, [rolled_back, {**restored, "spec": {**restored["spec"], "replicas": 2}, "status": {"readyReplicas": 1}}]
    )
    assert starting.scale == {}
    ready = _plan(
        spec, [rolled_back, {**restored, "spec": {**restored["spec"], "replicas": 2}, "status": {"readyReplicas": 2}}]
    )
    assert ready.scale == {current["metadata"]["name"]: 0}
    assert ready.target_failure is not None
    assert ready.target_failure.reason == "RolledBack"


def test_rollback_without_last_known_good_is_refused_with_an_event() -> None:
    plan = _plan(_spec(), [_deployment(_spec(), "stable", 2, 2)], rollback_requested=True)
    assert plan.clear_rollback_request
    assert [e.reason for e in plan.events] == ["RollbackUnavailable"]


def test_gateway_routing_sets_httproute_weights_per_step() -> None:
    spec = _spec(trafficRouting="gatewayAPI", gateway={"name": "public", "namespace": "gateway"})
    plan = _plan(spec, _running(spec, 1, T0, ready=1), now=T0 + timedelta(seconds=5), gateway=True)
    route = next(m for m in plan.apply if m["kind"] == "HTTPRoute")
    weights = {b["name"]: b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]}
    assert weights == {"iris-stable": 50, "iris-canary": 50}
    assert plan.canary is not None
    assert plan.canary.weight == 50


def test_a_rollback_interrupted_between_its_two_writes_is_finished_not_undone() -> None:
    spec = _spec()
    current = _deployment(spec, "stable", 2, 2)
    good = _deployment(STABLE_SPEC, "lastKnownGood", 0, 0)
    plan = _plan(spec, [current, good], rollback_requested=True)
    assert list(plan.annotate) == [current["metadata"]["name"], good["metadata"]["name"]], "demote before promote"
    demoted = {
        **current,
        "metadata": {
            **current["metadata"],
            "annotations": {**current["metadata"]["annotations"], **plan.annotate[current["metadata"]["name"]]},
        },
    }
    resumed = _plan(spec, [demoted, good])  # killed after the first write: no stable revision at all
    assert resumed.stable_revision == STABLE
    assert resumed.annotate[good["metadata"]["name"]] == {ROLE_ANNOTATION: "stable"}
    assert resumed.target_failure is not None
    assert resumed.target_failure.reason == "RolledBack"
    assert not any(
        m["metadata"]["annotations"].get(ROLE_ANNOTATION) == "stable"
        for m in resumed.apply
        if m["kind"] == "Deployment"
    )


def test_canary_error_rate_counts_server_faults_only() -> None:
    """The query's numerator selects the runtime's server_error class, which no 4xx and no overload 503 carries."""
    from modelapi_operator.prometheus import SERVER_FAULT, error_rate_query
    from modelapi_runtime.metrics import Metrics

    query = error_rate_query('namespace="ns",model="m",revision="r"', 30)
    assert query == (
        'sum(rate(modelapi_requests_total{namespace="ns",model="m",revision="r",class="server_error"}[30s])) '
        '/ sum(rate(modelapi_requests_total{namespace="ns",model="m",revision="r"}[30s]))'
    )
    metrics = Metrics("m", "r")
    for code in (200, 400, 404, 408, 413, 422, 431, 499, 500, 503):
        metrics.count(code)
    faults = {
        line.split('code="')[1].split('"')[0]
        for line in metrics.render().decode().splitlines()
        if line.startswith("modelapi_requests_total{") and SERVER_FAULT in line
    }
    assert faults == {"500"}
