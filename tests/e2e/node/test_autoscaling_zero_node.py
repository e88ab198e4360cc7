"""Tier B, scale to zero with real pods: the activator from the chart (2 pods, Pod Security restricted) and model
pods under kubelet + containerd; requests go from this machine to the `<name>` Service's ClusterIP through
kube-proxy, with the Host header of the Service's DNS name (what an in-cluster client calling status.url sends).

Run with `make test-e2e-node PYTEST_ARGS="-k autoscaling_zero"`.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from e2e.conftest import Cluster, wait_until
from e2e.processes import OperatorProcess

from .test_real_node import FLOWERS, SMALL, Models, _apply, _condition

CHART = Path(__file__).resolve().parents[3] / "charts" / "modelapi"
IDLE_SECONDS = 30
pytestmark = pytest.mark.node


def _helm(cluster: Cluster, *args: str) -> None:
    proc = subprocess.run(
        [cluster.env["HELM"], *args],
        env=cluster.subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, f"helm {' '.join(args)}:\n{proc.stderr}\n{proc.stdout}"


@pytest.fixture(scope="module")
def activator(cluster: Cluster, node: dict[str, str]) -> Iterator[str]:
    """The chart installed with its activator only (the operator runs as a local process); its Service."""
    namespace, release = f"e2e-node-activator-{secrets.token_hex(3)}", f"z{secrets.token_hex(3)}"
    cluster.kubectl("create", "namespace", namespace)
    cluster.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/enforce-version=latest",
    )  # fmt: skip
    _helm(
        cluster, "install", release, str(CHART), "--namespace", namespace,
        "--set", "replicaCount=0",  # no operator pod: the test runs the operator
        "--set", f"runtimeImages.cpu={node['NODE_RUNTIME_IMAGE']}",
        "--set", "image.pullPolicy=Never",
        "--wait", "--timeout", "180s",
    )  # fmt: skip
    pods = cluster.get_json("pods", "-l", "app.kubernetes.io/name=modelapi-activator", namespace=namespace)["items"]
    assert len(pods) == 2
    assert all(p["status"]["phase"] == "Running" for p in pods)
    yield f"{namespace}/{release}-modelapi-activator"
    _helm(cluster, "uninstall", release, "--namespace", namespace, "--wait")
    cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


@pytest.fixture(scope="module")
def operator(cluster: Cluster, node: dict[str, str], activator: str) -> Iterator[OperatorProcess]:
    process = OperatorProcess(
        cluster,
        {
            "MODELAPI_OPERATOR_CPU_IMAGE": node["NODE_RUNTIME_IMAGE"],
            "MODELAPI_OPERATOR_RESYNC_SECONDS": "5",
            "MODELAPI_OPERATOR_CANARY_TICK_SECONDS": "2",
            "MODELAPI_OPERATOR_PROMETHEUS_URL": cluster.prometheus_url,
            "MODELAPI_OPERATOR_ACTIVATOR_SERVICE": activator,
        },
    )
    process.start()
    yield process
    process.stop()


def _manifest(uri: str, node: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "serving.modelapi.io/v1alpha1",
        "kind": "ModelAPI",
        "metadata": {"name": "iris"},
        "spec": {
            "model": {"uri": uri},
            "storage": {
                "endpoint": node["NODE_S3_ENDPOINT_URL"],
                "region": "us-east-1",
                "credentialsSecret": "s3-creds",
            },
            "runtime": {"resources": dict(SMALL)},
            "autoscaling": {"minReplicas": 0, "maxReplicas": 2, "scaleToZeroAfterSeconds": IDLE_SECONDS},
        },
    }


def _ready_with(cluster: Cluster, namespace: str, reason: str, timeout: float) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        body: dict[str, Any] = cluster.get_json("modelapi", "iris", namespace=namespace)
        ready = _condition(body, "Ready")
        fresh = ready.get("observedGeneration") == body["metadata"]["generation"]
        return body if fresh and ready.get("status") == "True" and ready.get("reason") == reason else None

    result: dict[str, Any] = wait_until(check, timeout=timeout, interval=1, what=f"iris Ready/{reason}")
    return result


def _predict(url: str, host: str, timeout: float = 180) -> tuple[int, Any, float]:
    """POST a v1 prediction with the Service's DNS name as Host: (status, answer, seconds)."""
    request = urllib.request.Request(
        url,
        data=json.dumps({"instances": FLOWERS}).encode(),
        headers={"Content-Type": "application/json", "Host": host},
    )
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), json.loads(response.read()), time.monotonic() - started
    except urllib.error.HTTPError as error:
        return int(error.code), error.read().decode(errors="replace")[:300], time.monotonic() - started
    except OSError as error:
        return 0, str(error), time.monotonic() - started


