"""Which model a request is for, and which of its pods may answer (pure).

kube-proxy does not tell the activator which ClusterIP was called, so the model is named by the request: the
``X-ModelAPI-Target: <namespace>/<name>`` header (the operator's HTTPRoute sets it), else the Host header
(``<name>.<namespace>[.svc[.<cluster domain>]]``, what status.url gives), else a bare ``<name>`` that only one
known ModelAPI has.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

TARGET_HEADER: Final = "X-ModelAPI-Target"
LABEL_NAME: Final = "serving.modelapi.io/name"
SERVICE_SUFFIXES: Final = ("-stable", "-canary")
DEFAULT_PORT: Final = 8080
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True)
class Target:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Endpoint:
    address: str
    port: int

    def url(self, path_qs: str) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}{path_qs}"


class Unplaced(Exception):
    """The request names no model the activator can find; the message says what would."""


def _model_name(service: str) -> str:
    for suffix in SERVICE_SUFFIXES:
        if service.endswith(suffix):
            return service[: -len(suffix)]
    return service


def from_header(value: str) -> Target:
    namespace, _, name = value.strip().partition("/")
    if not (_DNS_LABEL.match(namespace) and _DNS_LABEL.match(name)):
        raise Unplaced(f"{TARGET_HEADER} must be <namespace>/<name>, got {value!r}")
    return Target(namespace, name)


def from_host(host: str, cluster_domain: str) -> Target | str | None:
    """A Target from ``<name>.<namespace>...``; the bare name when the Host has one label; None for an address."""
    hostname = host.strip().lower()
    if hostname.startswith("["):  # an IPv6 literal
        return None
    hostname = hostname.rsplit(":", 1)[0] if hostname.count(":") == 1 else hostname
    hostname = hostname.rstrip(".")
    for suffix in (f".svc.{cluster_domain}", ".svc"):
        if hostname.endswith(suffix):
            hostname = hostname[: -len(suffix)]
            break
    labels = hostname.split(".")
    if not all(_DNS_LABEL.match(label) for label in labels) or labels[-1].isdigit():
        return None
    if len(labels) == 1:
        return _model_name(labels[0])
    if len(labels) == 2:
        return Target(labels[1], _model_name(labels[0]))
    return None


def resolve(headers: Mapping[str, str], cluster_domain: str, known: Iterable[Target]) -> Target:
    """The model a request is for. ``known``: the ModelAPIs the activator knows (for a bare name)."""
    header = headers.get(TARGET_HEADER)
    if header:
        return from_header(header)
    found = from_host(headers.get("Host", ""), cluster_domain)
    if isinstance(found, Target):
        return found
    hint = (
        f"call the model's Service by <name>.<namespace> (as in the ModelAPI's status.url) or send "
        f"{TARGET_HEADER}: <namespace>/<name>"
    )
    if found is None:
        raise Unplaced(f"the Host header names no model: {hint}")
    matches = [target for target in known if target.name == found]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise Unplaced(f"no ModelAPI named {found!r}: {hint}")
    raise Unplaced(f"several ModelAPIs are named {found!r} ({', '.join(map(str, matches))}): {hint}")


def _ready(pod: Mapping[str, Any]) -> bool:
    if pod.get("metadata", {}).get("deletionTimestamp"):
        return False
    status = pod.get("status") or {}
    if status.get("phase") != "Running" or not status.get("podIP"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def _http_port(pod: Mapping[str, Any]) -> int:
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == "http" and port.get("containerPort"):
                return int(port["containerPort"])
    return DEFAULT_PORT


def ready_endpoints(pods: Iterable[Mapping[str, Any]]) -> list[Endpoint]:
    """The pods that may answer: Running, Ready, not being deleted; on their ``http`` port."""
    return sorted(
        (Endpoint(str(pod["status"]["podIP"]), _http_port(pod)) for pod in pods if _ready(pod)),
        key=lambda e: (e.address, e.port),
    )
