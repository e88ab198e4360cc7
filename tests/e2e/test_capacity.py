"""Capacity problems on the real API server, controller-manager and scheduler (kwok nodes: 16 CPUs, 64Gi each).

Each is reported with the cluster's own words and clears once the cause is fixed: Degraded returns to AsExpected
and an Event says so. The operator runs with a 3 s unschedulable grace (20 s by default) to keep the tests short.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from .conftest import Cluster, wait_until
from .processes import OperatorProcess
from .test_operator import _apply, _condition, _iris, _mapi, _wait_ready

GRACE_SECONDS = 3


@pytest.fixture(scope="module")
def operator(cluster: Cluster) -> Iterator[OperatorProcess]:
    process = OperatorProcess(
        cluster,
        {"MODELAPI_OPERATOR_RESYNC_SECONDS": "5", "MODELAPI_OPERATOR_UNSCHEDULABLE_GRACE_SECONDS": str(GRACE_SECONDS)},
    )
    process.start()
    yield process
    process.stop()


def _degraded(cluster: Cluster, namespace: str, reason: str, timeout: float = 60) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        body = _mapi(cluster, namespace, "iris")
        return body if _condition(body, "Degraded").get("reason") == reason else None

    result: dict[str, Any] = wait_until(found, timeout=timeout, interval=1, what=f"Degraded {reason}")
    return result


def _events(cluster: Cluster, namespace: str, reason: str) -> list[dict[str, Any]]:
    selector = f"involvedObject.kind=ModelAPI,involvedObject.name=iris,reason={reason}"
    items: list[dict[str, Any]] = cluster.get_json("events", "--field-selector", selector, namespace=namespace)["items"]
    return items


def _cleared(cluster: Cluster, namespace: str, timeout: float = 90) -> dict[str, Any]:
    """Ready again, Degraded back to AsExpected, and a Normal Event AsExpected on the ModelAPI."""
    body = _wait_ready(cluster, namespace, "iris", timeout=timeout)
    assert _condition(body, "Degraded")["status"] == "False"
    assert _condition(body, "Degraded")["reason"] == "AsExpected"
    events = wait_until(lambda: _events(cluster, namespace, "AsExpected"), timeout=30, what="Event AsExpected")
    assert events[0]["type"] == "Normal"
    assert "Degraded=False" in events[0]["message"]
    return body


def test_node_selector_matching_no_node_is_unschedulable_then_clears(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    _apply(cluster, namespace, _iris(runtime={"nodeSelector": {"pool": "none"}}))
    body = _degraded(cluster, namespace, "Unschedulable")
    degraded = _condition(body, "Degraded")
    assert degraded["status"] == "True"
    assert "didn't match Pod's node affinity/selector" in degraded["message"]
    assert "spec.runtime.nodeSelector" in degraded["message"]
    assert _condition(body, "Ready")["status"] == "False"
    assert body["status"]["lastFailure"]["reason"] == "Unschedulable"
    warnings = [e for e in _events(cluster, namespace, "Unschedulable") if e["type"] == "Warning"]
    assert len(warnings) == 1
    assert warnings[0]["message"].startswith("Degraded=True")

    _apply(cluster, namespace, _iris())  # the nodeSelector removed
    _cleared(cluster, namespace)
    operator.assert_alive()


def test_cpu_larger_than_any_node_is_unschedulable_naming_resources(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    _apply(cluster, namespace, _iris(runtime={"resources": {"cpu": "64", "memory": "512Mi"}}))
    degraded = _condition(_degraded(cluster, namespace, "Unschedulable"), "Degraded")
    assert "Insufficient cpu" in degraded["message"]
    assert "spec.runtime.resources.cpu" in degraded["message"]

    _apply(cluster, namespace, _iris())
    _cleared(cluster, namespace)


def test_a_model_volume_larger_than_any_node_disk_is_insufficient_storage(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    # The kwok nodes have 1Ti of ephemeral storage: a 2Ti model volume fits on none; the real scheduler says so.
    _apply(cluster, namespace, _iris(storage={"cacheSize": "2Ti", "maxArtifactSize": "1Gi"}))
    degraded = _condition(_degraded(cluster, namespace, "InsufficientStorage"), "Degraded")
    assert "Insufficient ephemeral-storage" in degraded["message"]
    assert "spec.storage.cacheSize" in degraded["message"]
    assert not [
        p for p in cluster.get_json("pods", namespace=namespace)["items"] if (p.get("status") or {}).get("reason")
    ], "pods wait unscheduled: none is evicted"

    _apply(cluster, namespace, _iris())
    _cleared(cluster, namespace)


def test_resource_quota_refusing_the_pods_is_quota_exceeded_then_clears(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "small"},
        "spec": {"hard": {"requests.cpu": "100m"}},
    }
    _apply(cluster, namespace, quota)
    _apply(cluster, namespace, _iris())
    degraded = _condition(_degraded(cluster, namespace, "QuotaExceeded"), "Degraded")
    assert degraded["status"] == "True"
    assert "exceeded quota: small" in degraded["message"]
    assert "spec.runtime.resources" in degraded["message"]

    _apply(cluster, namespace, {**quota, "spec": {"hard": {"requests.cpu": "4"}}})
    _cleared(cluster, namespace, timeout=180)  # the ReplicaSet retries with its own back-off


def test_ready_only_once_the_service_lists_the_pods_as_ready_endpoints(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    """On kwok too the EndpointSlice controller lists pods from their readiness; when Ready turns True every pod of
    the serving revision is already a ready endpoint of the `iris` Service (the reverse order is refused in the
    unit tests: tests/unit/operator/test_operator_routing.py)."""
    _apply(cluster, namespace, _iris(autoscaling={"minReplicas": 2}))
    body = _wait_ready(cluster, namespace, "iris")
    slices = cluster.get_json("endpointslices", "-l", "kubernetes.io/service-name=iris", namespace=namespace)[
        "items"
    ]  # read right after Ready: nothing listed later counts
    listed = {
        endpoint["targetRef"]["name"]
        for item in slices
        for endpoint in item.get("endpoints") or []
        if (endpoint.get("conditions") or {}).get("ready") is True
    }
    revision = body["status"]["revisions"][0]["name"]
    pods = cluster.get_json("pods", "-l", "serving.modelapi.io/name=iris", namespace=namespace)["items"]
    serving = {pod["metadata"]["name"] for pod in pods if pod["metadata"]["name"].startswith(revision)}
    assert len(serving) == 2
    assert serving <= listed


def test_an_autoscaler_scale_up_is_waiting_for_capacity_not_degraded(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    """No cluster autoscaler runs here: the test posts the Event one posts on a pod it adds a node for (reason
    TriggeredScaleUp, source cluster-autoscaler), which is all the operator reads of it."""
    _apply(cluster, namespace, _iris(runtime={"resources": {"cpu": "64", "memory": "512Mi"}}))
    _degraded(cluster, namespace, "Unschedulable")
    (pod,) = cluster.get_json("pods", "-l", "serving.modelapi.io/name=iris", namespace=namespace)["items"]
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{pod['metadata']['name']}.scaleup"},
        "involvedObject": {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": pod["metadata"]["name"],
            "namespace": namespace,
            "uid": pod["metadata"]["uid"],
        },
        "reason": "TriggeredScaleUp",
        "message": "pod triggered scale-up: [{pool-64cpu 0->1 (max: 3)}]",
        "type": "Normal",
        "source": {"component": "cluster-autoscaler"},
    }
    _apply(cluster, namespace, event)

    def waiting() -> dict[str, Any] | None:
        body = _mapi(cluster, namespace, "iris")
        return body if _condition(body, "Progressing").get("reason") == "WaitingForCapacity" else None

    body = wait_until(waiting, timeout=60, interval=1, what="Progressing WaitingForCapacity")
    assert _condition(body, "Progressing")["status"] == "True"
    assert "cluster autoscaler is adding nodes" in _condition(body, "Progressing")["message"]
    assert (_condition(body, "Degraded")["status"], _condition(body, "Degraded")["reason"]) == ("False", "AsExpected")
    assert _condition(body, "Ready")["reason"] == "WaitingForCapacity"


def _table_row(header: str, row: str) -> dict[str, str]:
    """A row of kubectl's table by the header's column starts (an empty cell, e.g. no canary, stays empty)."""
    starts = [match.start() for match in re.finditer(r"\S+", header)]
    bounds = zip(starts, [*starts[1:], None], strict=True)
    return {header[start:end].strip(): row[start:end].strip() for start, end in bounds}


def test_kubectl_get_wide_shows_the_model_uri_redacted_and_the_strategy(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    """`kubectl get mapi -o wide` adds MODEL (the stable revision's URI as status has it: a presigned URL's query
    redacted), STRATEGY (the API server's default RollingUpdate when the spec leaves it out) and LASTKNOWNGOOD (none
    before a first rollout); the plain output keeps its columns."""
    token = "f00dfeedc0ffee"
    uri = f"https://models.example/iris/model.onnx?X-Amz-Signature={token}&X-Amz-Expires=3600"
    _apply(cluster, namespace, _iris(model={"uri": uri}))
    _wait_ready(cluster, namespace, "iris")
    wide = cluster.kubectl("get", "mapi", "iris", "-o", "wide", namespace=namespace).stdout
    header, row = wide.splitlines()[:2]
    values = _table_row(header, row)
    assert list(values)[-3:] == ["MODEL", "STRATEGY", "LASTKNOWNGOOD"], wide
    assert values["LASTKNOWNGOOD"] in ("", "<none>"), wide
    assert values["MODEL"] == "https://models.example/iris/model.onnx?<redacted>", wide
    assert values["STRATEGY"] == "RollingUpdate", wide
    assert (values["READY"], values["REASON"]) == ("True", "Serving"), wide
    assert token not in wide
    plain = cluster.kubectl("get", "mapi", "iris", namespace=namespace).stdout
    assert "MODEL" not in plain, plain
    assert "STRATEGY" not in plain, plain
    assert "LASTKNOWNGOOD" not in plain, plain
