"""Services: ``<name>`` (what clients call), ``<name>-stable`` and ``<name>-canary`` (one revision each)."""

from __future__ import annotations

from typing import Literal

from modelapi_operator import names
from modelapi_operator.builders.common import Manifest, Owner, model_selector, object_meta, revision_selector

ServiceRole = Literal["main", "stable", "canary"]


def service_name(owner: Owner, role: ServiceRole) -> str:
    if role == "stable":
        return names.stable_service_name(owner.name)
    if role == "canary":
        return names.canary_service_name(owner.name)
    return owner.name


def build_service(owner: Owner, role: ServiceRole, revision: str) -> Manifest:
    """``main`` selects every revision of the model (so a rolling update or a replica-ratio canary
    never leaves clients without ready endpoints); ``stable`` and ``canary`` select ``revision`` only
    and are the HTTPRoute's weighted backends."""
    selector = model_selector(owner) if role == "main" else revision_selector(owner, revision)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(service_name(owner, role), owner, revision),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
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
