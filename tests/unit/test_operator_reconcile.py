"""The reconciler's own seams with a recording stand-in for the API client (the real API server is in tests/e2e)."""

from __future__ import annotations

from typing import Any

from kube_fakes import RecordingKube

from modelapi_operator.builders import RuntimeImages
from modelapi_operator.reconcile import Observed, Reconciler


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
    applied = {args for name, args in client.calls if name == "apply"}
    assert {
        "Service/iris",
        "Service/iris-stable",
        "HorizontalPodAutoscaler/iris",
        "PodDisruptionBudget/iris",
    } <= applied
    assert [args for name, args in client.calls if name == "create"] == [
        next(a for a in applied if a.startswith("Deployment/")).split("/")[1]
    ]
    degraded = next(c for c in status.conditions if c.type == "Degraded")
    assert (degraded.status, degraded.reason) == ("True", "ServiceAccountNotFound")
    assert "spec.storage.serviceAccountName" in degraded.message
    assert status.observed_generation == 2
