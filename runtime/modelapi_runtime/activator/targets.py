"""Which model a request is for, and which of its pods may answer (pure).

kube-proxy does not tell the activator which ClusterIP was called, so the model is named by the request: the
``X-ModelAPI-Target: <namespace>/<name>`` header (the operator's HTTPRoute sets it), else the Host header
(``<name>.<namespace>[.svc[.<cluster domain>]]``, what status.url gives), else the ClusterIP of one of the model's
Services, else a bare ``<name>`` that only one known ModelAPI has.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

TARGET_HEADER: Final = "X-ModelAPI-Target"
LABEL_NAME: Final = "serving.modelapi.io/name"
SERVICE_SUFFIXES: Final = ("-stable", "-canary")
DEFAULT_PORT: Final = 8080
READY_PATH: Final = "/v2/health/ready"  # the runtime's readiness: 200 once the model is loaded and warmed up
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


@dataclass(frozen=True)
class Directory:
    """What the activator knows of the cluster's models: every ModelAPI, and the ClusterIPs of their Services."""

    targets: tuple[Target, ...] = ()
    by_address: Mapping[str, Target] = field(default_factory=dict)


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


def _address(host: str) -> str:
    """The IP literal of a Host header, without its port or brackets."""
    host = host.strip()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def services_directory(services: Iterable[Mapping[str, Any]]) -> dict[str, Target]:
    """ClusterIP -> model, from the model Services (labelled with the model's name)."""
    found: dict[str, Target] = {}
    for service in services:
        meta = service.get("metadata") or {}
        name = (meta.get("labels") or {}).get(LABEL_NAME)
        spec = service.get("spec") or {}
        if not name or not meta.get("namespace"):
            continue
        for address in [spec.get("clusterIP"), *(spec.get("clusterIPs") or [])]:
            if address and address != "None":
                found[str(address)] = Target(str(meta["namespace"]), str(name))
    return found


def resolve(headers: Mapping[str, str], cluster_domain: str, known: Directory) -> Target:
    """The model a request is for, from its headers and what the activator knows of the cluster."""
    header = headers.get(TARGET_HEADER)
    if header:
        return from_header(header)
    host = headers.get("Host", "")
    found = from_host(host, cluster_domain)
    if isinstance(found, Target):
        return found
    if found is None and _address(host) in known.by_address:
        return known.by_address[_address(host)]
    hint = (
        f"call the model's Service by <name>.<namespace> (as in the ModelAPI's status.url) or send "
        f"{TARGET_HEADER}: <namespace>/<name>"
    )
    if found is None:
        raise Unplaced(f"the Host header names no model: {hint}")
    matches = [target for target in known.targets if target.name == found]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise Unplaced(f"no ModelAPI named {found!r}: {hint}")
    raise Unplaced(f"several ModelAPIs are named {found!r} ({', '.join(map(str, matches))}): {hint}")


def _running(pod: Mapping[str, Any]) -> bool:
    if pod.get("metadata", {}).get("deletionTimestamp"):
        return False
    status = pod.get("status") or {}
    return status.get("phase") == "Running" and bool(status.get("podIP"))


def _ready(pod: Mapping[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return _running(pod) and any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _starting(pod: Mapping[str, Any]) -> bool:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    running = bool(statuses) and all("running" in (s.get("state") or {}) for s in statuses)
    return running and _running(pod) and not _ready(pod)


def _http_port(pod: Mapping[str, Any]) -> int:
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == "http" and port.get("containerPort"):
                return int(port["containerPort"])
    return DEFAULT_PORT


def _endpoints(pods: Iterable[Mapping[str, Any]], keep: Callable[[Mapping[str, Any]], bool]) -> list[Endpoint]:
    return sorted(
        (Endpoint(str(pod["status"]["podIP"]), _http_port(pod)) for pod in pods if keep(pod)),
        key=lambda e: (e.address, e.port),
    )


def ready_endpoints(pods: Iterable[Mapping[str, Any]]) -> list[Endpoint]:
    """The pods that may answer: Running, Ready, not being deleted; on their ``http`` port."""
    return _endpoints(pods, _ready)


def starting_endpoints(pods: Iterable[Mapping[str, Any]]) -> list[Endpoint]:
    """The pods whose containers run but that are not Ready yet (nor being deleted): the activator asks their
    runtime itself (``READY_PATH``) rather than wait up to a probe period for the kubelet to."""
    return _endpoints(pods, _starting)
