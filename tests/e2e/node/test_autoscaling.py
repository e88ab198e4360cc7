"""Tier B: the HorizontalPodAutoscaler of a ModelAPI adds and removes real pods under real load.

`metric: cpu` reads metrics-server (which scrapes the real kubelet); `metric: inFlight` reads prometheus-adapter,
which serves the runtime's modelapi_inflight_requests from Prometheus (pods found by kubernetes_sd) with the chart's
rule. The harness's controller-manager syncs HPAs every 5 s (tests/e2e/cluster/cluster.sh). Select with
`-k autoscal`.

Each test: one replica, a step of load (the open-loop client of load.py, one connection per request so that
kube-proxy spreads requests over every ready pod) until at least 3 replicas are ready, then a light load while the
HPA removes them again (short stabilization windows in the manifests), with not one failed request in that phase.
`autoscaling_limited`: the same load against maxReplicas 2 makes the ModelAPI say AutoscalingLimited, and raising
maxReplicas clears it.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from e2e.conftest import Cluster, wait_until
from e2e.processes import OperatorProcess

from .load import ConstantLoad, LoadReport
from .test_real_node import FLOWERS, Models, _apply, _condition, _manifest, _predict_url, _wait_ready

pytestmark = pytest.mark.node
WANT = 3  # replicas under load


@dataclass
class Scaling:
    desired_s: float  # from the load step to the HPA asking for WANT replicas
    ready_s: float  # to WANT replicas ready (serving)
    back_s: float  # from the light load's start to the minimum again
    high: LoadReport
    low: LoadReport

    def summary(self) -> str:
        return (
            f"{WANT} replicas asked {self.desired_s:.0f} s and ready {self.ready_s:.0f} s after the load step; "
            f"back to 1 replica {self.back_s:.0f} s after the load dropped; under load: {self.high.summary()}; "
            f"while scaling in: {self.low.summary()}"
        )


def _stable_deployment(cluster: Cluster, namespace: str, name: str) -> str:
    status = cluster.get_json("modelapi", name, namespace=namespace)["status"]
    return str(next(r["name"] for r in status["revisions"] if r["role"] == "stable"))


def _replicas(cluster: Cluster, namespace: str, deployment: str) -> tuple[int, int]:
    """(desired, ready) of the Deployment; desired is what the HPA last asked for."""
    body = cluster.get_json("deployment", deployment, namespace=namespace)
    return int(body["spec"].get("replicas", 0)), int(body["status"].get("readyReplicas", 0))


def _pods(cluster: Cluster, namespace: str) -> int:
    return len(cluster.get_json("pods", "-l", "app.kubernetes.io/name=modelapi", namespace=namespace)["items"])


def _hpa_reading(cluster: Cluster, namespace: str, name: str) -> str:
    hpa = cluster.get_json("hpa", name, namespace=namespace)
    current = hpa.get("status", {}).get("currentMetrics") or []
    return str(current)


def _scale_out_and_back(
    cluster: Cluster, namespace: str, name: str, url: str, classify: Callable[[Any], str], high: float, low: float
) -> Scaling:
    deployment = _stable_deployment(cluster, namespace, name)
    assert _replicas(cluster, namespace, deployment) == (1, 1)
    body = {"instances": FLOWERS}
    step = ConstantLoad(url, body, classify, rate=high, keepalive=False)
    with step:
        t0 = time.monotonic()
        wait_until(
            lambda: _replicas(cluster, namespace, deployment)[0] >= WANT,
            timeout=240,
            interval=1,
            what=f"the HPA asking for {WANT} replicas under {high:.0f} req/s",
        )
        desired_s = time.monotonic() - t0
        print(f"[autoscaling] HPA reading under load: {_hpa_reading(cluster, namespace, name)}")
        wait_until(
            lambda: _replicas(cluster, namespace, deployment)[1] >= WANT,
            timeout=180,
            interval=1,
            what=f"{WANT} replicas ready",
        )
        ready_s = time.monotonic() - t0
        threading.Event().wait(5)  # the new replicas serve part of the load
    light = ConstantLoad(url, body, classify, rate=low, keepalive=False)
    with light:
        t1 = time.monotonic()
        wait_until(
            lambda: _replicas(cluster, namespace, deployment) == (1, 1) and _pods(cluster, namespace) == 1,
            timeout=300,
            interval=1,
            what="back to 1 replica (the others terminated)",
        )
        back_s = time.monotonic() - t1
        threading.Event().wait(5)
    return Scaling(desired_s, ready_s, back_s, step.report, light.report)


def _check(scaling: Scaling, cluster: Cluster, namespace: str, name: str) -> None:
    assert scaling.low.sent > 0, scaling.summary()
    assert not scaling.low.failed, scaling.summary()  # replicas were removed under load: nothing failed
    assert not scaling.high.failed, scaling.summary()
    condition = _condition(cluster.get_json("modelapi", name, namespace=namespace), "Autoscaling")
    assert (condition.get("status"), condition.get("reason")) == ("True", "AutoscalingActive"), condition


def test_autoscaling_on_cpu_adds_replicas_under_load_and_removes_them_after_without_a_failed_request(
    cluster: Cluster, node: dict[str, str], operator: OperatorProcess, restricted: str, models: Models
) -> None:
    name = "cpu-scaled"
    spec = {
        "runtime": {"resources": {"cpu": "100m", "memory": "384Mi"}},
        "autoscaling": {
            "minReplicas": 1,
            "maxReplicas": 4,
            "metric": "cpu",
            # 15m of the 100m request per replica: 80 req/s took 60-75m on a slow hour of a shared machine and about
            # 40m on a fast one (with a 25m target that wanted only 2): 3 or more replicas either way
            "target": 15,
            "scaleUpStabilizationSeconds": 0,
            "scaleDownStabilizationSeconds": 15,
        },
    }
    _apply(cluster, restricted, _manifest(name, models.put("v1", 0.0), node, **spec))
    _wait_ready(cluster, restricted, name)
    url = _predict_url(cluster, restricted, name)
    wait_until(
        lambda: (
            _condition(cluster.get_json("modelapi", name, namespace=restricted), "Autoscaling").get("reason")
            == "AutoscalingActive"
        ),
        timeout=90,
        interval=1,
        what="the HPA reading cpu from metrics-server (Autoscaling=True)",
    )
    scaling = _scale_out_and_back(cluster, restricted, name, url, models.classify, high=80, low=5)
    print(f"[autoscaling] metric cpu: {scaling.summary()}")
    _check(scaling, cluster, restricted, name)


def test_autoscaling_on_in_flight_requests_adds_replicas_under_load_and_removes_them_after_without_a_failed_request(
    cluster: Cluster, node: dict[str, str], operator: OperatorProcess, restricted: str, models: Models
) -> None:
    """With fillWhenIdle, requests wait up to 100 ms for a batch to fill even on an idle model, so 80 req/s keep about
    8 in flight: 4 replicas at 2 each (without it, batching is work-conserving and a fast model holds almost none)."""
    name = "inflight-scaled"
    spec = {
        "runtime": {
            "resources": {"cpu": "250m", "memory": "384Mi"},
            "batching": {"maxBatchSize": 256, "maxLatencyMs": 100, "fillWhenIdle": True},
        },
        "autoscaling": {
            "minReplicas": 1,
            "maxReplicas": 4,
            "metric": "inFlight",
            "target": 2,
            "scaleUpStabilizationSeconds": 0,
            "scaleDownStabilizationSeconds": 15,
        },
    }
    _apply(cluster, restricted, _manifest(name, models.put("v1", 0.0), node, **spec))
    _wait_ready(cluster, restricted, name)
    url = _predict_url(cluster, restricted, name)
    wait_until(
        lambda: (
            _condition(cluster.get_json("modelapi", name, namespace=restricted), "Autoscaling").get("reason")
            == "AutoscalingActive"
        ),
        timeout=120,
        interval=1,
        what="the HPA reading modelapi_inflight_requests from prometheus-adapter (Autoscaling=True)",
    )
    scaling = _scale_out_and_back(cluster, restricted, name, url, models.classify, high=80, low=2)
    print(f"[autoscaling] metric inFlight: {scaling.summary()}")
    _check(scaling, cluster, restricted, name)


def _autoscaling(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    return _condition(cluster.get_json("modelapi", name, namespace=namespace), "Autoscaling")


def _model_events(cluster: Cluster, namespace: str, name: str, reason: str) -> list[dict[str, Any]]:
    selector = f"involvedObject.kind=ModelAPI,involvedObject.name={name},reason={reason}"
    items: list[dict[str, Any]] = cluster.get_json("events", "--field-selector", selector, namespace=namespace)["items"]
    return items


def test_autoscaling_limited_when_the_hpa_is_held_at_max_replicas_and_cleared_when_the_limit_is_raised(
    cluster: Cluster, node: dict[str, str], operator: OperatorProcess, restricted: str, models: Models
) -> None:
    """maxReplicas 2 under a load that wants 4 or more (80 req/s: 40-75m of cpu, a 10m target per replica): once the
    HPA has wanted more than 2 for the operator's sustained period (20 s here), the ModelAPI says AutoscalingLimited
    with desired vs max and the cost; raising maxReplicas clears it with a Normal Event."""
    name = "cpu-limited"
    spec = {
        "runtime": {"resources": {"cpu": "100m", "memory": "384Mi"}},
        "autoscaling": {
            "minReplicas": 1,
            "maxReplicas": 2,
            "metric": "cpu",
            "target": 10,
            "scaleUpStabilizationSeconds": 0,
            "scaleDownStabilizationSeconds": 60,
        },
    }
    _apply(cluster, restricted, _manifest(name, models.put("v1", 0.0), node, **spec))
    _wait_ready(cluster, restricted, name)
    url = _predict_url(cluster, restricted, name)
    wait_until(
        lambda: _autoscaling(cluster, restricted, name).get("reason") == "AutoscalingActive",
        timeout=90,
        interval=1,
        what="the HPA reading cpu from metrics-server (Autoscaling=True)",
    )
    with ConstantLoad(url, {"instances": FLOWERS}, models.classify, rate=80, keepalive=False) as load:
        limited = wait_until(
            lambda: (c := _autoscaling(cluster, restricted, name)).get("reason") == "AutoscalingLimited" and c,
            timeout=240,
            interval=1,
            what="Autoscaling=True/AutoscalingLimited under a load that wants more than maxReplicas 2",
        )
        print(f"[autoscaling] limited: {limited['message']}; HPA: {_hpa_reading(cluster, restricted, name)}")
        assert limited["status"] == "True"
        desired = re.search(r"\(desired (\d+), max 2\)", limited["message"])
        assert desired is not None, limited["message"]
        assert int(desired.group(1)) > 2, limited["message"]
        assert re.search(r"costs \d+ more replicas?: cpu \d+m, memory \d+Mi", limited["message"]), limited["message"]
        body = cluster.get_json("modelapi", name, namespace=restricted)
        assert _condition(body, "Ready").get("status") == "True", body["status"]  # capacity-bound, still serving
        assert _condition(body, "Degraded").get("reason") == "AsExpected", body["status"]
        warnings = _model_events(cluster, restricted, name, "AutoscalingLimited")
        assert [e["type"] for e in warnings] == ["Warning"], warnings
        assert "max 2" in warnings[0]["message"]

        cluster.kubectl(
            "patch",
            "modelapi",
            name,
            "--type=merge",
            "-p",
            '{"spec":{"autoscaling":{"maxReplicas":8}}}',
            namespace=restricted,
        )
        cleared = wait_until(
            lambda: (c := _autoscaling(cluster, restricted, name)).get("reason") == "AutoscalingActive" and c,
            timeout=60,
            interval=1,
            what="AutoscalingActive again once maxReplicas is 8",
        )
        assert "up to maxReplicas 8" in cleared["message"], cleared
        recovered = wait_until(
            lambda: _model_events(cluster, restricted, name, "AutoscalingActive"),
            timeout=30,
            what="a Normal Event AutoscalingActive",
        )
        assert recovered[-1]["type"] == "Normal"
    assert load.report.sent > 0, load.report.summary()
