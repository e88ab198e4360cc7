"""Tier B: the operator's Deployments as real pods (kubelet + containerd + runc) on the local cluster's real node.

The runtime image is the project's Dockerfile built by buildah (see tests/e2e/cluster/node.sh); pods pull the model
from the local S3 through the node's address; requests go from the host to the `<name>` Service's ClusterIP through
kube-proxy's iptables rules. Every namespace here enforces Pod Security "restricted".

Run with `make test-e2e-node` (it brings up a cluster with MODELAPI_NODE=real in its own run directory).
"""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import yaml
from onnx import numpy_helper

from e2e.conftest import CLUSTER_SH, Cluster, wait_until
from e2e.processes import OperatorProcess, demo_namespace, run_demo

from .load import ConstantLoad, LoadReport

ROOT = Path(__file__).resolve().parents[3]
FLOWERS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
SMALL = {"cpu": "250m", "memory": "384Mi"}

pytestmark = pytest.mark.node


# ---- fixtures -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def node(cluster: Cluster) -> dict[str, str]:
    if cluster.env.get("MODELAPI_NODE") != "real":
        pytest.fail(
            "these tests need the local cluster with a real node: `make test-e2e-node` (the cluster in "
            f"{cluster.env.get('MODELAPI_CLUSTER_DIR')} has MODELAPI_NODE={cluster.env.get('MODELAPI_NODE')})"
        )
    return cluster.env


def registry_has(image: str) -> bool:
    """Does the harness's registry (plain HTTP) hold image, a registry/repository:tag reference?"""
    registry, _, rest = image.partition("/")
    repository, _, tag = rest.rpartition(":")
    kinds = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
    head = urllib.request.Request(
        f"http://{registry}/v2/{repository}/manifests/{tag}", method="HEAD", headers={"Accept": kinds}
    )
    try:
        with urllib.request.urlopen(head, timeout=30) as response:
            return bool(response.status == 200)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return False
        raise


# a cold build of the runtime-gpu image (about 2.3 GB of wheels) took up to 18 min on 2 busy cores
GPU_IMAGE_BUILD_TIMEOUT_S = 40 * 60


@pytest.fixture(scope="module")
def gpu_image(cluster: Cluster, node: dict[str, str]) -> str:
    """NODE_RUNTIME_GPU_IMAGE, in the registry. The tests' `up` leaves this image (about 3 GiB) out, so that a run
    that does not pull it never builds it; here it is built (or taken from the cache) and pushed when missing."""
    image = node["NODE_RUNTIME_GPU_IMAGE"]
    if not registry_has(image):
        print(f"[node] {image} is not in the registry: cluster.sh images runtime-gpu", flush=True)
        env = {**os.environ, "MODELAPI_NODE": "real", "MODELAPI_CLUSTER_DIR": node["MODELAPI_CLUSTER_DIR"]}
        proc = subprocess.run(
            ["bash", str(CLUSTER_SH), "images", "runtime-gpu"],
            env=env,
            capture_output=True,
            text=True,
            timeout=GPU_IMAGE_BUILD_TIMEOUT_S,
            check=False,
        )
        assert proc.returncode == 0, f"cluster.sh images runtime-gpu failed:\n{proc.stderr[-3000:]}"
        assert registry_has(image), f"{image} is still not in the registry after cluster.sh images runtime-gpu"
    return image


@pytest.fixture(scope="module")
def operator(cluster: Cluster, node: dict[str, str]) -> Iterator[OperatorProcess]:
    process = OperatorProcess(
        cluster,
        {
            "MODELAPI_OPERATOR_CPU_IMAGE": node["NODE_RUNTIME_IMAGE"],
            "MODELAPI_OPERATOR_RESYNC_SECONDS": "5",
            "MODELAPI_OPERATOR_CANARY_TICK_SECONDS": "1",
            # AutoscalingLimited after 20 s at maxReplicas (60 s by default): test_autoscaling.py
            "MODELAPI_OPERATOR_AUTOSCALING_LIMITED_SECONDS": "20",
            # Prometheus discovers the model pods through the apiserver (canary analysis, cold-start timings)
            "MODELAPI_OPERATOR_PROMETHEUS_URL": cluster.prometheus_url,
        },
    )
    process.start()
    yield process
    process.stop()


