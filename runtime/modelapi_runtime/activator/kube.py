"""The three Kubernetes API calls the activator makes (aiohttp): list ModelAPIs, list a model's pods, and write
the demand annotation on a ModelAPI. Credentials: the pod's ServiceAccount, or a kubeconfig file."""

from __future__ import annotations

import base64
import json
import os
import ssl
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import aiohttp
import yaml

from modelapi_runtime.activator.targets import LABEL_NAME, Target

SERVICE_ACCOUNT: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount")
MODELAPIS: Final = "/apis/serving.modelapi.io/v1alpha1"
ACTIVATE_ANNOTATION: Final = "serving.modelapi.io/activate"
TOKEN_REREAD_SECONDS: Final = 60.0


class KubeError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Credentials:
    server: str
    ca_file: str | None = None
    token: str | None = None
    token_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    def ssl_context(self) -> ssl.SSLContext | bool:
        if not self.server.startswith("https"):
            return False
        context = ssl.create_default_context(cafile=self.ca_file)
        if self.cert_file:
            context.load_cert_chain(self.cert_file, self.key_file)
        return context


def in_cluster() -> Credentials:
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if not host:
        raise KubeError(0, "not in a pod (no KUBERNETES_SERVICE_HOST): set MODELAPI_ACTIVATOR_KUBECONFIG")
    host = f"[{host}]" if ":" in host else host
    return Credentials(
        server=f"https://{host}:{port}",
        ca_file=str(SERVICE_ACCOUNT / "ca.crt"),
        token_file=str(SERVICE_ACCOUNT / "token"),
    )


def _materialize(data: str | None, suffix: str) -> str | None:
    if not data:
        return None
    handle, path = tempfile.mkstemp(prefix="modelapi-activator-", suffix=suffix)
    with os.fdopen(handle, "wb") as file:
        file.write(base64.b64decode(data))
    return path


def from_kubeconfig(path: str) -> Credentials:
    """The current context of a kubeconfig: server, CA, and a token or a client certificate."""
    config = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    contexts = {c["name"]: c.get("context") or {} for c in config.get("contexts") or []}
    context = contexts.get(config.get("current-context", ""), next(iter(contexts.values()), {}))
    clusters = {c["name"]: c.get("cluster") or {} for c in config.get("clusters") or []}
    users = {u["name"]: u.get("user") or {} for u in config.get("users") or []}
    cluster = clusters.get(context.get("cluster", ""), next(iter(clusters.values()), {}))
    user = users.get(context.get("user", ""), next(iter(users.values()), {}))
    return Credentials(
        server=str(cluster.get("server", "")).rstrip("/"),
        ca_file=cluster.get("certificate-authority") or _materialize(cluster.get("certificate-authority-data"), ".crt"),
        token=user.get("token"),
        token_file=user.get("tokenFile"),
        cert_file=user.get("client-certificate") or _materialize(user.get("client-certificate-data"), ".crt"),
        key_file=user.get("client-key") or _materialize(user.get("client-key-data"), ".key"),
    )


class Kube:
    def __init__(self, credentials: Credentials, *, timeout_seconds: float = 10) -> None:
        self._credentials = credentials
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None
        self._token: tuple[float, str | None] = (-1e9, credentials.token)

    def _headers(self) -> dict[str, str]:
        """A bound ServiceAccount token rotates: the file is read again every minute."""
        read_at, token = self._token
        if self._credentials.token_file and time.monotonic() - read_at > TOKEN_REREAD_SECONDS:
            token = Path(self._credentials.token_file).read_text(encoding="utf-8").strip()
            self._token = (time.monotonic(), token)
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                base_url=self._credentials.server,
                connector=aiohttp.TCPConnector(ssl=self._credentials.ssl_context(), limit=16),
                timeout=self._timeout,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _request(
        self, method: str, path: str, *, params: Mapping[str, str] | None = None, body: Any = None
    ) -> dict[str, Any]:
        headers = {"Accept": "application/json", **self._headers()}
        data = None
        if body is not None:
            data = json.dumps(body)
            headers["Content-Type"] = "application/merge-patch+json"
        try:
            async with self._client().request(method, path, params=params, data=data, headers=headers) as response:
                text = await response.text()
                if response.status >= 400:
                    raise KubeError(response.status, text[:300])
                return json.loads(text) if text else {}
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            raise KubeError(0, f"{type(error).__name__}: {error}") from error

    async def modelapis(self) -> list[Target]:
        page = await self._request("GET", f"{MODELAPIS}/modelapis")
        return [
            Target(str(item["metadata"]["namespace"]), str(item["metadata"]["name"])) for item in page.get("items", [])
        ]

    async def model_services(self) -> list[dict[str, Any]]:
        """The Services the operator made for models (their ClusterIPs place a request sent to an address)."""
        page = await self._request(
            "GET", "/api/v1/services", params={"labelSelector": "app.kubernetes.io/managed-by=modelapi-operator"}
        )
        return list(page.get("items", []))

    async def pods(self, target: Target) -> list[dict[str, Any]]:
        page = await self._request(
            "GET",
            f"/api/v1/namespaces/{quote(target.namespace)}/pods",
            params={"labelSelector": f"{LABEL_NAME}={target.name}"},
        )
        return list(page.get("items", []))

    async def ask_for_replica(self, target: Target, now: str) -> None:
        """The demand: the operator wakes the model and clears the annotation. KubeError 404: no such ModelAPI."""
        await self._request(
            "PATCH",
            f"{MODELAPIS}/namespaces/{quote(target.namespace)}/modelapis/{quote(target.name)}",
            body={"metadata": {"annotations": {ACTIVATE_ANNOTATION: now}}},
        )
