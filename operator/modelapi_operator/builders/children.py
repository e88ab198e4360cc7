"""Every child of a ModelAPI at rest (one stable revision, no canary running)."""

from __future__ import annotations

from modelapi_operator.api import ModelAPISpec
from modelapi_operator.builders.common import Manifest, Owner, RuntimeImages
from modelapi_operator.builders.deployment import build_deployment
from modelapi_operator.builders.hpa import build_hpa
from modelapi_operator.builders.httproute import build_httproute
from modelapi_operator.builders.pdb import build_pdb, wants_pdb
from modelapi_operator.builders.revision import compute_revision
from modelapi_operator.builders.service import build_service


def uses_gateway_api(spec: ModelAPISpec, *, gateway_api_installed: bool) -> bool:
    """docs/api.md: gatewayAPI when asked; auto picks it when its CRDs exist and a gateway is named."""
    canary = spec.rollout.canary
    if spec.rollout.strategy != "Canary" or canary is None or canary.gateway is None:
        return False
    if canary.traffic_routing == "gatewayAPI":
        return True
    return canary.traffic_routing == "auto" and gateway_api_installed


def build_children(
    spec: ModelAPISpec,
    owner: Owner,
    images: RuntimeImages,
    *,
    gateway_api_installed: bool,
) -> list[Manifest]:
    revision = compute_revision(spec, owner, images)
    children = [
        build_deployment(spec, owner, revision, images),
        build_service(owner, "main", revision),
        build_service(owner, "stable", revision),
        build_hpa(spec.autoscaling, owner, revision),
    ]
    if wants_pdb(spec.autoscaling):
        children.append(build_pdb(owner, revision))
    canary = spec.rollout.canary
    if (
        canary is not None
        and canary.gateway is not None
        and uses_gateway_api(spec, gateway_api_installed=gateway_api_installed)
    ):
        children.append(build_httproute(canary.gateway, owner, revision, canary_weight=None))
    return children