@pytest.fixture
def restricted(cluster: Cluster, namespace: str) -> str:
    """The test's namespace, enforcing Pod Security "restricted", with the S3 credentials Secret."""
    cluster.kubectl(
        "label",
        "namespace",
        namespace,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/enforce-version=latest",
    )
    values = {key: cluster.env[key] for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    literals = [f"--from-literal={k}={v}" for k, v in values.items()]
    cluster.kubectl("create", "secret", "generic", "s3-creds", *literals, namespace=namespace)
    return namespace


class Models:
    """Iris variants (the example's model with its bias shifted) in S3, and what each one answers."""

    def __init__(self, cluster: Cluster, s3: Any, prefix: str) -> None:
        self.cluster, self.s3, self.prefix = cluster, s3, prefix
        self.expected: dict[str, np.ndarray] = {}

    def put(self, version: str, bias_shift: float) -> str:
        builder = runpy.run_path(str(ROOT / "examples" / "iris" / "build_model.py"))["build_iris_model"]
        model = builder()
        for index, tensor in enumerate(model.graph.initializer):
            if tensor.name == "bias":  # shift one class only: the softmax ignores a shift of all of them
                values = numpy_helper.to_array(tensor).copy()
                values[..., 0] += bias_shift
                model.graph.initializer[index].CopyFrom(numpy_helper.from_array(values, name="bias"))
        body = model.SerializeToString()
        session = ort.InferenceSession(body, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: np.asarray(FLOWERS, dtype=np.float32)}
        answer = np.asarray(session.run(None, feed)[0])
        for other, expected in self.expected.items():  # or the classification could not tell them apart
            assert not np.allclose(answer, expected, atol=1e-3), f"{version} answers like {other}"
        self.expected[version] = answer
        key = f"{self.prefix}/{version}/model.onnx"
        self.s3.put_object(Bucket=self.cluster.s3_bucket, Key=key, Body=body)
        return f"s3://{self.cluster.s3_bucket}/{key}"

    def put_bytes(self, key: str, body: bytes) -> str:
        self.s3.put_object(Bucket=self.cluster.s3_bucket, Key=f"{self.prefix}/{key}", Body=body)
        return f"s3://{self.cluster.s3_bucket}/{self.prefix}/{key}"

    def classify(self, answer: Any) -> str:
        predictions = np.asarray(answer.get("predictions"), dtype=np.float64)
        for version, expected in self.expected.items():
            if predictions.shape == expected.shape and np.allclose(predictions, expected, atol=1e-4):
                return version
        return "unknown"


@pytest.fixture
def models(cluster: Cluster, s3: Any, restricted: str) -> Models:
    return Models(cluster, s3, f"e2e-node/{restricted}")


# ---- helpers --------------------------------------------------------------------------------------------------------


def _manifest(name: str, uri: str, node: dict[str, str], **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "model": {"uri": uri},
        "storage": {"endpoint": node["NODE_S3_ENDPOINT_URL"], "region": "us-east-1", "credentialsSecret": "s3-creds"},
        "runtime": {"resources": dict(SMALL)},
        "autoscaling": {"minReplicas": 2, "maxReplicas": 2},
    }
    base.update(spec)
    return {"apiVersion": "serving.modelapi.io/v1alpha1", "kind": "ModelAPI", "metadata": {"name": name}, "spec": base}


def _apply(cluster: Cluster, namespace: str, manifest: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-f", "-", namespace=namespace, input=yaml.safe_dump(manifest))


def _condition(body: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in body.get("status", {}).get("conditions", []) if c["type"] == kind), {})


def _wait_ready(cluster: Cluster, namespace: str, name: str, timeout: float = 180) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        body: dict[str, Any] = cluster.get_json("modelapi", name, namespace=namespace)
        condition = _condition(body, "Ready")
        progressing = _condition(body, "Progressing")
        fresh = condition.get("observedGeneration") == body["metadata"]["generation"]
        done = progressing.get("status") == "False"
        return body if fresh and condition.get("status") == "True" and done else None

    result: dict[str, Any] = wait_until(ready, timeout=timeout, interval=1, what=f"{name} Ready with its rollout done")
    return result


def _wait_degraded(cluster: Cluster, namespace: str, name: str, reason: str, timeout: float = 180) -> dict[str, Any]:
    def degraded() -> dict[str, Any] | None:
        condition = _condition(cluster.get_json("modelapi", name, namespace=namespace), "Degraded")
        return condition if condition.get("status") == "True" and condition.get("reason") == reason else None

    result: dict[str, Any] = wait_until(degraded, timeout=timeout, interval=1, what=f"{name} Degraded/{reason}")
    return result


def _predict_url(cluster: Cluster, namespace: str, name: str) -> str:
    """The v1 predict URL on the Service's ClusterIP, once kube-proxy routes it: Ready says the pods are ready, and
    the EndpointSlice reaches kube-proxy's iptables rules a moment later (until then a connection is refused)."""
    service = cluster.get_json("service", name, namespace=namespace)
    ip, port = service["spec"]["clusterIP"], service["spec"]["ports"][0]["port"]
    url = f"http://{ip}:{port}/v1/models/{name}:predict"
    body = json.dumps({"instances": FLOWERS}).encode()

    def answers() -> bool:
        request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    wait_until(answers, timeout=20, interval=0.2, what=f"an answer through {url}")
    return url


def _pods_on_node(cluster: Cluster, namespace: str, node_name: str) -> list[dict[str, Any]]:
    pods: list[dict[str, Any]] = cluster.get_json("pods", namespace=namespace)["items"]
    assert all(p["spec"].get("nodeName") in (None, node_name) for p in pods), "a pod left the real node"
    return pods


def _run_load(url: str, models: Models, seconds: float, *, keepalive: bool, rate: float = 50) -> LoadReport:
    load = ConstantLoad(url, {"instances": FLOWERS}, models.classify, rate=rate, keepalive=keepalive)
    with load:
        threading.Event().wait(seconds)
    return load.report


# ---- tests ----------------------------------------------------------------------------------------------------------


def test_iris_example_becomes_ready_on_a_real_pod_and_answers_through_its_cluster_ip(
    cluster: Cluster, node: dict[str, str], operator: OperatorProcess, restricted: str, models: Models
) -> None:
    example = yaml.safe_load((ROOT / "examples" / "iris" / "model.yaml").read_text())
    example["spec"]["model"]["uri"] = models.put("v1", 0.0)
    example["spec"]["storage"]["endpoint"] = node["NODE_S3_ENDPOINT_URL"]
    _apply(cluster, restricted, example)

    body = _wait_ready(cluster, restricted, "iris")
    operator.assert_alive()
    pods = _pods_on_node(cluster, restricted, node["NODE_NAME"])
    assert [p["status"]["phase"] for p in pods] == ["Running"]
    assert pods[0]["spec"]["securityContext"]["runAsUser"] == 10001
    assert body["status"]["readyReplicas"] == 1, body["status"]

    report = _run_load(_predict_url(cluster, restricted, "iris"), models, 3, keepalive=True)
    print(f"[node] iris through its ClusterIP: {report.summary()}")
    # status.url resolves inside the cluster (CoreDNS) and answers from a pod
    ready_url = f"{body['status']['url']}/v2/health/ready"
    fetch = f"import urllib.request; print(urllib.request.urlopen({ready_url!r}, timeout=10).status)"
    phase, log = _run_pod(
        cluster, restricted, _restricted_pod("dns-client", node["NODE_RUNTIME_IMAGE"], ["python3", "-c", fetch])
    )
    assert (phase, log.strip()) == ("Succeeded", "200"), log
    assert report.sent > 100, report.summary()
    assert not report.failed, report.summary()
    assert set(report.shares()) == {"v1"}, report.summary()


def test_rolling_model_update_under_constant_load_fails_no_request(
    cluster: Cluster, node: dict[str, str], operator: OperatorProcess, restricted: str, models: Models
) -> None:
    name = "rolling"
    _apply(cluster, restricted, _manifest(name, models.put("v1", 0.0), node))
    first = _wait_ready(cluster, restricted, name)
    url = _predict_url(cluster, restricted, name)
    v2 = models.put("v2", 5.0)

    load = ConstantLoad(url, {"instances": FLOWERS}, models.classify, rate=200, keepalive=True)
    with load:
        threading.Event().wait(5)
        _apply(cluster, restricted, _manifest(name, v2, node))
        wait_until(
            lambda: (
                cluster.get_json("modelapi", name, namespace=restricted)["metadata"]["generation"]
                > first["metadata"]["generation"]
            ),
            timeout=10,
            what="the new generation",
        )
        body = _wait_ready(cluster, restricted, name, timeout=240)
        stable_name = next(r["name"] for r in body["status"]["revisions"] if r["role"] == "stable")
        new_revision = stable_name.removeprefix(f"{name}-")

        def only_new_pods() -> bool:
            pods = _pods_on_node(cluster, restricted, node["NODE_NAME"])
            return all(p["metadata"]["labels"].get("serving.modelapi.io/revision") == new_revision for p in pods)

        # the old pods finish: preStop, SIGTERM, the runtime's drain, exit; the load goes on all the while
        wait_until(only_new_pods, timeout=120, interval=1, what="the old revision's pods gone")
        switched_at = load.elapsed_s()
        threading.Event().wait(5)
    report = load.report
    print(f"[node] rolling update v1 -> v2 at 200 req/s: {report.summary()}")
    print(f"failed requests: {len(report.failed)}")
    operator.assert_alive()
    stable = [r for r in body["status"]["revisions"] if r["role"] == "stable"]
    assert [r["modelUri"] for r in stable] == [v2]
    assert report.sent >= 200 * 20, report.summary()  # the load really ran for the whole update
    assert set(report.shares(since_s=switched_at)) == {"v2"}, report.summary()
    assert len(report.failed) == 0, report.summary()


def test_replica_ratio_canary_gets_its_weight_of_the_traffic(
    cluster: Cluster, node: dict[str, str], operator: OperatorProcess, restricted: str, models: Models
) -> None:
    name = "ratio"
    stable_uri = models.put("v1", 0.0)
    canary = {"steps": [{"weight": 25, "pauseSeconds": 600}], "trafficRouting": "replicas"}
    spec = {
        "autoscaling": {"minReplicas": 3, "maxReplicas": 3},
        "runtime": {"resources": {"cpu": "200m", "memory": "384Mi"}},
        "rollout": {"strategy": "Canary", "canary": canary},
    }
    _apply(cluster, restricted, _manifest(name, stable_uri, node, **spec))
    _wait_ready(cluster, restricted, name)
    _apply(cluster, restricted, _manifest(name, models.put("v2", 5.0), node, **spec))

    def canary_at_weight() -> bool:
        canary = cluster.get_json("modelapi", name, namespace=restricted).get("status", {}).get("canary") or {}
        return canary.get("weight") == 25

    wait_until(canary_at_weight, timeout=180, interval=1, what="the canary serving at weight 25")
    pods = _pods_on_node(cluster, restricted, node["NODE_NAME"])
    ready = [p for p in pods if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"]["conditions"])]
    assert len(ready) == 4, [p["metadata"]["name"] for p in pods]

    report = _run_load(_predict_url(cluster, restricted, name), models, 8, keepalive=False, rate=60)
    shares = report.shares()
    canary_share = 100 * shares["v2"] / max(1, sum(shares.values()))
    print(f"[node] replica-ratio canary at weight 25: canary share {canary_share:.1f} %; {report.summary()}")
    assert not report.failed, report.summary()
    assert report.sent >= 400, report.summary()
    assert abs(canary_share - 25) <= 10, report.summary()


IN_CLUSTER_CLIENT = """
import json, os, ssl, sys, urllib.request

account = "/var/run/secrets/kubernetes.io/serviceaccount"
host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
context = ssl.create_default_context(cafile=f"{account}/ca.crt")
token = open(f"{account}/token").read()
body = json.dumps({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}).encode()
for url in (f"https://{host}:{port}", *sys.argv[1:]):
    request = urllib.request.Request(
        f"{url}/apis/authentication.k8s.io/v1/selfsubjectreviews",
        data=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        user = json.load(response)["status"]["userInfo"]["username"]
    print(f"{url} {user}")
"""


def _restricted_pod(name: str, image: str, command: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "main",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": command,
                    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                    "resources": {"limits": {"cpu": "200m", "memory": "128Mi"}},
                }
            ],
        },
    }


