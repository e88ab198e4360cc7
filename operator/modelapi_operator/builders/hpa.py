"""The HorizontalPodAutoscaler ``<name>`` that scales the stable revision."""

from __future__ import annotations

from modelapi_operator import names
from modelapi_operator.api import AutoscalingSpec
from modelapi_operator.builders.common import Manifest, Owner, object_meta


def _metric(autoscaling: AutoscalingSpec) -> Manifest:
    if autoscaling.metric == "inFlight":
        # Served by a custom-metrics adapter (e.g. prometheus-adapter) from the runtime's gauge.
        return {
            "type": "Pods",
            "pods": {
                "metric": {"name": names.INFLIGHT_METRIC},
                "target": {"type": "AverageValue", "averageValue": str(autoscaling.target)},
            },
        }
    return {
        "type": "Resource",
        "resource": {
            "name": autoscaling.metric,
            "target": {"type": "Utilization", "averageUtilization": autoscaling.target},
        },
    }


def build_hpa(autoscaling: AutoscalingSpec, owner: Owner, stable_revision: str) -> Manifest:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": object_meta(owner.name, owner, stable_revision),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": names.revision_name(owner.name, stable_revision),
            },
            # An HPA cannot hold 0 replicas (HPAScaleToZero is an alpha gate): with minReplicas 0 it keeps 1, and
            # the operator takes the model to zero itself (and deletes the HPA meanwhile).
            "minReplicas": max(autoscaling.min_replicas, 1),
            "maxReplicas": autoscaling.max_replicas,
            "metrics": [_metric(autoscaling)],
            "behavior": {
                "scaleUp": {"stabilizationWindowSeconds": autoscaling.scale_up_stabilization_seconds},
                "scaleDown": {"stabilizationWindowSeconds": autoscaling.scale_down_stabilization_seconds},
            },
        },
    }
