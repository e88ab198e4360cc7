"""The ModelAPI status series: what one status publishes, and what a later status or a deletion takes away."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from modelapi_operator.api import ModelAPIStatus
from modelapi_operator.metrics import OperatorMetrics
from modelapi_operator.status_series import status_samples

KEY = ("ml", "fraud")
AT = "2026-11-30T20:00:00Z"


def status(**fields: Any) -> ModelAPIStatus:
    return ModelAPIStatus.model_validate(fields)


CANARY = status(
    conditions=[
        {"type": "Ready", "status": "True", "reason": "Ready", "lastTransitionTime": AT},
        {"type": "Progressing", "status": "True", "reason": "CanaryInProgress", "lastTransitionTime": AT},
        {"type": "Degraded", "status": "False", "reason": "AsExpected", "lastTransitionTime": AT},
    ],
    replicas=3,
    readyReplicas=2,
    revisions=[
        {"name": "fraud-bbbbbbbb", "role": "canary", "weight": 20, "modelUri": "s3://m/2"},
        {"name": "fraud-aaaaaaaa", "role": "stable", "weight": 80, "modelUri": "s3://m/1"},
    ],
    canary={"revision": "fraud-bbbbbbbb", "step": 0, "weight": 20},
)
HPA = {"metadata": {"name": "fraud"}, "status": {"desiredReplicas": 4, "currentReplicas": 3}}


def value(metrics: OperatorMetrics, series: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(
        f"modelapi_status_{series}", {"namespace": "ml", "name": "fraud", **labels}
    )


def test_a_canary_status_is_published_with_its_arms_and_the_hpas_desired_replicas() -> None:
    metrics = OperatorMetrics(CollectorRegistry())
    metrics.publish(KEY, status_samples(*KEY, CANARY, HPA))
    assert value(metrics, "condition", type="Ready", reason="Ready") == 1
    assert value(metrics, "condition", type="Degraded", reason="AsExpected") == 0
    assert value(metrics, "ready_replicas") == 2
    assert value(metrics, "replicas") == 3
    assert value(metrics, "canary_weight") == 20
    assert value(metrics, "hpa_desired_replicas") == 4
    assert value(metrics, "revision_weight", revision="aaaaaaaa", role="stable") == 80
    assert value(metrics, "revision_weight", revision="bbbbbbbb", role="canary") == 20


def test_a_later_status_removes_the_series_it_no_longer_has_and_a_deletion_removes_all() -> None:
    metrics = OperatorMetrics(CollectorRegistry())
    metrics.publish(KEY, status_samples(*KEY, CANARY, HPA))
    metrics.publish(("ml", "other"), status_samples("ml", "other", CANARY, None))
    promoted = status(
        conditions=[
            {"type": "Ready", "status": "True", "reason": "Ready", "lastTransitionTime": AT},
            {"type": "Degraded", "status": "True", "reason": "RolloutAborted", "lastTransitionTime": AT},
        ],
        readyReplicas=3,
        revisions=[{"name": "fraud-aaaaaaaa", "role": "stable", "weight": 100, "modelUri": "s3://m/1"}],
    )
    metrics.publish(KEY, status_samples(*KEY, promoted, None))
    assert value(metrics, "condition", type="Progressing", reason="CanaryInProgress") is None
    assert value(metrics, "condition", type="Degraded", reason="AsExpected") is None
    assert value(metrics, "condition", type="Degraded", reason="RolloutAborted") == 1
    assert value(metrics, "revision_weight", revision="bbbbbbbb", role="canary") is None
    assert value(metrics, "revision_weight", revision="aaaaaaaa", role="stable") == 100
    assert value(metrics, "canary_weight") == 0
    assert value(metrics, "hpa_desired_replicas") is None  # no HPA (a fixed size): no series
    metrics.retract(KEY)
    left = {s.labels["name"] for family in metrics.registry.collect() for s in family.samples if "name" in s.labels}
    assert left == {"other"}
    metrics.retract(KEY)  # twice (a second delete event) is harmless


def test_a_replica_that_stands_by_retracts_every_status_series() -> None:
    metrics = OperatorMetrics(CollectorRegistry())
    metrics.publish(KEY, status_samples(*KEY, CANARY, HPA))
    metrics.publish(("ml", "other"), status_samples("ml", "other", CANARY, None))
    metrics.retract_all()
    assert not [s for family in metrics.registry.collect() for s in family.samples if "name" in s.labels]
