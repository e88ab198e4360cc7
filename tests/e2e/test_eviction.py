"""An eviction on the real API server: the ModelAPI says Evicted with the kubelet's message, then clears.

A kubelet evicts a pod for node pressure by writing its status through the status subresource: phase ``Failed``,
reason ``Evicted``, its message, and the pod no longer ready. kwok runs no kubelet, so the test writes that status
itself; everything else is real (the ReplicaSet drops the pod from its ready count and creates a replacement). The
nodes are cordoned first, as a node under pressure is tainted, so the replacement waits: the operator runs with a
long unschedulable grace (the default is 20 s) so that the replacement waiting to be scheduled is not what it
reports. Uncordoning lets the replacement start, and the reason clears though the evicted pod stays listed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from .conftest import Cluster
from .processes import OperatorProcess
from .test_capacity import _cleared, _degraded, _events
from .test_operator import _apply, _condition, _iris, _wait_ready

KUBELET_SAYS = "The node was low on resource: ephemeral-storage. Container runtime was using 3Gi, request is 0."


@pytest.fixture(scope="module")
def operator(cluster: Cluster) -> Iterator[OperatorProcess]:
    process = OperatorProcess(
        cluster, {"MODELAPI_OPERATOR_RESYNC_SECONDS": "5", "MODELAPI_OPERATOR_UNSCHEDULABLE_GRACE_SECONDS": "600"}
    )
    process.start()
    yield process
    process.stop()


def _nodes(cluster: Cluster) -> list[str]:
    return [node["metadata"]["name"] for node in cluster.get_json("nodes")["items"]]


@pytest.fixture
def cordoned(cluster: Cluster) -> Iterator[list[str]]:
    """Every node cordoned for the test (uncordoned at the end whatever happens)."""
    nodes = _nodes(cluster)
    yield nodes
    for node in nodes:
        cluster.kubectl("uncordon", node, check=False)


def _evict(cluster: Cluster, namespace: str, pod: dict[str, Any]) -> None:
    """What a kubelet writes when it evicts a pod."""
    now = pod["status"]["startTime"]
    conditions = [
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
        {"type": "Initialized", "status": "True", "lastTransitionTime": now},
        {"type": "ContainersReady", "status": "False", "reason": "PodFailed", "lastTransitionTime": now},
        {"type": "Ready", "status": "False", "reason": "PodFailed", "lastTransitionTime": now},
    ]
    patch = {"status": {"phase": "Failed", "reason": "Evicted", "message": KUBELET_SAYS, "conditions": conditions}}
    cluster.kubectl(
        "patch",
        "pod",
        pod["metadata"]["name"],
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(patch),
        namespace=namespace,
    )


def test_an_evicted_replica_is_reported_with_the_kubelets_message_while_the_other_serves_then_clears(
    cluster: Cluster, namespace: str, operator: OperatorProcess, cordoned: list[str]
) -> None:
    _apply(cluster, namespace, _iris(autoscaling={"minReplicas": 2, "maxReplicas": 2}))
    _wait_ready(cluster, namespace, "iris")
    pods = cluster.get_json("pods", "-l", "serving.modelapi.io/name=iris", namespace=namespace)["items"]
    assert len(pods) == 2
    for node in cordoned:
        cluster.kubectl("cordon", node)
    _evict(cluster, namespace, pods[0])

    body = _degraded(cluster, namespace, "Evicted")
    degraded = _condition(body, "Degraded")
    assert degraded["status"] == "True"
    assert KUBELET_SAYS.rstrip(".") in degraded["message"]
    assert pods[0]["metadata"]["name"] in degraded["message"]
    assert "1/2 replicas ready (the others keep serving)" in degraded["message"]
    assert body["status"]["readyReplicas"] == 1  # the other replica keeps serving
    assert body["status"]["lastFailure"]["reason"] == "Evicted"
    warnings = sorted(
        e["message"].split(":")[0] for e in _events(cluster, namespace, "Evicted") if e["type"] == "Warning"
    )
    assert warnings == ["Degraded=True", "Ready=False"]  # each once: Ready was True before the eviction

    for node in cordoned:
        cluster.kubectl("uncordon", node)
    body = _cleared(cluster, namespace)
    assert body["status"]["readyReplicas"] == 2
    evicted = cluster.get_json("pod", pods[0]["metadata"]["name"], namespace=namespace)
    assert evicted["status"]["reason"] == "Evicted", "the evicted pod is still listed; the reason cleared anyway"
    operator.assert_alive()
