"""A ModelAPI's status as Prometheus samples: what the chart's dashboard and alerts read about a ModelAPI.

The same series as the chart's kube-state-metrics custom-resource-state export (``modelapi_status_condition``,
``modelapi_status_ready_replicas``, ``modelapi_status_canary_weight``), so a cluster without kube-state-metrics
(or without its custom-resource-state config) has them too, and three that kube-state-metrics cannot read from the
ModelAPI alone: the stable revision's desired replicas, its HPA's desired replicas, and each revision's role and
traffic weight (how the dashboard tells the stable arm from the canary). Pure: metrics.py publishes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelapi_operator.api.status import ModelAPIStatus
from modelapi_operator.metrics import Sample


def status_samples(namespace: str, name: str, status: ModelAPIStatus, hpa: Mapping[str, Any] | None) -> list[Sample]:
    """Every sample of one ModelAPI: its conditions (1 when True, else 0, by type and reason), its replicas, its
    canary weight, its HPA's desired replicas (without an HPA, none) and its revisions' weights by role."""
    key = {"namespace": namespace, "name": name}
    samples = [
        Sample("condition", {**key, "type": c.type, "reason": c.reason or ""}, 1.0 if c.status == "True" else 0.0)
        for c in status.conditions
    ]
    samples.append(Sample("ready_replicas", key, float(status.ready_replicas or 0)))
    samples.append(Sample("replicas", key, float(status.replicas or 0)))
    samples.append(Sample("canary_weight", key, float(status.canary.weight if status.canary else 0)))
    desired = ((hpa or {}).get("status") or {}).get("desiredReplicas")
    if hpa is not None:
        samples.append(Sample("hpa_desired_replicas", key, float(desired or 0)))
    prefix = f"{name}-"
    for revision in status.revisions:
        hash_ = revision.name.removeprefix(prefix)
        labels = {**key, "revision": hash_, "role": revision.role}
        samples.append(Sample("revision_weight", labels, float(revision.weight)))
    return samples
