"""Whether the ``<name>`` Service can route to a revision's pods, from its EndpointSlices (pure).

A pod that passed its readiness probe is not yet reachable: the EndpointSlice controller adds it as a ready
endpoint a moment later, and only then do kube-proxy and gateways send it traffic. ``Ready=True`` waits for that.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

from modelapi_operator.builders.service import SERVICE_NAME_LABEL

__all__ = ["SERVICE_NAME_LABEL", "not_routable_message", "routable_pods"]

Manifest = Mapping[str, Any]


def routable_pods(slices: Iterable[Manifest], pod_names: Collection[str]) -> int:
    """How many of these pods the slices list as ready endpoints (a pod listed in several slices counts once)."""
    listed: set[str] = set()
    for endpoint_slice in slices:
        for endpoint in endpoint_slice.get("endpoints") or []:
            ref = endpoint.get("targetRef") or {}
            ready = (endpoint.get("conditions") or {}).get("ready")
            if ref.get("kind") == "Pod" and ref.get("name") in pod_names and ready is True:
                listed.add(str(ref["name"]))
    return len(listed)


def not_routable_message(url: str, revision: str, routable: int, desired: int) -> str:
    return (
        f"revision {revision}: its pods are ready, {routable}/{desired} listed as ready endpoints of the Service "
        f"behind {url} so far (traffic reaches a pod only once it is listed)"
    )
