"""The reconciler's own seams with a recording stand-in for the API client (the real API server is in tests/e2e)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from kube_fakes import RecordingKube

from modelapi_operator import kube
from modelapi_operator.api import ModelAPISpec
from modelapi_operator.builders import Owner, RuntimeImages, build_deployment, compute_revision
from modelapi_operator.reconcile import Observed, Reconciler
from modelapi_operator.revision_record import ARTIFACT_BYTES_ANNOTATION, RevisionRecord


def _body(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "serving.modelapi.io/v1alpha1",
        "kind": "ModelAPI",
        "metadata": {"name": "iris", "namespace": "ml", "uid": "uid-1", "generation": 2},
        "spec": spec,
    }


def _reconciler(client: RecordingKube) -> Reconciler:
    return Reconciler(client, RuntimeImages(cpu="cpu:1", gpu="gpu:1"), gateway_api_installed=False)


async def test_an_invalid_spec_touches_no_child_and_reports_once() -> None:
    """What the CRD cannot stop (an object stored before a stricter CRD) is InvalidSpec: no writes, one Event."""
    client = RecordingKube()
    reconciler = _reconciler(client)
    body = _body({"model": {"uri": "s3://models/iris/1/model.onnx"}, "autoscaling": {"scaleToZeroAfterSeconds": 60}})
    status = await reconciler.reconcile(body, Observed())
    ready = next(c for c in status.conditions if c.type == "Ready")
    assert (ready.status, ready.reason) == ("False", "InvalidSpec")
    assert "spec.autoscaling.scaleToZeroAfterSeconds: scaleToZeroAfterSeconds needs minReplicas: 0" in ready.message
    assert {name for name, _ in client.calls} == {"status", "event"}
    assert [args[1] for name, args in client.calls if name == "event" and args[0] == "Warning"] == ["InvalidSpec"]
    client.calls.clear()
    await reconciler.reconcile(body, Observed())
    assert client.calls == [], "the same invalid spec again: no write, no Event (no retry storm)"


async def test_a_new_modelapi_creates_every_child_and_a_missing_account_is_named() -> None:
    client = RecordingKube()
    spec = {"model": {"uri": "s3://models/iris/1/model.onnx"}, "storage": {"serviceAccountName": "reader"}}
    status = await _reconciler(client).reconcile(_body(spec), Observed())
    applied = {args for name, args in client.calls if name == "apply_new"}
    assert applied == {
        "Service/iris",
        "Service/iris-stable",
        "HorizontalPodAutoscaler/iris",
        "PodDisruptionBudget/iris",
    }
    (created,) = [args for name, args in client.calls if name == "create"]
    assert created.startswith("iris-")
    assert not [args for name, args in client.calls if name == "apply"], "the create left nothing to apply"
    degraded = next(c for c in status.conditions if c.type == "Degraded")
    assert (degraded.status, degraded.reason) == ("True", "ServiceAccountNotFound")
    assert "spec.storage.serviceAccountName" in degraded.message
    assert status.observed_generation == 2


async def test_a_new_revision_of_a_measured_artifact_is_sized_from_the_recorded_cold_start() -> None:
    """The seam from status.coldStart (what the runtime reported through Prometheus) to the new revision's pods."""
    client = RecordingKube()
    reconciler = _reconciler(client)
    model = {"uri": "s3://models/iris/1/model.onnx", "sha256": "b" * 64}
    serving_spec = {"model": model, "storage": {"cacheSize": "10Gi"}}
    owner, images = Owner(name="iris", namespace="ml", uid="uid-1"), RuntimeImages(cpu="cpu:1", gpu="gpu:1")
    revision = compute_revision(ModelAPISpec.model_validate(serving_spec), owner, images)
    serving = build_deployment(ModelAPISpec.model_validate(serving_spec), owner, revision, images)
    serving["metadata"]["annotations"] |= RevisionRecord(role="stable").encode()
    serving["metadata"]["creationTimestamp"] = "2026-11-29T12:00:00Z"
    serving["spec"] = {"replicas": 1, **serving["spec"]}
    serving["status"] = {"readyReplicas": 1}
    body = _body({**serving_spec, "runtime": {"threads": 2}})  # a runtime change: a new revision, same artifact
    body["status"] = {"coldStart": {"revision": revision, "artifactBytes": 300 * 1024 * 1024}}
    await reconciler.reconcile(body, Observed(deployments=[serving]))
    (created,) = client.created_manifests
    assert created["metadata"]["annotations"][ARTIFACT_BYTES_ANNOTATION] == str(300 * 1024 * 1024)
    pod = created["spec"]["template"]["spec"]
    assert next(v for v in pod["volumes"] if v["name"] == "models")["emptyDir"]["sizeLimit"] == "364Mi"
    assert pod["containers"][0]["resources"]["requests"]["ephemeral-storage"] == "876Mi"


async def test_a_new_modelapis_children_cost_one_request_each_all_at_once() -> None:
    """The children the caches do not know are applied only where nobody holds their names (``apply_new``: one
    request, no read first), all at once and beside the Deployment's create, so a burst of new ModelAPIs waits one
    round trip for them, not one per child; the Deployment's create leaves nothing to apply."""

    class SlowRequests(RecordingKube):
        def __init__(self) -> None:
            super().__init__()
            self.in_flight = self.most_in_flight = 0

        async def _slowly(self) -> None:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            await asyncio.sleep(0.01)
            self.in_flight -= 1

        async def create(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
            await self._slowly()
            return await super().create(manifest)

        async def apply_new(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
            await self._slowly()
            return await super().apply_new(manifest)

    client = SlowRequests()
    await _reconciler(client).reconcile(_body({"model": {"uri": "s3://models/iris/1/model.onnx"}}), Observed())
    writes = sorted(args for name, args in client.calls if name == "apply_new")
    assert writes == ["HorizontalPodAutoscaler/iris", "PodDisruptionBudget/iris", "Service/iris", "Service/iris-stable"]
    assert client.most_in_flight == 1 + len(writes)
    assert [name for name, _ in client.calls if name in ("get", "apply")] == []


async def test_a_child_whose_name_is_taken_by_our_own_object_is_applied() -> None:
    """The cache was behind (the child is ours, written by an earlier pass the watch has not shown yet): the name is
    read once, then the child is applied as usual."""
    spec = {"model": {"uri": "s3://models/iris/1/model.onnx"}}
    ours = {"uid": "uid-1", "kind": "ModelAPI", "name": "iris", "controller": True}

    class Behind(RecordingKube):
        def stored(self, kind: str, name: str) -> dict[str, Any] | None:
            if (kind, name) != ("Service", "iris"):
                return None
            return {"kind": kind, "metadata": {"name": name, "namespace": "ml", "ownerReferences": [ours]}}

        async def get(self, kind: kube.Kind, namespace: str | None, name: str) -> dict[str, Any] | None:
            await super().get(kind, namespace, name)
            return self.stored(kind.kind, name)

    client = Behind()
    status = await _reconciler(client).reconcile(_body(spec), Observed())
    assert ("get", "Service/iris") in client.calls
    assert [args for name, args in client.calls if name == "apply"] == ["Service/iris"]
    assert next(c for c in status.conditions if c.type == "Degraded").reason != "NameConflict"