def _go_to_zero(cluster: Cluster, namespace: str, node: dict[str, str], uri: str) -> str:
    """Apply iris, wait until Ready, then until it is at zero (no pod left); the predict URL of its ClusterIP."""
    _apply(cluster, namespace, _manifest(uri, node))
    _ready_with(cluster, namespace, "Serving", timeout=240)
    ready_at = time.monotonic()
    body = _ready_with(cluster, namespace, "ScaledToZero", timeout=IDLE_SECONDS + 60)
    took = time.monotonic() - ready_at
    assert body["status"]["scaledToZeroAt"]
    wait_until(
        lambda: not cluster.get_json("pods", "-l", "serving.modelapi.io/name=iris", namespace=namespace)["items"],
        timeout=60,
        what="every model pod gone",
    )
    service = cluster.get_json("service", "iris", namespace=namespace)
    assert "selector" not in service["spec"], "at zero the Service's endpoints are the activator's pods"
    _figure(cluster, f"idle -> ScaledToZero {took:.0f} s after Ready (scaleToZeroAfterSeconds {IDLE_SECONDS})")
    return f"http://{service['spec']['clusterIP']}/v1/models/iris:predict"


def _figure(cluster: Cluster, line: str) -> None:
    print(f"[scale-to-zero] {line}")
    with (cluster.logs_dir / "scale-to-zero-figures.txt").open("a") as out:
        out.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {line}\n")


def test_autoscaling_zero_idle_model_goes_to_zero_and_50_requests_held_at_zero_all_succeed(
    cluster: Cluster, node: dict[str, str], operator: OperatorProcess, restricted: str, models: Models
) -> None:
    host = f"iris.{restricted}.svc.cluster.local"
    url = _go_to_zero(cluster, restricted, node, models.put("v1", 0.0))
    with ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(lambda _: _predict(url, host), range(50)))
    codes = Counter(code for code, _, _ in answers)
    assert codes == {200: 50}, (codes, [(a, round(t, 2)) for c, a, t in answers if c != 200][:20])
    assert {models.classify(answer) for _, answer, _ in answers} == {"v1"}
    seconds = sorted(s for _, _, s in answers)
    _figure(cluster, f"50 requests at zero: first answer {seconds[0]:.2f} s, last {seconds[-1]:.2f} s (iris)")
    body = _ready_with(cluster, restricted, "Serving", timeout=60)
    assert "scaledToZeroAt" not in body["status"]
    service = cluster.get_json("service", "iris", namespace=restricted)
    assert service["spec"]["selector"] == {"serving.modelapi.io/name": "iris"}, "warm: no activator in the path"
    operator.assert_alive()


def test_autoscaling_zero_model_update_at_zero_is_answered_by_the_new_revision(
    cluster: Cluster, node: dict[str, str], operator: OperatorProcess, restricted: str, models: Models
) -> None:
    host = f"iris.{restricted}.svc.cluster.local"
    url = _go_to_zero(cluster, restricted, node, models.put("v1", 0.0))
    v2 = models.put("v2", 4.0)
    _apply(cluster, restricted, _manifest(v2, node))

    def updated() -> bool:
        body = _ready_with(cluster, restricted, "ScaledToZero", timeout=30)
        revisions = body["status"].get("revisions", [])
        return [r["modelUri"] for r in revisions if r["role"] == "stable"] == [v2]

    wait_until(updated, timeout=60, what="the new revision stable, at zero")
    code, answer, seconds = _predict(url, host)
    assert code == 200, answer
    assert models.classify(answer) == "v2", "the first request after the update is answered by the new model"
    _figure(cluster, f"model update at zero, first request answered by v2 in {seconds:.2f} s")
    operator.assert_alive()