def _run_pod(cluster: Cluster, namespace: str, pod: dict[str, Any], timeout: float = 90) -> tuple[str, str]:
    """Runs a pod to completion; its phase (Succeeded or Failed) and its log."""
    name = pod["metadata"]["name"]
    _apply(cluster, namespace, pod)

    def finished() -> str | None:
        phase: str = cluster.get_json("pod", name, namespace=namespace)["status"].get("phase", "")
        return phase if phase in ("Succeeded", "Failed") else None

    phase: str = wait_until(finished, timeout=timeout, interval=1, what=f"pod {name} finished")
    return phase, cluster.kubectl("logs", name, namespace=namespace).stdout


def test_a_pod_reaches_the_api_server_with_its_service_account_token(
    cluster: Cluster, node: dict[str, str], restricted: str
) -> None:
    """As on any cluster: the `kubernetes` Service (its ClusterIP from the pod's environment, and its DNS name
    through CoreDNS) leads to the apiserver, whose certificate the pod's CA bundle verifies, and the ServiceAccount
    token is accepted."""
    command = ["python3", "-c", IN_CLUSTER_CLIENT, "https://kubernetes.default.svc"]
    pod = _restricted_pod("in-cluster-client", node["NODE_RUNTIME_IMAGE"], command)
    phase, log = _run_pod(cluster, restricted, pod)
    print(f"[node] in-cluster client: {phase}: {log}")
    assert phase == "Succeeded", log
    user = f"system:serviceaccount:{restricted}:default"
    assert f"https://10.0.0.1:443 {user}" in log
    assert f"https://kubernetes.default.svc {user}" in log


