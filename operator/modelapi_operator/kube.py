"""The one module that talks to the Kubernetes API (a small async client on aiohttp, which kopf already uses).

Everything is plain dicts: manifests from the builders go out as server-side apply patches with one
field manager; reads come back as dicts. Credentials come from kopf's login (login.py), so the
operator and its watches use the same identity.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp

from modelapi_operator import names
from modelapi_operator.redaction import redact_text

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Kind:
    """An API resource: where it lives and what it is called."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{quote(namespace)}"
        base += f"/{self.plural}"
        if name:
            base += f"/{quote(name)}"
        if subresource:
            base += f"/{subresource}"
        return base


DEPLOYMENT = Kind("apps", "v1", "deployments", "Deployment")
SERVICE = Kind("", "v1", "services", "Service")
HPA = Kind("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler")
PDB = Kind("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget")
HTTPROUTE = Kind("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute")
GATEWAY = Kind("gateway.networking.k8s.io", "v1", "gateways", "Gateway")
ENDPOINTS = Kind("", "v1", "endpoints", "Endpoints")
ENDPOINT_SLICE = Kind("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice")
POD = Kind("", "v1", "pods", "Pod")
CONFIG_MAP = Kind("", "v1", "configmaps", "ConfigMap")
EVENT = Kind("", "v1", "events", "Event")
SERVICE_ACCOUNT = Kind("", "v1", "serviceaccounts", "ServiceAccount")
MODELAPI = Kind(names.GROUP, names.VERSION, names.PLURAL, names.KIND)
CRD = Kind("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", namespaced=False)
KOPF_PEERING = Kind("kopf.dev", "v1", "kopfpeerings", "KopfPeering")
CLUSTER_KOPF_PEERING = Kind("kopf.dev", "v1", "clusterkopfpeerings", "ClusterKopfPeering", namespaced=False)

CHILD_KINDS: tuple[Kind, ...] = (DEPLOYMENT, SERVICE, HPA, PDB, HTTPROUTE, ENDPOINT_SLICE, CONFIG_MAP)
_BY_API_KIND = {(kind.api_version, kind.kind): kind for kind in (*CHILD_KINDS, POD, EVENT, MODELAPI)}


def kind_of(manifest: Mapping[str, Any]) -> Kind:
    return _BY_API_KIND[(manifest["apiVersion"], manifest["kind"])]


class KubeError(Exception):
    """An API request failed; ``status`` is the HTTP status (0 for a connection failure); ``retry_after`` the
    seconds the server asked to wait (429 and 503 carry it), if it did."""

    def __init__(self, status: int, reason: str, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after = retry_after

    @property
    def retriable(self) -> bool:
        return self.status in {0, 429} or self.status >= 500

    def retry_delay(self, *, soon: float, later: float) -> float:
        """When to try again: what the server asked for (at least 1 s, at most ``later``), else ``soon`` for an
        error that passes by itself (overload, outage) and ``later`` for one that needs someone to act."""
        if self.retry_after is not None:
            return min(max(self.retry_after, 1.0), later)
        return soon if self.retriable else later


class NotFound(KubeError):
    pass


class Forbidden(KubeError):
    pass


@dataclass(frozen=True)
class Credentials:
    """Where the API server is and how to authenticate (from kopf's login)."""

    server: str
    ca_path: str | None = None
    ca_data: str | None = None
    insecure: bool = False
    token: str | None = None
    scheme: str = "Bearer"
    certificate_path: str | None = None
    private_key_path: str | None = None

    def ssl_context(self) -> ssl.SSLContext | bool:
        if not self.server.startswith("https"):
            return False
        context = ssl.create_default_context(cafile=self.ca_path, cadata=self.ca_data)
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.certificate_path:
            context.load_cert_chain(self.certificate_path, self.private_key_path)
        return context

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"{self.scheme} {self.token}"} if self.token else {}


class KubeClient(Protocol):
    """What the reconciler asks of the Kubernetes API: ``Kube`` below, and the unit tests' stand-ins (tests/unit)."""

    async def apply(self, manifest: Manifest) -> Manifest: ...

    async def apply_new(self, manifest: Manifest) -> Manifest: ...

    async def create(self, manifest: Manifest) -> Manifest: ...

    async def get(self, kind: Kind, namespace: str | None, name: str) -> Manifest | None: ...

    async def list(
        self,
        kind: Kind,
        namespace: str | None,
        labels: Mapping[str, str],
        *,
        fields: Mapping[str, str] | None = None,
    ) -> list[Manifest]: ...

    async def delete(self, kind: Kind, namespace: str | None, name: str, *, uid: str | None = None) -> None: ...

    async def scale(self, kind: Kind, namespace: str, name: str, replicas: int) -> None: ...

    async def merge_patch(self, kind: Kind, namespace: str, name: str, patch: Mapping[str, Any]) -> None: ...

    async def patch_status(self, kind: Kind, namespace: str, name: str, status: Mapping[str, Any]) -> str | None:
        """Merge-patches the status; the object's resourceVersion after the write (None: not in the answer)."""
        ...

    async def post_event(
        self, involved: Mapping[str, Any], event_type: str, reason: str, message: str, now: str
    ) -> None: ...


