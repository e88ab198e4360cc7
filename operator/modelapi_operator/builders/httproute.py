"""The Gateway API HTTPRoute ``<name>``: weighted backends for the stable and canary revisions."""

from __future__ import annotations

from typing import Any

from modelapi_operator import names
from modelapi_operator.api import GatewayRef, ModelAPISpec
from modelapi_operator.builders.common import Manifest, Owner, object_meta

GATEWAY_GROUP = "gateway.networking.k8s.io"
# Names the model on every request through the route: at zero the backends are the activator's pods, which serve
# every model and cannot tell which Service a Gateway picked.
TARGET_HEADER = "X-ModelAPI-Target"


def uses_gateway_api(spec: ModelAPISpec, *, gateway_api_installed: bool) -> bool:
    """docs/api.md: gatewayAPI when asked; auto picks it when its CRDs exist and a gateway is named."""
    canary = spec.rollout.canary
    if spec.rollout.strategy != "Canary" or canary is None or canary.gateway is None:
        return False
    if canary.traffic_routing == "gatewayAPI":
        return True
    return canary.traffic_routing == "auto" and gateway_api_installed


def parent_ref(gateway: GatewayRef) -> dict[str, Any]:
    ref: dict[str, Any] = {"group": GATEWAY_GROUP, "kind": "Gateway", "name": gateway.name}
    if gateway.namespace:
        ref["namespace"] = gateway.namespace
    if gateway.section_name:
        ref["sectionName"] = gateway.section_name
    return ref


def _backend(name: str, weight: int) -> dict[str, Any]:
    return {"group": "", "kind": "Service", "name": name, "port": names.SERVICE_PORT, "weight": weight}


def backends(model_name: str, canary_weight: int | None, *, split: bool = True) -> list[dict[str, Any]]:
    """``split``: ``<name>-stable`` (and ``<name>-canary`` with ``canary_weight``); else the ``<name>`` Service."""
    if not split:
        return [_backend(model_name, 100)]
    refs = [_backend(names.stable_service_name(model_name), 100 - (canary_weight or 0))]
    if canary_weight is not None:
        refs.append(_backend(names.canary_service_name(model_name), canary_weight))
    return refs


def build_httproute(gateway: GatewayRef, owner: Owner, stable_revision: str, canary_weight: int | None) -> Manifest:
    """``canary_weight`` None: all traffic to ``<name>-stable``; else split stable/canary by weight."""
    return {
        "apiVersion": f"{GATEWAY_GROUP}/v1",
        "kind": "HTTPRoute",
        "metadata": object_meta(owner.name, owner, stable_revision),
        "spec": {
            "parentRefs": [parent_ref(gateway)],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                    "filters": [
                        {
                            "type": "RequestHeaderModifier",
                            "requestHeaderModifier": {
                                "set": [{"name": TARGET_HEADER, "value": f"{owner.namespace}/{owner.name}"}]
                            },
                        }
                    ],
                    "backendRefs": backends(owner.name, canary_weight),
                }
            ],
        },
    }