FAILING_HANDLER = """
import random

import numpy as np


def preprocess(payload):
    if random.random() < 0.5:
        raise RuntimeError("simulated bug in the new pre-processing")
    return {"input": np.asarray(payload["instances"], dtype=np.float32)}
"""


def test_canary_analysis_of_real_pods_rolls_back_a_failing_handler(
    cluster: Cluster, node: dict[str, str], operator: OperatorProcess, restricted: str, models: Models
) -> None:
    """The operator judges a canary from the real pods' own metrics, scraped by Prometheus, and rolls it back."""
    name = "judged"
    interval, failure_limit = 10, 2
    canary = {
        "steps": [{"weight": 50, "pauseSeconds": 300}],
        "trafficRouting": "replicas",
        "analysis": {"intervalSeconds": interval, "maxErrorRate": 0.05, "failureLimit": failure_limit},
    }
    spec: dict[str, Any] = {
        "autoscaling": {"minReplicas": 1, "maxReplicas": 1},
        "runtime": {"resources": {"cpu": "250m", "memory": "384Mi"}},
        "rollout": {"strategy": "Canary", "canary": canary},
    }
    v1 = models.put("v1", 0.0)
    # Prometheus finds the pods itself (kubernetes_sd_configs, role pod: tests/e2e/cluster/metrics.sh)
    _apply(cluster, restricted, _manifest(name, v1, node, **spec))
    _wait_ready(cluster, restricted, name)
    _judge_canary(cluster, operator, restricted, name, node, models, spec, v1, interval * (failure_limit + 1))