@dataclass(frozen=True)
class RawResponse:
    status: int
    content_type: str
    body: bytes


NOT_LOGGED_IN = "not logged in to the Kubernetes API yet"
NO_OBJECT_VERSION = "1"  # a resourceVersion no stored object has (Kube.apply_new)


class Kube:
    """An async Kubernetes API client for dict manifests (a ``KubeClient``). It may be created before kopf's login
    (``credentials=None``): a request before ``update_credentials`` fails as a retriable ``KubeError``."""

    def __init__(self, credentials: Credentials | None, *, timeout_seconds: float = 30) -> None:
        self._credentials = credentials
        # Per socket, not per request: the wait for a free pooled connection must not count against the
        # timeout, or a burst of reconciles turns into timeouts and then a retry storm.
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None
        self._retired: list[aiohttp.ClientSession] = []

    def update_credentials(self, credentials: Credentials) -> None:
        """After a re-login (a rotated token): new requests use the new identity; the old session is closed
        on the next request, from the event loop (kopf may call the login handler from a thread)."""
        if credentials != self._credentials:
            self._credentials = credentials
            if self._session is not None:
                self._retired.append(self._session)
                self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._credentials is None:
            raise KubeError(0, "Unavailable", NOT_LOGGED_IN)
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self._credentials.ssl_context(), limit=32)
            self._session = aiohttp.ClientSession(
                base_url=self._credentials.server.rstrip("/"),
                connector=connector,
                timeout=self._timeout,
                headers=self._credentials.headers(),
            )
        return self._session

    async def close(self) -> None:
        while self._retired:
            await self._retired.pop().close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Manifest:
        while self._retired:
            await self._retired.pop().close()
        # UTF-8, not \u escapes: a character outside the BMP would become a surrogate pair, which the API server's
        # YAML decoder (server-side apply bodies are YAML) refuses ("invalid Unicode character escape code").
        data = None if body is None else json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        try:
            async with self._client().request(method, path, params=params, data=data, headers=headers) as response:
                text = await response.text()
                if response.status >= 400:
                    raise _error(response.status, text, response.headers.get("Retry-After"))
                return json.loads(text) if text else {}
        except (aiohttp.ClientError, TimeoutError) as error:
            raise KubeError(0, "Unavailable", f"{method} {path}: {type(error).__name__}: {error}") from error

    async def request_raw(
        self, method: str, path: str, *, body: bytes | None = None, content_type: str = "application/json"
    ) -> RawResponse:
        """Any status and body as they came (the API server's service proxy answers with the model's own)."""
        headers = {"Content-Type": content_type, "Accept": "application/json, */*"}
        try:
            async with self._client().request(method, path, data=body, headers=headers) as response:
                return RawResponse(response.status, response.headers.get("Content-Type", ""), await response.read())
        except (aiohttp.ClientError, TimeoutError) as error:
            raise KubeError(0, "Unavailable", f"{method} {path}: {type(error).__name__}: {error}") from error

    async def stream_lines(self, path: str, params: Mapping[str, str]) -> AsyncIterator[str]:
        """The lines of a streamed text answer (a pod's log with follow=true), with no read timeout."""
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=None)
        try:
            async with self._client().get(path, params=params, timeout=timeout) as response:
                if response.status >= 400:
                    raise _error(response.status, await response.text(), response.headers.get("Retry-After"))
                pending = b""
                async for chunk in response.content.iter_any():
                    *lines, pending = (pending + chunk).split(b"\n")
                    for line in lines:
                        yield line.decode("utf-8", errors="replace").rstrip("\r")
                if pending:
                    yield pending.decode("utf-8", errors="replace")
        except (aiohttp.ClientError, TimeoutError) as error:
            raise KubeError(0, "Unavailable", f"GET {path}: {type(error).__name__}: {error}") from error

    # -- verbs ----------------------------------------------------------------------------------
    async def apply(self, manifest: Manifest) -> Manifest:
        """Server-side apply with the operator's field manager (force: the operator owns its children)."""
        kind = kind_of(manifest)
        meta = manifest["metadata"]
        return await self.request(
            "PATCH",
            kind.path(meta.get("namespace"), meta["name"]),
            params={"fieldManager": names.FIELD_MANAGER, "force": "true"},
            body=manifest,
            content_type="application/apply-patch+yaml",
        )

    async def apply_new(self, manifest: Manifest) -> Manifest:
        """Server-side apply that only creates: an object of that name already there (anyone's) fails it with a 409
        Conflict and is left untouched. The precondition is a resourceVersion no stored object has (resource
        versions are etcd revisions, and etcd's first write is revision 2); on a create the API server ignores it.
        One request where a read of the name and then an apply took two, and the fields are the operator's as an
        apply's (a later apply that leaves one out removes it), which a POST's would not be."""
        meta = {**manifest["metadata"], "resourceVersion": NO_OBJECT_VERSION}
        return await self.apply({**manifest, "metadata": meta})

    async def create(self, manifest: Manifest) -> Manifest:
        kind = kind_of(manifest)
        return await self.request(
            "POST",
            kind.path(manifest["metadata"].get("namespace")),
            params={"fieldManager": names.FIELD_MANAGER},
            body=manifest,
        )

    async def get(self, kind: Kind, namespace: str | None, name: str) -> Manifest | None:
        try:
            return await self.request("GET", kind.path(namespace, name))
        except NotFound:
            return None

    async def list(
        self,
        kind: Kind,
        namespace: str | None,
        labels: Mapping[str, str],
        *,
        fields: Mapping[str, str] | None = None,
    ) -> list[Manifest]:
        selector = ",".join(f"{key}={value}" for key, value in labels.items())
        items: list[Manifest] = []
        params = {"labelSelector": selector, "limit": "500"}
        if fields:
            params["fieldSelector"] = ",".join(f"{key}={value}" for key, value in fields.items())
        while True:
            page = await self.request("GET", kind.path(namespace), params=params)
            items += page.get("items", [])
            token = page.get("metadata", {}).get("continue")
            if not token:
                return items
            params = {**params, "continue": token}

    async def delete(self, kind: Kind, namespace: str | None, name: str, *, uid: str | None = None) -> None:
        """Delete (background propagation); a precondition on ``uid`` never deletes a newer namesake."""
        body: dict[str, Any] = {"propagationPolicy": "Background"}
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            await self.request("DELETE", kind.path(namespace, name), body=body)
        except NotFound:
            return

    async def scale(self, kind: Kind, namespace: str, name: str, replicas: int) -> None:
        """Set replicas through the scale subresource, so the operator's apply never owns ``replicas``
        (an autoscaler can take them over without server-side apply resetting them)."""
        await self.request(
            "PATCH",
            kind.path(namespace, name, "scale"),
            params={"fieldManager": f"{names.FIELD_MANAGER}-scale"},
            body={"spec": {"replicas": replicas}},
            content_type="application/merge-patch+json",
        )

    async def merge_patch(self, kind: Kind, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        await self.request(
            "PATCH",
            kind.path(namespace, name),
            params={"fieldManager": names.FIELD_MANAGER},
            body=patch,
            content_type="application/merge-patch+json",
        )

    async def patch_status(self, kind: Kind, namespace: str, name: str, status: Mapping[str, Any]) -> str | None:
        written = await self.request(
            "PATCH",
            kind.path(namespace, name, "status"),
            params={"fieldManager": names.FIELD_MANAGER},
            body={"status": status},
            content_type="application/merge-patch+json",
        )
        version = (written.get("metadata") or {}).get("resourceVersion") if isinstance(written, Mapping) else None
        return str(version) if version else None

    async def post_event(
        self, involved: Mapping[str, Any], event_type: str, reason: str, message: str, now: str
    ) -> None:
        meta = involved["metadata"]
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": involved["apiVersion"],
                "kind": involved["kind"],
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "type": event_type,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": names.FIELD_MANAGER},
            "reportingComponent": names.FIELD_MANAGER,
            "reportingInstance": names.FIELD_MANAGER,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        await self.request("POST", EVENT.path(meta["namespace"]), body=event)


def _error(status: int, text: str, retry_after_header: str | None = None) -> KubeError:
    details: Any = None
    try:
        payload = json.loads(text)
        reason, message = str(payload.get("reason", "")), str(payload.get("message", text))
        message = redact_text(message)  # the API server may quote a field's value (an artifact URI) back
        details = payload.get("details")
    except (ValueError, AttributeError):
        reason, message = "", redact_text(text)
    if status == 404:
        return NotFound(status, reason or "NotFound", message)
    if status == 403:
        return Forbidden(status, reason or "Forbidden", message)
    return KubeError(status, reason or "Error", message, retry_after=_retry_after(retry_after_header, details))


def _retry_after(header: str | None, details: Any) -> float | None:
    """Seconds from the Retry-After header (kube-apiserver sends whole seconds), else from the Status's
    ``details.retryAfterSeconds``; None when neither is a number (an HTTP date is not used by kube-apiserver)."""
    candidates: list[Any] = [header]
    if isinstance(details, Mapping):
        candidates.append(details.get("retryAfterSeconds"))
    for value in candidates:
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            continue
        if seconds >= 0:
            return seconds
    return None
