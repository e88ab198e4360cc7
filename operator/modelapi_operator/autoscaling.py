"""Whether the HorizontalPodAutoscaler can compute its metric, read from its own conditions (pure).

An HPA whose metric cannot be read (no metrics-server for cpu/memory, no custom-metrics adapter for inFlight)
keeps the replicas where they are and says why in ``ScalingActive=False`` (``FailedGetResourceMetric``,
``FailedGetPodsMetric``, ...), or ``AbleToScale=False`` when it cannot read or change the Deployment's scale.
The ModelAPI's ``Autoscaling`` condition carries that reason and the HPA's message; ``Ready`` does not change
(the model serves at its current size).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from modelapi_operator import names
from modelapi_operator.api.status import ConditionStatus

AUTOSCALING_ACTIVE: Final = "AutoscalingActive"
AUTOSCALING_INACTIVE: Final = "AutoscalingInactive"
AUTOSCALING_PENDING: Final = "AutoscalingPending"
# The HPA's own reason when the Deployment is at 0 replicas: nothing to compute, and nothing wrong.
HPA_SCALING_DISABLED: Final = "ScalingDisabled"

_WHAT_TO_INSTALL: Final = {
    "cpu": "The resource metrics API (metrics.k8s.io) is served by metrics-server: install it in the cluster",
    "memory": "The resource metrics API (metrics.k8s.io) is served by metrics-server: install it in the cluster",
    "inFlight": (
        "The custom metrics API (custom.metrics.k8s.io) must serve the pods metric "
        f"{names.INFLIGHT_METRIC}: install Prometheus (scraping the model's pods) and prometheus-adapter with the "
        "chart's rule (README, Autoscaling)"
    ),
}

Manifest = Mapping[str, Any]


@dataclass(frozen=True)
class AutoscalingView:
    """The HPA of the stable revision, as far as its metric goes."""

    hpa: str
    metric: str  # cpu, memory or inFlight
    active: bool | None  # None: the HPA has not computed its metric yet
    reason: str  # the HPA's reason for the condition that decided
    message: str  # the HPA's message


def _metric_of(hpa: Manifest) -> str:
    metrics = hpa.get("spec", {}).get("metrics") or [{}]
    first = metrics[0]
    if first.get("type") == "Pods" and first.get("pods", {}).get("metric", {}).get("name") == names.INFLIGHT_METRIC:
        return "inFlight"
    return str(first.get("resource", {}).get("name", "cpu"))


def _hpa_condition(hpa: Manifest, kind: str) -> Mapping[str, Any] | None:
    return next((c for c in hpa.get("status", {}).get("conditions") or [] if c.get("type") == kind), None)


def read_hpa(hpa: Manifest | None) -> AutoscalingView | None:
    """None when there is nothing to say: no HPA, a fixed size (min == max), or a Deployment at zero replicas."""
    if hpa is None:
        return None
    spec = hpa.get("spec", {})
    if spec.get("minReplicas", 1) == spec.get("maxReplicas"):
        return None
    name, metric = hpa["metadata"]["name"], _metric_of(hpa)
    able, scaling = _hpa_condition(hpa, "AbleToScale"), _hpa_condition(hpa, "ScalingActive")
    for condition in (able, scaling):
        if condition is not None and condition.get("status") == "False":
            if condition.get("reason") == HPA_SCALING_DISABLED:
                return None
            return AutoscalingView(name, metric, False, str(condition.get("reason")), str(condition.get("message")))
    if scaling is not None and scaling.get("status") == "True":
        return AutoscalingView(name, metric, True, str(scaling.get("reason")), str(scaling.get("message")))
    return AutoscalingView(name, metric, None, "", "")


def autoscaling_condition(view: AutoscalingView) -> tuple[ConditionStatus, str, str]:
    """(status, reason, message) of the ModelAPI's ``Autoscaling`` condition."""
    if view.active is None:
        return "Unknown", AUTOSCALING_PENDING, f"HorizontalPodAutoscaler {view.hpa} has not read its metric yet"
    if view.active:
        return "True", AUTOSCALING_ACTIVE, f"HorizontalPodAutoscaler {view.hpa} scales on {view.metric}"
    return (
        "False",
        AUTOSCALING_INACTIVE,
        f"HorizontalPodAutoscaler {view.hpa} cannot scale on {view.metric}, replicas stay as they are "
        f"({view.reason}: {view.message}). {_WHAT_TO_INSTALL.get(view.metric, '')}",
    )
