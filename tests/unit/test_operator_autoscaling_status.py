"""The Autoscaling condition, read from the HorizontalPodAutoscaler's own conditions (pure)."""

from __future__ import annotations

from typing import Any

from modelapi_operator.api import AutoscalingSpec, ModelAPIStatus
from modelapi_operator.autoscaling import read_hpa
from modelapi_operator.builders import Owner
from modelapi_operator.builders.hpa import build_hpa
from modelapi_operator.status import Observation, RevisionView, compute_status

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
