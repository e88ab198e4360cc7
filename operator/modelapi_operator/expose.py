"""spec.expose: whether this ModelAPI may hold its host and paths, its external URL, and its condition (pure).

The condition ``Exposed`` (present only with spec.expose) says whether requests reach the model through the Gateway:
True once the Gateway accepted the route; False with a reason naming what is missing or who holds the address. The
model keeps serving inside the cluster in every case (Ready is about that).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from modelapi_operator import names
from modelapi_operator.api import ExposeSpec
from modelapi_operator.builders import CLAIM_ANNOTATION, Owner, expose_claim, expose_route_name, gateway_of
from modelapi_operator.reasons import (
    EXPOSED,
    GATEWAY_API_NOT_INSTALLED,
    GATEWAY_NOT_FOUND,
    HOST_PATH_TAKEN,
    LISTENER_NOT_FOUND,
    ROUTE_NOT_ACCEPTED,
    ROUTE_PENDING,
)

# Exposed=False reasons that need a human (a Warning Event); RoutePending is the gateway catching up
EXPOSE_PROBLEMS: Final = frozenset(
    {GATEWAY_NOT_FOUND, LISTENER_NOT_FOUND, HOST_PATH_TAKEN, ROUTE_NOT_ACCEPTED, GATEWAY_API_NOT_INSTALLED}
)

Manifest = Mapping[str, Any]
DEFAULT_PORTS: Final = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Exposure:
    """What the reconcile observed for spec.expose: the Gateway (None: not found), the route this ModelAPI owns
    (None: not yet), and who else holds the same claim."""

    expose: ExposeSpec
    owner: Owner
    gateway_api_installed: bool
    gateway: Manifest | None
    route: Manifest | None
    holder: str | None  # "<namespace>/<name>" of the ModelAPI whose route holds the same host and paths


def claim_holder(expose: ExposeSpec, owner: Owner, routes: Iterable[Manifest]) -> str | None:
    """The ModelAPI (``namespace/name``) that holds this claim before us, or None (then we may hold it).

    A route with the same claim that another ModelAPI owns wins when ours does not exist yet, or when it is older
    than ours (both created at once: the older keeps it, the newer one is withdrawn)."""
    claim = expose_claim(expose, owner)
    ours = next((r for r in routes if _owned_by(r, owner.uid) and _claim(r) == claim), None)
    holders = sorted(
        (r for r in routes if _claim(r) == claim and not _owned_by(r, owner.uid)),
        key=lambda r: (str(r["metadata"].get("creationTimestamp", "")), r["metadata"].get("namespace", "")),
    )
    for route in holders:
        if ours is None or _older(route, ours):
            meta = route["metadata"]
            return f"{meta.get('namespace', '')}/{(meta.get('labels') or {}).get(names.LABEL_NAME, meta['name'])}"
    return None


def _claim(route: Manifest) -> str | None:
    value = ((route.get("metadata") or {}).get("annotations") or {}).get(CLAIM_ANNOTATION)
    return str(value) if value is not None else None


def _owned_by(route: Manifest, uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in (route.get("metadata") or {}).get("ownerReferences") or [])


def _older(route: Manifest, other: Manifest) -> bool:
    def key(r: Manifest) -> tuple[str, str]:
        return str(r["metadata"].get("creationTimestamp", "")), str(r["metadata"].get("uid", ""))

    return key(route) < key(other)


def _listeners(expose: ExposeSpec, gateway: Manifest) -> list[Mapping[str, Any]]:
    listeners = (gateway.get("spec") or {}).get("listeners") or []
    if expose.gateway.section_name:
        return [item for item in listeners if item.get("name") == expose.gateway.section_name]
    return list(listeners)


def external_url(expose: ExposeSpec, gateway: Manifest) -> str:
    """``scheme://host[:port][prefix]``: HTTPS when the route's listeners are HTTPS only (the listener named by
    sectionName, or all of them), else HTTP; the port when it is not the scheme's default."""
    listeners = _listeners(expose, gateway)
    tls = [item for item in listeners if item.get("protocol") == "HTTPS"]
    chosen = tls if tls and len(tls) == len(listeners) else [i for i in listeners if i.get("protocol") != "HTTPS"]
    scheme = "https" if tls and len(tls) == len(listeners) else "http"
    port = int(chosen[0].get("port", DEFAULT_PORTS[scheme])) if chosen else DEFAULT_PORTS[scheme]
    authority = expose.hostname if port == DEFAULT_PORTS[scheme] else f"{expose.hostname}:{port}"
    return f"{scheme}://{authority}{expose.path_prefix or ''}"


def _accepted(route: Manifest, gateway: tuple[str, str]) -> Mapping[str, Any] | None:
    """The route's Accepted condition for this Gateway, as its controller wrote it (None: not yet)."""
    namespace, name = gateway
    for parent in (route.get("status") or {}).get("parents") or []:
        ref = parent.get("parentRef") or {}
        if ref.get("name") == name and ref.get("namespace", route["metadata"].get("namespace")) == namespace:
            return next((c for c in parent.get("conditions") or [] if c.get("type") == "Accepted"), None)
    return None


ConditionValue = tuple[Literal["True", "False"], str, str]


def exposed_condition(seen: Exposure, cluster_url: str) -> tuple[ConditionValue, str | None]:
    """The Exposed condition (status, reason, message) and the external URL (None while not exposed)."""
    expose, owner = seen.expose, seen.owner
    namespace, name = gateway_of(expose, owner)
    inside = f"; the model keeps serving inside the cluster at {cluster_url}"
    route = expose_route_name(owner.name)
    if not seen.gateway_api_installed:
        reason = "the Gateway API CRDs (gateway.networking.k8s.io) are not installed: install them and a Gateway"
        return ("False", GATEWAY_API_NOT_INSTALLED, reason + inside), None
    if seen.holder is not None:
        message = (
            f"host {expose.hostname}{expose.path_prefix or ''} paths /v1/models/{owner.name} and "
            f"/v2/models/{owner.name} on Gateway {namespace}/{name} are taken by ModelAPI {seen.holder} (its route "
            f"keeps them): change spec.expose.hostname or pathPrefix{inside}"
        )
        return ("False", HOST_PATH_TAKEN, message), None
    if seen.gateway is None:
        message = f"Gateway {namespace}/{name} not found: create it or fix spec.expose.gateway{inside}"
        return ("False", GATEWAY_NOT_FOUND, message), None
    if expose.gateway.section_name and not _listeners(expose, seen.gateway):
        message = (
            f"Gateway {namespace}/{name} has no listener {expose.gateway.section_name}: fix "
            f"spec.expose.gateway.sectionName{inside}"
        )
        return ("False", LISTENER_NOT_FOUND, message), None
    accepted = _accepted(seen.route, (namespace, name)) if seen.route is not None else None
    if accepted is None:
        message = f"HTTPRoute {route} is waiting for the controller of Gateway {namespace}/{name} to accept it{inside}"
        return ("False", ROUTE_PENDING, message), None
    if accepted.get("status") != "True":
        why = f"{accepted.get('reason', '')}: {accepted.get('message', '')}".strip(": ")
        message = f"Gateway {namespace}/{name} does not accept HTTPRoute {route} ({why}){inside}"
        return ("False", ROUTE_NOT_ACCEPTED, message), None
    url = external_url(expose, seen.gateway)
    message = f"{url}/v1/models/{owner.name} and /v2/models/{owner.name} through Gateway {namespace}/{name}"
    return ("True", EXPOSED, message), url