def _prometheus(cluster: Cluster, query: str) -> list[dict[str, Any]]:
    url = f"{cluster.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=10) as response:
        result: list[dict[str, Any]] = json.load(response).get("data", {}).get("result", [])
    return result


def _cold_start_evidence(cluster: Cluster, operator: OperatorProcess, namespace: str, name: str) -> str:
    """What status.coldStart comes from, for a failure message: the status, the series Prometheus has of the model
    (the runtime sets ``modelapi_artifact_source`` once its start is over), whether it scrapes the namespace's pods,
    and what the operator logged of its reads."""
    status = cluster.get_json("modelapi", name, namespace=namespace).get("status", {})
    conditions = [(c.get("type"), c.get("status"), c.get("reason")) for c in status.get("conditions", [])]
    revisions = [(r.get("name"), r.get("role"), r.get("readyReplicas")) for r in status.get("revisions", [])]
    try:
        sources = [
            s["metric"] | {"value": s["value"][1]}
            for s in _prometheus(cluster, f'modelapi_artifact_source{{namespace="{namespace}",model="{name}"}}')
        ]
        up = [
            s["metric"].get("pod", "?") + "=" + s["value"][1]
            for s in _prometheus(cluster, f'up{{namespace="{namespace}"}}')
        ]
    except (OSError, ValueError) as error:
        sources, up = [f"Prometheus did not answer: {error}"], []
    logged = [
        line for line in operator.log_path.read_text(errors="replace").splitlines() if f"{namespace}/{name}" in line
    ]
    return (
        f"conditions {conditions}; revisions {revisions}; coldStart {status.get('coldStart')}; "
        f"Prometheus modelapi_artifact_source {sources}; up {up}; the operator's log lines of it: {logged[-15:]}"
    )


