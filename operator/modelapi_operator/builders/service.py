"""Services: ``<name>`` (what clients call), ``<name>-stable`` and ``<name>-canary`` (one revision each)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from modelapi_operator import names
from modelapi_operator.builders.common import Manifest, Owner, model_selector, object_meta, revision_selector

ServiceRole = Literal["main", "stable", "canary"]
SERVICE_NAME_LABEL: Final = "kubernetes.io/service-name"
SLICE_MANAGED_BY_LABEL: Final = "endpointslice.kubernetes.io/managed-by"


def service_name(owner: Owner, role: ServiceRole) -> str:
    if role == "stable":
        return names.stable_service_name(owner.name)
    if role == "canary":
        return names.canary_service_name(owner.name)
    return owner.name


def build_service(
    owner: Owner, role: ServiceRole, revision: str, *, via_activator: bool = False, one_revision: bool = False
) -> Manifest:
    """``main`` selects every revision of the model (so a rolling update or a replica-ratio canary
    never leaves clients without ready endpoints), or only ``revision`` with ``one_revision`` (warm replicas of the
    last-known-good revision exist and must take no traffic); ``stable`` and ``canary`` select ``revision`` only
    and are the HTTPRoute's weighted backends. ``via_activator`` (the model is at zero): no selector, so
    the endpoints are the operator's EndpointSlice of activator pods (build_activator_slice)."""
    every_revision = role == "main" and not one_revision
    selector = model_selector(owner) if every_revision else revision_selector(owner, revision)
    spec: Manifest = {"type": "ClusterIP"}
    if not via_activator:
        spec["selector"] = selector
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(service_name(owner, role), owner, revision),
        "spec": {
            **spec,
            "ports": [
                {
                    "name": "http",
                    "port": names.SERVICE_PORT,
                    "targetPort": "http",
                    "protocol": "TCP",
                    "appProtocol": "http",
                }
            ],
        },
    }


def service_url(owner: Owner) -> str:
    return f"http://{owner.name}.{owner.namespace}.svc.cluster.local"


@dataclass(frozen=True)
class ActivatorEndpoints:
    """Where the activator's ready pods are (from its own Service's EndpointSlices)."""

    addresses: tuple[str, ...]
    port: int
    address_type: str = "IPv4"


def activator_slice_name(service: str) -> str:
    return f"{service}-activator"


def build_activator_slice(owner: Owner, service: str, revision: str, activator: ActivatorEndpoints) -> Manifest:
    """The endpoints of a selector-less model Service while the model is at zero: the activator's pods, on the
    Service's port name (kube-proxy and Gateways match slice ports to Service ports by name)."""
    meta = object_meta(activator_slice_name(service), owner, revision)
    meta["labels"] = {
        **meta["labels"],
        SERVICE_NAME_LABEL: service,
        SLICE_MANAGED_BY_LABEL: names.FIELD_MANAGER,
    }
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": meta,
        "addressType": activator.address_type,
        "ports": [{"name": "http", "port": activator.port, "protocol": "TCP", "appProtocol": "http"}],
        "endpoints": [
            {"addresses": [address], "conditions": {"ready": True}} for address in sorted(activator.addresses)
        ],
    }
