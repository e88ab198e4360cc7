"""spec.expose on the kwok tier: the Exposed condition's reasons from a real API server, with no gateway controller.

Without a data plane no route is ever accepted here (the real-node tier sends requests through Traefik,
tests/e2e/node/test_gateway.py); what this tier proves is what the operator decides from the objects it reads: a
missing Gateway is named, a second ModelAPI that would take the same host and paths is told which one holds them and
gets no route, while the first keeps its route, and both models stay Ready inside the cluster.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from .conftest import Cluster, wait_until
from .processes import OperatorProcess
from .test_operator import _apply, _condition, _iris, _mapi, _wait_ready

HOST = "models.example.test"
IN_CLUSTER = "the model keeps serving inside the cluster at http://iris.{namespace}.svc.cluster.local"


@pytest.fixture(scope="module")
def operator(cluster: Cluster) -> Iterator[OperatorProcess]:
    process = OperatorProcess(cluster, {"MODELAPI_OPERATOR_RESYNC_SECONDS": "2"})
    process.start()
    yield process
    process.stop()


@pytest.fixture
def other_namespace(cluster: Cluster) -> Iterator[str]:
    name = f"e2e-expose-other-{secrets.token_hex(3)}"
    cluster.kubectl("create", "namespace", name)
    cluster.kubectl("label", "namespace", name, "modelapi.io/e2e=true")
    wait_until(
        lambda: cluster.kubectl("get", "serviceaccount", "default", namespace=name, check=False).returncode == 0,
        timeout=30,
        what=f"ServiceAccount default in {name}",
    )
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


def _gateway(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "public", "namespace": namespace},
        "spec": {
            "gatewayClassName": "none-here",
            "listeners": [
                {"name": "http", "protocol": "HTTP", "port": 80, "allowedRoutes": {"namespaces": {"from": "All"}}}
            ],
        },
    }


def _exposed(cluster: Cluster, namespace: str, reason: str) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        body = _mapi(cluster, namespace, "iris")
        condition = _condition(body, "Exposed")
        current = condition.get("observedGeneration") == body["metadata"]["generation"]
        return condition if current and condition.get("reason") == reason else None

    result: dict[str, Any] = wait_until(reached, timeout=60, interval=1, what=f"iris in {namespace}: Exposed/{reason}")
    return result


def _routes(cluster: Cluster, namespace: str) -> set[str]:
    return {item["metadata"]["name"] for item in cluster.get_json("httproutes", namespace=namespace)["items"]}


def test_a_missing_gateway_is_named_and_the_model_keeps_serving_inside(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    expose = {"hostname": HOST, "gateway": {"name": "public", "namespace": "nowhere"}}
    _apply(cluster, namespace, _iris(expose=expose))
    condition = _exposed(cluster, namespace, "GatewayNotFound")
    assert condition["status"] == "False"
    assert "Gateway nowhere/public not found" in condition["message"]
    assert condition["message"].endswith(IN_CLUSTER.format(namespace=namespace))
    body = _wait_ready(cluster, namespace, "iris")
    assert body["status"]["url"] == f"http://iris.{namespace}.svc.cluster.local"
    assert "iris-expose" in _routes(cluster, namespace)  # applied anyway: it attaches once the Gateway exists
    events = cluster.get_json("events", "--field-selector", "reason=GatewayNotFound", namespace=namespace)["items"]
    assert [event["type"] for event in events] == ["Warning"]


def test_the_same_host_and_paths_stay_with_the_first_and_the_second_is_told_who_holds_them(
    cluster: Cluster, namespace: str, other_namespace: str, operator: OperatorProcess
) -> None:
    _apply(cluster, namespace, _gateway(namespace))
    expose = {"hostname": HOST, "gateway": {"name": "public", "namespace": namespace}}
    _apply(cluster, namespace, _iris(expose=expose))
    # no controller for the class here: the route waits to be accepted
    first = _exposed(cluster, namespace, "RoutePending")
    assert "HTTPRoute iris-expose is waiting for the controller of Gateway" in first["message"]
    route = cluster.get_json("httproute", "iris-expose", namespace=namespace)
    assert route["spec"]["hostnames"] == [HOST]
    assert route["spec"]["parentRefs"][0]["namespace"] == namespace

    _apply(cluster, other_namespace, _iris(expose=expose))
    second = _exposed(cluster, other_namespace, "HostPathTaken")
    assert second["status"] == "False"
    assert f"are taken by ModelAPI {namespace}/iris" in second["message"], second["message"]
    assert second["message"].endswith(IN_CLUSTER.format(namespace=other_namespace))
    _wait_ready(cluster, other_namespace, "iris")
    assert "iris-expose" not in _routes(cluster, other_namespace)
    # the first keeps its route and its reason, through several resyncs
    threading.Event().wait(6)
    assert _condition(_mapi(cluster, namespace, "iris"), "Exposed")["reason"] == "RoutePending"
    assert "iris-expose" in _routes(cluster, namespace)

    # another path prefix is another address: the second one gets its route
    moved = {**expose, "pathPrefix": "/team-b"}
    _apply(cluster, other_namespace, _iris(expose=moved))
    _exposed(cluster, other_namespace, "RoutePending")
    route = cluster.get_json("httproute", "iris-expose", namespace=other_namespace)
    assert route["spec"]["rules"][0]["matches"][0]["path"]["value"] == "/team-b/v1/models/iris"