def _judge_canary(
    cluster: Cluster,
    operator: OperatorProcess,
    restricted: str,
    name: str,
    node: dict[str, str],
    models: Models,
    spec: dict[str, Any],
    v1: str,
    analysis_s: int,
) -> None:
    url = _predict_url(cluster, restricted, name)

    def cold_start() -> dict[str, Any] | None:  # read by the operator from the pod's metrics in Prometheus
        status = cluster.get_json("modelapi", name, namespace=restricted).get("status", {})
        timings: dict[str, Any] | None = status.get("coldStart")
        return timings if timings and timings.get("downloadSeconds") is not None else None

    try:
        timings = wait_until(cold_start, timeout=90, interval=2, what="status.coldStart from Prometheus")
    except AssertionError as error:  # say where the chain stopped: the runtime, Prometheus or the operator
        raise AssertionError(f"{error}: {_cold_start_evidence(cluster, operator, restricted, name)}") from None
    print(f"[node] cold start of a real pod, from Prometheus: {timings}")

    v2 = models.put("v2", 5.0)
    handler = models.put_bytes("v2/handler.py", FAILING_HANDLER.encode())
    failing = _manifest(name, v2, node, **spec)
    failing["spec"]["model"]["handler"] = handler
    load = ConstantLoad(url, {"instances": FLOWERS}, models.classify, rate=40, keepalive=False)
    with load:
        _apply(cluster, restricted, failing)
        condition = _wait_degraded(cluster, restricted, name, "RolloutAborted", timeout=120 + analysis_s)
        aborted_at = load.elapsed_s()
        threading.Event().wait(8)  # the canary's pod leaves the Service; the load goes on
    report = load.report
    print(f"[node] canary with a failing handler: {condition['message']}; {report.summary()}")
    status = cluster.get_json("modelapi", name, namespace=restricted)["status"]
    assert status["lastFailure"]["reason"] == "RolloutAborted"
    assert "error rate" in status["lastFailure"]["message"]
    assert [r["modelUri"] for r in status["revisions"] if r["role"] == "stable"] == [v1]
    assert report.failures_by_kind().get("HTTP 500", 0) > 0, report.summary()  # the canary was really judged
    assert set(report.failures_by_kind()) == {"HTTP 500"}, report.summary()  # and nothing else failed
    late = [o for o in report.outcomes if o.started_s >= aborted_at + 5]
    assert late, report.summary()
    assert all(o.ok and o.detail == "v1" for o in late), report.summary()  # only the stable revision serves


def test_a_model_that_fails_to_load_surfaces_model_load_failed(
    cluster: Cluster, node: dict[str, str], operator: OperatorProcess, restricted: str, models: Models
) -> None:
    uri = models.put_bytes("broken/model.onnx", b"this is not an ONNX model" * 40)
    _apply(cluster, restricted, _manifest("broken", uri, node, autoscaling={"minReplicas": 1, "maxReplicas": 1}))
    condition = _wait_degraded(cluster, restricted, "broken", "ModelLoadFailed")
    print(f"[node] broken model: Degraded {condition['reason']}: {condition['message']}")
    assert "model" in condition["message"].lower()
    _pods_on_node(cluster, restricted, node["NODE_NAME"])
    operator.assert_alive()


