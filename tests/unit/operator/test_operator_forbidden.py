"""A write the operator's RBAC refuses is named in the ModelAPI's status and an Event (issue 9, item 5); the e2e
side, with the chart's Role edited on the real API server, is tests/e2e/test_faults.py."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from kube_fakes import RefusingKube

from modelapi_operator import kube
from modelapi_operator.builders import RuntimeImages
from modelapi_operator.reasons import PERMISSION_DENIED
from modelapi_operator.reconcile import Observed, Reconciler

REFUSAL = (
    'poddisruptionbudgets.policy "iris" is forbidden: User "system:serviceaccount:ops:modelapi-operator" cannot '
    'patch resource "poddisruptionbudgets" in API group "policy" in the namespace "ml"'
)


BODY = {
    "apiVersion": "serving.modelapi.io/v1alpha1",
    "kind": "ModelAPI",
    "metadata": {"name": "iris", "namespace": "ml", "uid": "uid-1", "generation": 3},
    "spec": {"model": {"uri": "s3://models/iris/1/model.onnx"}},
}


def _reconciler(client: RefusingKube) -> Reconciler:
    return Reconciler(client, RuntimeImages(cpu="cpu:1", gpu="gpu:1"), gateway_api_installed=False)


def _condition(status: Mapping[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == kind)


async def test_a_refused_write_is_named_in_status_and_an_event_then_raised_for_a_retry() -> None:
    client = RefusingKube("PodDisruptionBudget", REFUSAL)
    reconciler = _reconciler(client)
    with pytest.raises(kube.Forbidden):
        await reconciler.reconcile(BODY, Observed())
    (status,) = client.statuses
    degraded = _condition(status, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", PERMISSION_DENIED)
    assert 'cannot patch resource "poddisruptionbudgets"' in degraded["message"]
    assert "ServiceAccount" in degraded["message"]
    assert _condition(status, "Ready")["status"] == "False"
    assert status["observedGeneration"] == 3
    assert status["lastFailure"]["reason"] == PERMISSION_DENIED
    warnings = [(reason, message) for kind, reason, message in client.events if kind == "Warning"]
    assert [reason for reason, _ in warnings] == [PERMISSION_DENIED]
    assert "poddisruptionbudgets" in warnings[0][1]

    # Refused again: no new status write, no second Event (no storm while the Role stays wrong).
    events_before = len(client.events)
    with pytest.raises(kube.Forbidden):
        await reconciler.reconcile(BODY, Observed())
    assert len(client.statuses) == 1
    assert len(client.events) == events_before

    # The permission is back: the same reconciler clears the failure.
    client.refused_kind = None
    status_after = (await reconciler.reconcile(BODY, Observed())).model_dump(mode="json", by_alias=True)
    assert _condition(status_after, "Degraded")["status"] == "False"


async def test_a_namespace_being_deleted_is_not_reported_as_a_permission_problem() -> None:
    message = (
        'deployments.apps "iris-1" is forbidden: unable to create new content in namespace ml because it is being '
        "terminated"
    )
    client = RefusingKube("Deployment", message)
    with pytest.raises(kube.Forbidden):
        await _reconciler(client).reconcile(BODY, Observed())
    assert client.statuses == []
    assert client.events == []


# ---- a kill -9 mid-promotion (issue 9, item 1) ------------------------------------------------------------------
class OrderKube(RefusingKube):
    """Records the order of writes."""

    def __init__(self) -> None:
        super().__init__(None)
        self.writes: list[str] = []

    async def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        self.writes.append(f"apply {manifest['kind']}/{manifest['metadata']['name']}")
        return dict(manifest)

    async def merge_patch(self, kind: kube.Kind, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        self.writes.append(f"patch {kind.kind}/{name} {patch}")

    async def scale(self, kind: kube.Kind, namespace: str, name: str, replicas: int) -> None:
        self.writes.append(f"scale {kind.kind}/{name} {replicas}")


def _deployment(spec: dict[str, Any], annotations: dict[str, str], created: str) -> dict[str, Any]:
    from modelapi_operator.api import ModelAPISpec
    from modelapi_operator.builders import Owner, build_deployment, compute_revision

    owner = Owner(name="iris", namespace="ml", uid="uid-1")
    images = RuntimeImages(cpu="cpu:1", gpu="gpu:1")
    parsed = ModelAPISpec.model_validate(spec)
    built = build_deployment(parsed, owner, compute_revision(parsed, owner, images), images)
    built["metadata"]["annotations"] = {**built["metadata"].get("annotations", {}), **annotations}
    built["metadata"]["creationTimestamp"] = created
    built["metadata"]["uid"] = f"uid-{created}"
    built["spec"]["replicas"] = 1
    built["status"] = {"replicas": 1, "readyReplicas": 1}
    return built


async def test_a_promotion_demotes_the_old_stable_before_it_applies_the_new_one() -> None:
    """Killed between the two writes, the operator must not leave two stable revisions: the next pass would take
    the newer as the only stable and delete the older instead of keeping it as last-known-good."""
    canary = {"steps": [{"weight": 50, "pauseSeconds": 0}]}
    v1 = {"model": {"uri": "s3://models/iris/1/model.onnx"}, "rollout": {"strategy": "Canary", "canary": canary}}
    v2 = {**v1, "model": {"uri": "s3://models/iris/2/model.onnx"}}
    old = _deployment(v1, {"serving.modelapi.io/role": "stable"}, "2026-01-01T00:00:00Z")
    new = _deployment(
        v2,
        {
            "serving.modelapi.io/role": "canary",
            "serving.modelapi.io/canary-step": "0",
            "serving.modelapi.io/canary-step-started": "2026-01-01T00:01:00Z",
            "serving.modelapi.io/canary-failed-checks": "0",
            "serving.modelapi.io/canary-step-check-passed": "false",
        },
        "2026-01-01T00:01:00Z",
    )
    client = OrderKube()
    body = {**BODY, "spec": v2}
    await _reconciler(client).reconcile(body, Observed(deployments=[old, new]))
    old_name, new_name = old["metadata"]["name"], new["metadata"]["name"]
    demote = next(i for i, w in enumerate(client.writes) if w.startswith(f"patch Deployment/{old_name}"))
    promote = client.writes.index(f"apply Deployment/{new_name}")
    assert "lastKnownGood" in client.writes[demote]
    assert demote < promote, client.writes
