"""Stand-ins for the Kubernetes API client in the operator's unit tests (the real API server is in tests/e2e).

Each is a ``kube.KubeClient``: mypy --strict (``make types``) checks them against the protocol the real ``kube.Kube``
satisfies, so a test cannot drift from what the reconciler calls.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelapi_operator import kube


class RecordingKube:
    """Records every call the reconciler makes; answers like an empty cluster."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.created_manifests: list[Mapping[str, Any]] = []

    async def create(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        self.calls.append(("create", manifest["metadata"]["name"]))
        self.created_manifests.append(manifest)
        return dict(manifest)

    async def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        self.calls.append(("apply", f"{manifest['kind']}/{manifest['metadata']['name']}"))
        return dict(manifest)

    async def apply_new(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Like the API server: a 409 Conflict when an object of that name is stored."""
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        self.calls.append(("apply_new", f"{kind}/{name}"))
        if self.stored(kind, name) is not None:
            raise kube.KubeError(409, "Conflict", f"{kind} {name}: the object has been modified")
        return dict(manifest)

    def stored(self, kind: str, name: str) -> dict[str, Any] | None:
        """The object of that kind and name the API holds (none: an empty cluster)."""
        return None

    async def scale(self, kind: kube.Kind, namespace: str, name: str, replicas: int) -> None:
        self.calls.append(("scale", (name, replicas)))

    async def merge_patch(self, kind: kube.Kind, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        self.calls.append(("merge_patch", (kind.kind, name, patch)))

    async def delete(self, kind: kube.Kind, namespace: str | None, name: str, *, uid: str | None = None) -> None:
        self.calls.append(("delete", f"{kind.kind}/{name}"))

    async def get(self, kind: kube.Kind, namespace: str | None, name: str) -> dict[str, Any] | None:
        self.calls.append(("get", f"{kind.kind}/{name}"))
        return None

    async def list(
        self,
        kind: kube.Kind,
        namespace: str | None,
        labels: Mapping[str, str],
        *,
        fields: Mapping[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        return []

    async def patch_status(self, kind: kube.Kind, namespace: str, name: str, status: Mapping[str, Any]) -> str | None:
        self.calls.append(("status", dict(status)))
        return None

    async def post_event(
        self, involved: Mapping[str, Any], event_type: str, reason: str, message: str, now: str
    ) -> None:
        self.calls.append(("event", (event_type, reason, message)))


class RefusingKube:
    """Answers like an empty cluster, except that one kind's writes are refused with ``error`` (by default a 403, as
    RBAC would); keeps the statuses and Events it is sent."""

    def __init__(self, refused_kind: str | None, message: str = "", *, error: kube.KubeError | None = None) -> None:
        self.refused_kind = refused_kind
        self.error = error or kube.Forbidden(403, "Forbidden", message)
        self.statuses: list[dict[str, Any]] = []
        self.events: list[tuple[str, str, str]] = []

    def _check(self, kind: str) -> None:
        if kind == self.refused_kind:
            raise self.error

    async def create(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        self._check(manifest["kind"])
        return dict(manifest)

    async def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        self._check(manifest["kind"])
        return dict(manifest)

    async def apply_new(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        return await self.apply(manifest)

    async def scale(self, kind: kube.Kind, namespace: str, name: str, replicas: int) -> None:
        self._check(kind.kind)

    async def merge_patch(self, kind: kube.Kind, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        self._check(kind.kind)

    async def delete(self, kind: kube.Kind, namespace: str | None, name: str, *, uid: str | None = None) -> None:
        self._check(kind.kind)

    async def get(self, kind: kube.Kind, namespace: str | None, name: str) -> dict[str, Any] | None:
        return None

    async def list(
        self,
        kind: kube.Kind,
        namespace: str | None,
        labels: Mapping[str, str],
        *,
        fields: Mapping[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        return []

    async def patch_status(self, kind: kube.Kind, namespace: str, name: str, status: Mapping[str, Any]) -> str | None:
        self.statuses.append(dict(status))
        return None

    async def post_event(
        self, involved: Mapping[str, Any], event_type: str, reason: str, message: str, now: str
    ) -> None:
        self.events.append((event_type, reason, message))


def as_clients(recording: RecordingKube, refusing: RefusingKube) -> tuple[kube.KubeClient, kube.KubeClient]:
    """Where mypy checks that both fakes are ``KubeClient``s (an error here, not in every test, when one drifts)."""
    return recording, refusing