def test_an_oom_killed_container_surfaces_its_reason(
    cluster: Cluster, node: dict[str, str], operator: OperatorProcess, restricted: str, models: Models
) -> None:
    spec = {
        "autoscaling": {"minReplicas": 1, "maxReplicas": 1},
        "runtime": {"resources": {"cpu": "250m", "memory": "48Mi"}},
    }
    _apply(cluster, restricted, _manifest("tiny-memory", models.put("v1", 0.0), node, **spec))
    condition = _wait_degraded(cluster, restricted, "tiny-memory", "CrashLooping")
    print(f"[node] 48Mi limit: Degraded {condition['reason']}: {condition['message']}")
    assert "OOMKilled" in condition["message"]
    assert "spec.runtime.resources.memory" in condition["message"]
    pods = _pods_on_node(cluster, restricted, node["NODE_NAME"])
    terminated = [
        (s.get("lastState") or {}).get("terminated") or (s.get("state") or {}).get("terminated") or {}
        for p in pods
        for s in p["status"].get("containerStatuses", [])
    ]
    assert any(t.get("reason") == "OOMKilled" for t in terminated), terminated


def test_fault_s3_outage_during_a_rollout_keeps_the_old_revision_serving_and_completes_after(
    cluster: Cluster, node: dict[str, str], operator: OperatorProcess, restricted: str, models: Models
) -> None:
    """Issue 9, item 4: the pods' S3 gateway goes down as a new model is rolled out."""
    name = "outage"
    _apply(cluster, restricted, _manifest(name, models.put("v1", 0.0), node))
    _wait_ready(cluster, restricted, name)
    url = _predict_url(cluster, restricted, name)
    v2 = models.put("v2", 5.0)
    outage_s = 75

    def outage() -> None:  # stops the gateway, waits, starts it again with the same command line
        cluster_sh = ROOT / "tests" / "e2e" / "cluster" / "cluster.sh"
        env = {**cluster.subprocess_env(), "MODELAPI_CLUSTER_DIR": cluster.env["MODELAPI_CLUSTER_DIR"]}
        subprocess.run(["bash", str(cluster_sh), "restart", "versitygw-node", str(outage_s)], env=env, check=True)

    load = ConstantLoad(url, {"instances": FLOWERS}, models.classify, rate=50, keepalive=True)
    with load:
        s3_down = threading.Thread(target=outage, daemon=True)
        s3_down.start()
        wait_until(lambda: not _s3_answers(node), timeout=20, what="the pods' S3 gateway down")
        _apply(cluster, restricted, _manifest(name, v2, node))
        condition = _wait_degraded(cluster, restricted, name, "ArtifactUnavailable", timeout=outage_s)
        print(f"[node] S3 down during the rollout: Degraded {condition['reason']}: {condition['message']}")
        during = load.report.shares()
        s3_down.join(timeout=outage_s + 120)
        assert not s3_down.is_alive(), "the S3 gateway did not come back"
        body = _wait_ready(cluster, restricted, name, timeout=300)  # CrashLoopBackOff retries, then the pull works
    report = load.report
    print(f"[node] S3 outage of {outage_s} s during a rollout: {report.summary()}")
    assert set(during) == {"v1"}, during  # the old revision kept serving while the new one could not start
    assert [r["modelUri"] for r in body["status"]["revisions"] if r["role"] == "stable"] == [v2]
    assert _condition(body, "Degraded").get("status") == "False", body["status"]
    assert not report.failed, report.summary()
    assert "AWS_SECRET_ACCESS_KEY" not in condition["message"]
    assert cluster.env["AWS_SECRET_ACCESS_KEY"] not in condition["message"]


