"""The PodDisruptionBudget ``<name>``: only when the model may run more than one replica."""

from __future__ import annotations

from modelapi_operator.api import AutoscalingSpec
from modelapi_operator.builders.common import Manifest, Owner, model_selector, object_meta


def wants_pdb(autoscaling: AutoscalingSpec) -> bool:
    """With a single replica a budget could only block node drains forever (or promise nothing)."""
    return autoscaling.max_replicas > 1


def build_pdb(owner: Owner, stable_revision: str) -> Manifest:
    # maxUnavailable (not minAvailable) keeps drains possible while the HPA holds the minimum.
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": object_meta(owner.name, owner, stable_revision),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": model_selector(owner)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }
