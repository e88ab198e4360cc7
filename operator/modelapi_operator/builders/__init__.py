"""Pure builders: validated spec (+ owner identity, revision, settings) -> Kubernetes manifests.

No I/O, clock, randomness or environment here; the same inputs always give the same manifests.
"""

from modelapi_operator.builders.arms import build_arms
from modelapi_operator.builders.common import Manifest, Owner, RuntimeImages
from modelapi_operator.builders.deployment import build_deployment, effective_surge_and_unavailable
from modelapi_operator.builders.expose import (
    CLAIM_ANNOTATION,
    EXPOSE_LABEL,
    build_expose_route,
    expose_claim,
    expose_route_name,
    gateway_of,
)
from modelapi_operator.builders.hpa import build_hpa
from modelapi_operator.builders.httproute import build_httproute, uses_gateway_api
from modelapi_operator.builders.pdb import build_pdb, wants_pdb
from modelapi_operator.builders.revision import compute_revision
from modelapi_operator.builders.service import (
    ActivatorEndpoints,
    activator_slice_name,
    build_activator_slice,
    build_service,
    service_url,
)

__all__ = [
    "CLAIM_ANNOTATION",
    "EXPOSE_LABEL",
    "ActivatorEndpoints",
    "Manifest",
    "Owner",
    "RuntimeImages",
    "activator_slice_name",
    "build_activator_slice",
    "build_arms",
    "build_deployment",
    "build_expose_route",
    "build_hpa",
    "build_httproute",
    "build_pdb",
    "build_service",
    "compute_revision",
    "effective_surge_and_unavailable",
    "expose_claim",
    "expose_route_name",
    "gateway_of",
    "service_url",
    "uses_gateway_api",
    "wants_pdb",
]