def _s3_answers(node: dict[str, str]) -> bool:
    try:
        with urllib.request.urlopen(node["NODE_S3_ENDPOINT_URL"], timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # an S3 error answer (403 without a signature) is still an answer
    except OSError:
        return False


def test_make_demo_installs_from_the_registry_runs_the_operator_in_a_pod_and_serves_from_a_real_pod(
    cluster: Cluster, node: dict[str, str], tmp_path: Path
) -> None:
    """make demo in real-node mode installs modelapi as a user does: the chart pushed to the cluster's registry and
    installed from it (helm install oci://...), the operator a pod under the chart's ServiceAccount that reaches the
    API server through the `kubernetes` Service, every image pulled from the registry, a prediction from a pod."""
    demo_dir = tmp_path / "demo"
    registry = node["NODE_REGISTRY"]
    try:
        proc = run_demo(cluster, demo_dir, "auto", timeout=600)  # auto: the running cluster's mode
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
        out = proc.stdout
        print(out[-3000:])
        assert "==> mode: real node" in out
        assert "done (mode: real node)" in out
        assert f"Pushed: {registry}/charts/modelapi:" in out + proc.stderr  # helm push's own report
        assert node["NODE_NAME"] in out  # kubectl get pod -o wide: the pods run on the real node
        assert '"predictions":[[' in out
        assert '"model_name":"iris"' in out
        assert cluster.env["AWS_SECRET_ACCESS_KEY"] not in out, "the demo never prints a credential"
        assert not (demo_dir / "operator.pid").exists(), "no local operator process in real-node mode"

        releases = json.loads(
            subprocess.run(
                [cluster.env["HELM"], "list", "-n", "modelapi-system", "-o", "json"],
                env=cluster.subprocess_env(),
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        version = yaml.safe_load((ROOT / "charts" / "modelapi" / "Chart.yaml").read_text())["version"]
        installed = [(r["name"], r["chart"], r["status"]) for r in releases]
        assert installed == [("modelapi", f"modelapi-{version}", "deployed")]
        operators = cluster.get_json(
            "pod", "-l", "app.kubernetes.io/name=modelapi-operator", namespace="modelapi-system"
        )["items"]
        assert len(operators) == 1, [pod["metadata"]["name"] for pod in operators]
        operator = operators[0]
        assert operator["status"]["phase"] == "Running"
        assert operator["spec"]["serviceAccountName"] == "modelapi-operator"
        assert operator["spec"]["nodeName"] == node["NODE_NAME"]
        (status,) = operator["status"]["containerStatuses"]
        assert status["ready"] is True, status
        assert status["restartCount"] == 0, status
        # the image the chart set; the container's status may name it by another tag of the same image (the CRI
        # reports one of the image's tags: the quickstart test pushes the same operator image as :<version> too),
        # so the status is checked by repository and by digest (imageID, below)
        assert operator["spec"]["containers"][0]["image"] == node["NODE_OPERATOR_IMAGE"]
        assert status["image"].rsplit(":", 1)[0] == node["NODE_OPERATOR_IMAGE"].rsplit(":", 1)[0], status["image"]
        # the chart's runtime images are the registry's: runtime for CPU models, runtime-gpu for GPU models
        env = {item["name"]: item.get("value") for item in operator["spec"]["containers"][0].get("env", [])}
        assert env["MODELAPI_OPERATOR_CPU_IMAGE"] == node["NODE_RUNTIME_IMAGE"]
        assert env["MODELAPI_OPERATOR_GPU_IMAGE"] == node["NODE_RUNTIME_GPU_IMAGE"]
        assert status["imageID"].startswith(f"{registry}/modelapi/operator@sha256:"), status["imageID"]
        # the operator reached the API server from its pod: it made the model's Deployment, whose pod serves
        model_pods = cluster.get_json("pod", "-l", "serving.modelapi.io/name=iris", namespace=demo_namespace(demo_dir))
        assert model_pods["items"]
        for pod in model_pods["items"]:
            (runtime,) = pod["status"]["containerStatuses"]
            assert runtime["imageID"].startswith(f"{registry}/modelapi/runtime@sha256:"), runtime["imageID"]
        # containerd holds no image that did not come from the registry (nothing imported, nothing from elsewhere)
        images = subprocess.run(
            [f"{node['NODE_BIN']}/crictl", "--runtime-endpoint", node["CRI_ENDPOINT"], "images", "-o", "json"],
            capture_output=True,
            text=True,
            check=True,
        )
        tags = [tag for image in json.loads(images.stdout)["images"] for tag in image.get("repoTags") or []]
        assert tags
        assert all(tag.startswith(f"{registry}/") for tag in tags), tags
    finally:
        down = run_demo(cluster, demo_dir, "auto", "down", timeout=180)
    assert down.returncode == 0, down.stderr
    assert not demo_dir.exists()
