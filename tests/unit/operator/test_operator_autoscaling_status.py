"""The Autoscaling condition, read from the HorizontalPodAutoscaler's own conditions (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from modelapi_operator.api import AutoscalingSpec, ModelAPIStatus
from modelapi_operator.autoscaling import read_hpa, recheck_in, times, wanted_replicas
from modelapi_operator.builders import Owner
from modelapi_operator.builders.hpa import build_hpa
from modelapi_operator.status import Observation, RevisionView, compute_status
from modelapi_operator.timestamps import rfc3339

T0, T1 = "2026-11-30T10:00:00Z", "2026-11-30T10:00:15Z"
OWNER = Owner(name="iris", namespace="ml", uid="uid-1")
NO_METRICS_API = (
    "the HPA was unable to compute the replica count: failed to get cpu utilization: unable to get metrics for "
    "resource cpu: unable to fetch metrics from resource metrics API: the server could not find the requested "
    "resource (get pods.metrics.k8s.io)"
)


def _hpa(metric: str = "cpu", minimum: int = 1, maximum: int = 5, **conditions: tuple[str, str, str]) -> dict[str, Any]:
    spec = AutoscalingSpec.model_validate({"minReplicas": minimum, "maxReplicas": maximum, "metric": metric})
    hpa = build_hpa(spec, OWNER, "abc")
    hpa["status"] = {
        "conditions": [
            {"type": kind, "status": status, "reason": reason, "message": message}
            for kind, (status, reason, message) in conditions.items()
        ]
    }
    return hpa


INACTIVE = _hpa(
    AbleToScale=("True", "SucceededGetScale", "the HPA controller was able to get the target's current scale"),
    ScalingActive=("False", "FailedGetResourceMetric", NO_METRICS_API),
)
ACTIVE = _hpa(
    AbleToScale=("True", "ReadyForNewScale", "recommended size matches current size"),
    ScalingActive=("True", "ValidMetricFound", "the HPA was able to successfully calculate a replica count"),
)


def _observe(hpa: dict[str, Any] | None, previous: ModelAPIStatus | None = None, now: str = T0) -> Observation:
    view = RevisionView("iris-abc", "abc", "stable", "s3://models/iris/model.onnx", None, 1, 1)
    return Observation(
        generation=2,
        desired_revision="abc",
        invalid=None,
        revisions=[view],
        url="http://iris.ml.svc.cluster.local",
        previous=previous or ModelAPIStatus(),
        now=now,
        autoscaling=read_hpa(hpa),
    )


def _has(status: ModelAPIStatus, kind: str) -> bool:
    return any(c.type == kind for c in status.conditions)


def _condition(status: ModelAPIStatus, kind: str) -> tuple[str, str, str]:
    found = next(c for c in status.conditions if c.type == kind)
    return found.status, found.reason, found.message


def test_an_hpa_that_cannot_read_its_metric_makes_autoscaling_inactive_with_its_message_while_ready_stays() -> None:
    status, events = compute_status(_observe(INACTIVE))
    autoscaling = _condition(status, "Autoscaling")
    assert autoscaling[:2] == ("False", "AutoscalingInactive")
    assert "HorizontalPodAutoscaler iris cannot scale on cpu" in autoscaling[2]
    assert f"(FailedGetResourceMetric: {NO_METRICS_API})" in autoscaling[2]
    assert "metrics-server" in autoscaling[2]
    assert _condition(status, "Ready")[:2] == ("True", "Serving")
    assert _condition(status, "Degraded")[:2] == ("False", "AsExpected")
    assert [(e.type, e.reason) for e in events] == [("Warning", "AutoscalingInactive")]
    assert NO_METRICS_API in events[0].message


def test_the_in_flight_metric_names_the_adapter_and_the_metric() -> None:
    hpa = _hpa(
        "inFlight",
        ScalingActive=("False", "FailedGetPodsMetric", "unable to get metric modelapi_inflight_requests"),
    )
    status, _ = compute_status(_observe(hpa))
    autoscaling = _condition(status, "Autoscaling")
    assert autoscaling[:2] == ("False", "AutoscalingInactive")
    assert "cannot scale on inFlight" in autoscaling[2]
    assert "prometheus-adapter" in autoscaling[2]
    assert "modelapi_inflight_requests" in autoscaling[2]


def test_an_hpa_that_cannot_get_the_scale_is_inactive_too() -> None:
    hpa = _hpa(AbleToScale=("False", "FailedGetScale", "deployments/scale not found"))
    status, _ = compute_status(_observe(hpa))
    assert _condition(status, "Autoscaling")[:2] == ("False", "AutoscalingInactive")


def test_inactive_is_reported_once_then_recovery_is_a_normal_event() -> None:
    first, events = compute_status(_observe(INACTIVE))
    assert len(events) == 1
    again, events = compute_status(_observe(INACTIVE, previous=first, now=T1))
    assert events == [], "no Event while nothing changed"
    assert _condition(again, "Autoscaling") == _condition(first, "Autoscaling")
    recovered, events = compute_status(_observe(ACTIVE, previous=again, now=T1))
    assert _condition(recovered, "Autoscaling")[:2] == ("True", "AutoscalingActive")
    assert [(e.type, e.reason) for e in events] == [("Normal", "AutoscalingActive")]
    moved = next(c for c in recovered.conditions if c.type == "Autoscaling")
    assert moved.last_transition_time == T1


def test_an_active_hpa_from_the_start_is_no_event() -> None:
    status, events = compute_status(_observe(ACTIVE))
    assert _condition(status, "Autoscaling")[:2] == ("True", "AutoscalingActive")
    assert events == []


def test_an_hpa_that_has_not_computed_yet_is_pending() -> None:
    status, events = compute_status(_observe(_hpa()))
    assert _condition(status, "Autoscaling")[:2] == ("Unknown", "AutoscalingPending")
    assert events == []


def test_no_condition_without_an_hpa_for_a_fixed_size_or_at_zero_replicas() -> None:
    fixed = _hpa(minimum=2, maximum=2, ScalingActive=("False", "FailedGetResourceMetric", NO_METRICS_API))
    at_zero = _hpa(ScalingActive=("False", "ScalingDisabled", "scaling is disabled since the replica count is zero"))
    for hpa in (None, fixed, at_zero):
        status, events = compute_status(_observe(hpa))
        assert not _has(status, "Autoscaling")
        assert events == []


# ---- AutoscalingLimited: the HPA wants more than maxReplicas -------------------------------------------------------

NOW = datetime(2026, 11, 30, 10, 0, 0, tzinfo=UTC)
ONE_POD = {"cpu": "100m", "memory": "384Mi", "ephemeral-storage": "2560Mi"}


def _at(seconds_before: float) -> str:
    return rfc3339(NOW - timedelta(seconds=seconds_before))


def _limited_hpa(
    *,
    limited: tuple[str, str] = ("True", "TooManyReplicas"),
    since: float = 90,
    maximum: int = 2,
    desired: int = 2,
    current: int = 2,
    utilization: int = 90,
    target: int = 25,
) -> dict[str, Any]:
    spec = AutoscalingSpec.model_validate({"minReplicas": 1, "maxReplicas": maximum, "metric": "cpu", "target": target})
    hpa = build_hpa(spec, OWNER, "abc")
    hpa["status"] = {
        "currentReplicas": current,
        "desiredReplicas": desired,
        "currentMetrics": [
            {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": utilization}}}
        ],
        "conditions": [
            {"type": "AbleToScale", "status": "True", "reason": "ReadyForNewScale", "message": "ok"},
            {"type": "ScalingActive", "status": "True", "reason": "ValidMetricFound", "message": "ok"},
            {
                "type": "ScalingLimited",
                "status": limited[0],
                "reason": limited[1],
                "message": "the desired replica count is more than the maximum replica count",
                "lastTransitionTime": _at(since),
            },
        ],
    }
    return hpa


def _deployment(requests: dict[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"name": "iris-abc"},
        "spec": {"template": {"spec": {"containers": [{"name": "runtime", "resources": {"requests": requests}}]}}},
    }


def _observe_at(
    hpa: dict[str, Any], previous: ModelAPIStatus | None = None, requests: dict[str, str] | None = None
) -> Observation:
    view = RevisionView("iris-abc", "abc", "stable", "s3://models/iris/model.onnx", None, 2, 2)
    return Observation(
        generation=2,
        desired_revision="abc",
        invalid=None,
        revisions=[view],
        url="http://iris.ml.svc.cluster.local",
        previous=previous or ModelAPIStatus(),
        now=rfc3339(NOW),
        autoscaling=read_hpa(hpa, _deployment(ONE_POD if requests is None else requests)),
        autoscaling_limited_seconds=60,
    )


def test_an_hpa_held_at_its_max_for_a_sustained_period_says_autoscaling_limited_with_desired_max_and_cost() -> None:
    status, events = compute_status(_observe_at(_limited_hpa(since=61)))
    autoscaling = _condition(status, "Autoscaling")
    assert autoscaling[:2] == ("True", "AutoscalingLimited")
    # 90 % of a 25 % target on 2 replicas: the HPA controller asks for ceil(2 x 3.6) = 8
    assert "(desired 8, max 2)" in autoscaling[2]
    assert f"since {_at(61)}" in autoscaling[2]
    assert "Raising spec.autoscaling.maxReplicas to 8 costs 6 more replicas: cpu 600m, memory 2304Mi" in autoscaling[2]
    assert "(each requests cpu 100m, memory 384Mi, ephemeral-storage 2560Mi)" in autoscaling[2]
    # capacity-bound is not a failure: the model serves at its maximum
    assert _condition(status, "Ready")[:2] == ("True", "Serving")
    assert _condition(status, "Degraded")[:2] == ("False", "AsExpected")
    assert [(e.type, e.reason) for e in events] == [("Warning", "AutoscalingLimited")]
    assert "desired 8, max 2" in events[0].message


def test_a_short_peak_at_the_max_is_not_reported() -> None:
    status, events = compute_status(_observe_at(_limited_hpa(since=30)))
    assert _condition(status, "Autoscaling")[:2] == ("True", "AutoscalingActive")
    assert "up to maxReplicas 2" in _condition(status, "Autoscaling")[2]
    assert events == []


def test_the_cost_of_a_gpu_model_counts_its_gpus() -> None:
    requests = {"cpu": "2", "memory": "8Gi", "nvidia.com/gpu": "1"}
    status, _ = compute_status(_observe_at(_limited_hpa(since=61, utilization=40), requests=requests))
    message = _condition(status, "Autoscaling")[2]
    assert "(desired 4, max 2)" in message
    assert "costs 2 more replicas: cpu 4, memory 16Gi, nvidia.com/gpu 2" in message


def test_without_a_reading_of_the_metric_the_message_says_more_than_the_max() -> None:
    hpa = _limited_hpa(since=61)
    hpa["status"]["currentMetrics"] = []
    status, _ = compute_status(_observe_at(hpa))
    message = _condition(status, "Autoscaling")[2]
    assert "(desired more than 2, max 2)" in message
    assert "to 3 costs 1 more replica: cpu 100m, memory 384Mi" in message


def test_load_hovering_at_the_limit_does_not_flap_and_clearing_is_one_normal_event() -> None:
    limited, _ = compute_status(_observe_at(_limited_hpa(since=61)))
    # the HPA asks for no more (within the tolerance) for 10 s, still at its maximum: the reason holds, no Event
    within = _limited_hpa(limited=("False", "DesiredWithinRange"), since=10, utilization=26)
    held, events = compute_status(_observe_at(within, previous=limited))
    assert _condition(held, "Autoscaling")[:2] == ("True", "AutoscalingLimited")
    assert events == []
    # it asks for more again: still the same reason, still no Event
    again, events = compute_status(_observe_at(_limited_hpa(since=5), previous=held))
    assert _condition(again, "Autoscaling")[:2] == ("True", "AutoscalingLimited")
    assert events == []
    # no more wanted for longer than the sustained period: it clears, once
    calm = _limited_hpa(limited=("False", "DesiredWithinRange"), since=61, utilization=20)
    cleared, events = compute_status(_observe_at(calm, previous=again))
    assert _condition(cleared, "Autoscaling")[:2] == ("True", "AutoscalingActive")
    assert [(e.type, e.reason) for e in events] == [("Normal", "AutoscalingActive")]


def test_a_raised_max_clears_at_once_even_before_the_hpa_has_read_its_metric_again() -> None:
    limited, _ = compute_status(_observe_at(_limited_hpa(since=120)))
    # the operator raised maxReplicas to 10: the HPA's status still says what it said about the old maximum
    raised = _limited_hpa(since=120, maximum=10, desired=2)
    cleared, events = compute_status(_observe_at(raised, previous=limited))
    assert _condition(cleared, "Autoscaling")[:2] == ("True", "AutoscalingActive")
    assert [(e.type, e.reason) for e in events] == [("Normal", "AutoscalingActive")]
    assert "up to maxReplicas 10" in events[0].message


def test_a_scale_up_rate_limit_or_a_metric_failure_is_not_a_ceiling() -> None:
    rate = _limited_hpa(limited=("True", "ScaleUpLimit"), since=120)
    status, _ = compute_status(_observe_at(rate))
    assert _condition(status, "Autoscaling")[:2] == ("True", "AutoscalingActive")
    broken = _limited_hpa(since=120)
    broken["status"]["conditions"][1] = {
        "type": "ScalingActive",
        "status": "False",
        "reason": "FailedGetResourceMetric",
        "message": NO_METRICS_API,
    }
    limited, _ = compute_status(_observe_at(_limited_hpa(since=120)))
    status, events = compute_status(_observe_at(broken, previous=limited))
    assert _condition(status, "Autoscaling")[:2] == ("False", "AutoscalingInactive")
    assert [(e.type, e.reason) for e in events] == [("Warning", "AutoscalingInactive")]


def test_the_desired_count_is_estimated_as_the_hpa_controller_computes_it() -> None:
    assert wanted_replicas(_limited_hpa(utilization=27, target=25)) == 2  # within the 10 % tolerance
    assert wanted_replicas(_limited_hpa(utilization=30, target=25)) == 3  # ceil(2 x 1.2)
    assert wanted_replicas(_limited_hpa(utilization=50, target=25, current=3)) == 6
    pods = _hpa("inFlight", maximum=4)
    pods["status"] = {
        "currentReplicas": 4,
        "currentMetrics": [
            {
                "type": "Pods",
                "pods": {"metric": {"name": "modelapi_inflight_requests"}, "current": {"averageValue": "5500m"}},
            }
        ],
    }
    pods["spec"]["metrics"][0]["pods"]["target"]["averageValue"] = "2"
    assert wanted_replicas(pods) == 11  # ceil(4 x 2.75)
    assert wanted_replicas(_hpa()) is None  # no reading yet


def test_quantities_are_multiplied_in_their_own_unit() -> None:
    assert times("100m", 3) == "300m"
    assert times("384Mi", 3) == "1152Mi"
    assert times("0.5", 3) == "1.5"
    assert times("2Gi", 4) == "8Gi"
    assert times("1e3", 2) == "2 x 1e3"


def test_a_recheck_is_due_when_the_sustained_period_ends() -> None:
    def recheck(hpa: dict[str, Any], was_limited: bool) -> float | None:
        return recheck_in(read_hpa(hpa), was_limited=was_limited, now=NOW, sustain=60)

    assert recheck(_limited_hpa(since=45), was_limited=False) == 15
    assert recheck(_limited_hpa(since=75), was_limited=False) is None  # due already: this reconcile said it
    assert recheck(_limited_hpa(since=45), was_limited=True) is None
    assert recheck(_limited_hpa(limited=("False", "DesiredWithinRange"), since=20), was_limited=True) == 40
    assert recheck(_limited_hpa(limited=("False", "DesiredWithinRange"), since=20), was_limited=False) is None
