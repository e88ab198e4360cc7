"""Canaries end to end: the operator with a real Prometheus, real runtime processes serving real ONNX models
pulled from the local S3, and load sent by the test.

kwok pods run nothing and have no network, so for each revision the test starts the runtime as a local process
with the environment of that revision's Deployment (see processes.RuntimeProcess) and splits its load between
stable and canary by the weight the operator reports: the operator's traffic objects (HTTPRoute weights, replica
counts) are checked against the API server, the analysis reads the runtimes' own metrics from Prometheus.
"""

from __future__ import annotations

import hashlib
import json
import random
import runpy
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from onnx import numpy_helper

from .conftest import Cluster, load_scaled, wait_until
from .processes import OperatorProcess, RuntimeProcess

ROOT = Path(__file__).resolve().parents[2]
FAILING_HANDLER = """
import random

import numpy as np


def preprocess(payload):
    if random.random() < 0.5:
        raise RuntimeError("simulated bug in the new pre-processing")
    return {"input": np.asarray(payload["instances"], dtype=np.float32)}
"""
FLOWERS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


@pytest.fixture(scope="module")
def operator(cluster: Cluster) -> Iterator[OperatorProcess]:
    process = OperatorProcess(
        cluster,
        {
            "MODELAPI_OPERATOR_RESYNC_SECONDS": "5",
            "MODELAPI_OPERATOR_CANARY_TICK_SECONDS": "1",
            "MODELAPI_OPERATOR_PROMETHEUS_URL": cluster.prometheus_url,
        },
    )
    process.start()
    yield process
    process.stop()


def _model_bytes(bias_shift: float) -> bytes:
    model = runpy.run_path(str(ROOT / "examples" / "iris" / "build_model.py"))["build_iris_model"]()
    for index, tensor in enumerate(model.graph.initializer):
        if tensor.name == "bias":
            values = numpy_helper.to_array(tensor) + bias_shift
            model.graph.initializer[index].CopyFrom(numpy_helper.from_array(values, name="bias"))
    serialized: bytes = model.SerializeToString()
    return serialized


class Artifacts:
    def __init__(self, cluster: Cluster, s3: Any, namespace: str) -> None:
        self.cluster, self.s3, self.prefix = cluster, s3, f"e2e/{namespace}"

    def put(self, key: str, body: bytes) -> str:
        self.s3.put_object(Bucket=self.cluster.s3_bucket, Key=f"{self.prefix}/{key}", Body=body)
        return f"s3://{self.cluster.s3_bucket}/{self.prefix}/{key}"


class Load:
    """Requests at a bounded rate, split between stable and canary by the weight the operator reports."""

    def __init__(self, model: str, stable: RuntimeProcess) -> None:
        self.model, self.stable = model, stable
        self.canary: RuntimeProcess | None = None
        self.weight = 0
        self.results: Counter[tuple[str, int]] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        deadline = time.monotonic() + 300  # bounded: never outlives a test
        while not self._stop.is_set() and time.monotonic() < deadline:
            canary = self.canary
            target = canary if canary is not None and random.random() * 100 < self.weight else self.stable
            role = "canary" if target is canary else "stable"
            self.results[(role, target.predict(self.model, FLOWERS))] += 1
            time.sleep(0.02)

    def stable_statuses(self) -> dict[int, int]:
        return {code: n for (role, code), n in self.results.items() if role == "stable"}


def _manifest(
    name: str, uri: str, cluster: Cluster, canary: dict[str, Any], handler: str | None = None, **spec: Any
) -> dict[str, Any]:
    model: dict[str, Any] = {"uri": uri}
    if handler:
        model["handler"] = handler
    return {
        "apiVersion": "serving.modelapi.io/v1alpha1",
        "kind": "ModelAPI",
        "metadata": {"name": name},
        "spec": {
            "model": model,
            "storage": {"endpoint": cluster.s3_endpoint_url, "region": "us-east-1", "credentialsSecret": "s3-creds"},
            "runtime": {"resources": {"cpu": "500m", "memory": "512Mi"}},
            "autoscaling": {"minReplicas": 2, "maxReplicas": 4},
            "rollout": {"strategy": "Canary", "canary": canary},
            **spec,
        },
    }


def _apply(cluster: Cluster, namespace: str, manifest: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-f", "-", namespace=namespace, input=yaml.safe_dump(manifest))


def _status(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    status: dict[str, Any] = cluster.get_json("modelapi", name, namespace=namespace).get("status", {})
    return status


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == kind), {})


def _stable_uri(status: dict[str, Any]) -> str:
    """The model URI of the stable revision ("" while there is none)."""
    return next((r["modelUri"] for r in status.get("revisions", []) if r["role"] == "stable"), "")


def _deployment_with_role(cluster: Cluster, namespace: str, role: str) -> dict[str, Any] | None:
    for item in cluster.get_json("deployments", namespace=namespace)["items"]:
        if item["metadata"].get("annotations", {}).get("serving.modelapi.io/role") == role:
            return item  # type: ignore[no-any-return]
    return None


def _wait_ready(cluster: Cluster, namespace: str, name: str, timeout: float = 90) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        body = cluster.get_json("modelapi", name, namespace=namespace)
        condition = _condition(body.get("status", {}), "Ready")
        fresh = condition.get("observedGeneration") == body["metadata"]["generation"]
        return body["status"] if fresh and condition.get("status") == "True" else None

    result: dict[str, Any] = wait_until(ready, timeout=timeout, interval=1, what=f"{name} Ready")
    return result


@pytest.fixture
def secret(cluster: Cluster, namespace: str) -> dict[str, str]:
    values = {key: cluster.env[key] for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    cluster.kubectl(
        "create",
        "secret",
        "generic",
        "s3-creds",
        *[f"--from-literal={k}={v}" for k, v in values.items()],
        namespace=namespace,
    )
    return values


def _start_stable(cluster: Cluster, namespace: str, tmp_path: Path, secret: dict[str, str]) -> RuntimeProcess:
    stable = _deployment_with_role(cluster, namespace, "stable")
    assert stable is not None
    return RuntimeProcess(cluster, stable, tmp_path / "stable", secret).start()


def _follow_canary(
    cluster: Cluster,
    namespace: str,
    name: str,
    load: Load,
    tmp_path: Path,
    secret: dict[str, str],
    until: Any,
    timeout: float,
    started: list[RuntimeProcess],
) -> dict[str, Any]:
    """Keep the load's weight in step with the operator's status (starting the canary runtime when its
    Deployment appears) until ``until(status)`` holds."""
    deadline = time.monotonic() + timeout
    steps_seen: set[int] = set()
    while time.monotonic() < deadline:
        status = _status(cluster, namespace, name)
        canary = status.get("canary")
        if canary is not None:
            steps_seen.add(canary["step"])
            if load.canary is None:
                deployment = _deployment_with_role(cluster, namespace, "canary")
                if deployment is not None:
                    process = RuntimeProcess(cluster, deployment, tmp_path / "canary", secret).start()
                    started.append(process)
                    load.canary = process
            load.weight = canary["weight"]
        if until(status):
            status["_steps_seen"] = sorted(steps_seen)
            return status
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s; last status: {status}")


def test_canary_healthy_promotes_through_every_step(
    cluster: Cluster, namespace: str, s3: Any, secret: dict[str, str], operator: OperatorProcess, tmp_path: Path
) -> None:
    artifacts = Artifacts(cluster, s3, namespace)
    v1, v2 = (
        artifacts.put("iris/1/model.onnx", _model_bytes(0.0)),
        artifacts.put("iris/2/model.onnx", _model_bytes(0.1)),
    )
    steps = {"steps": [{"weight": 25, "pauseSeconds": 5}, {"weight": 50, "pauseSeconds": 5}]}
    analysis = {"analysis": {"intervalSeconds": 10, "maxErrorRate": 0.05, "maxLatencyP99Ms": 2000, "failureLimit": 2}}
    _apply(cluster, namespace, _manifest("iris", v1, cluster, {**steps, **analysis}))
    _wait_ready(cluster, namespace, "iris")
    started = [_start_stable(cluster, namespace, tmp_path, secret)]
    try:
        with Load("iris", started[0]) as load:
            time.sleep(3)
            _apply(cluster, namespace, _manifest("iris", v2, cluster, {**steps, **analysis}))
            final = _follow_canary(
                cluster,
                namespace,
                "iris",
                load,
                tmp_path,
                secret,
                until=lambda s: _condition(s, "Ready").get("status") == "True" and _stable_uri(s) == v2,
                timeout=180,
                started=started,
            )
        assert final["_steps_seen"] == [0, 1]
        roles = {r["role"]: r for r in final["revisions"]}
        assert roles["stable"]["modelUri"] == v2
        assert roles["lastKnownGood"]["modelUri"] == v1
        assert roles["lastKnownGood"]["readyReplicas"] == 0
        assert "canary" not in final
        assert load.results[("canary", 200)] > 0, "the canary served traffic during its steps"
        assert set(load.stable_statuses()) == {200}
        reasons = [e["reason"] for e in cluster.get_json("events", namespace=namespace)["items"]]
        assert reasons.count("CanaryStep") >= 2
        assert "CanaryPromoted" in reasons
        # The promoted revision's cold start, from its runtime's metrics in Prometheus.
        cold = wait_until(
            lambda: (
                _status(cluster, namespace, "iris").get("coldStart", {}).get("revision")
                == roles["stable"]["name"].split("-", 1)[1]
                and _status(cluster, namespace, "iris")["coldStart"]
            ),
            timeout=30,
            what="status.coldStart",
        )
        assert cold["loadSeconds"] > 0
        assert cold["downloadSeconds"] >= 0
    finally:
        for process in started:
            process.stop()


def test_canary_with_failing_handler_is_rolled_back_while_stable_keeps_serving(
    cluster: Cluster, namespace: str, s3: Any, secret: dict[str, str], operator: OperatorProcess, tmp_path: Path
) -> None:
    artifacts = Artifacts(cluster, s3, namespace)
    v1 = artifacts.put("iris/1/model.onnx", _model_bytes(0.0))
    v2 = artifacts.put("iris/2/model.onnx", _model_bytes(0.1))
    handler = artifacts.put("iris/2/handler.py", FAILING_HANDLER.encode())
    interval, failure_limit = 10, 2
    canary = {
        "steps": [{"weight": 50, "pauseSeconds": 60}],
        "analysis": {"intervalSeconds": interval, "maxErrorRate": 0.05, "failureLimit": failure_limit},
    }
    _apply(cluster, namespace, _manifest("iris", v1, cluster, canary))
    _wait_ready(cluster, namespace, "iris")
    started = [_start_stable(cluster, namespace, tmp_path, secret)]
    try:
        with Load("iris", started[0]) as load:
            _apply(cluster, namespace, _manifest("iris", v2, cluster, canary, handler=handler))
            began = time.monotonic()
            final = _follow_canary(
                cluster,
                namespace,
                "iris",
                load,
                tmp_path,
                secret,
                until=lambda s: _condition(s, "Degraded").get("reason") == "RolloutAborted",
                timeout=150,
                started=started,
            )
            elapsed = time.monotonic() - began
        # failureLimit intervals of analysis, after the canary's first interval of traffic, plus scrape/tick slack.
        assert elapsed < (failure_limit + 1) * interval + 30
        assert final["lastFailure"]["reason"] == "RolloutAborted"
        assert final["lastFailure"]["revision"].startswith("iris-")
        assert "error rate" in final["lastFailure"]["message"]
        assert load.results[("canary", 500)] > 0
        assert set(load.stable_statuses()) == {200}, f"stable must answer every request: {load.stable_statuses()}"
        canary_deployment = _deployment_with_role(cluster, namespace, "canary")
        assert canary_deployment is not None
        assert canary_deployment["spec"]["replicas"] == 0
        stable = next(r for r in final["revisions"] if r["role"] == "stable")
        assert stable["modelUri"] == v1
        assert stable["weight"] == 100

        # The same failed spec applied again does not restart the canary.
        _apply(cluster, namespace, _manifest("iris", v2, cluster, canary, handler=handler))
        time.sleep(5)
        again = _status(cluster, namespace, "iris")
        assert _condition(again, "Degraded")["reason"] == "RolloutAborted"
        assert _deployment_with_role(cluster, namespace, "canary")["spec"]["replicas"] == 0  # type: ignore[index]
    finally:
        for process in started:
            process.stop()


def test_canary_gateway_api_weights_follow_the_steps(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    canary = {
        # pauses long enough that a loaded machine still samples every step
        "steps": [{"weight": 20, "pauseSeconds": 8}, {"weight": 60, "pauseSeconds": 8}],
        "trafficRouting": "gatewayAPI",
        "gateway": {"name": "public", "namespace": "gateway", "sectionName": "http"},
    }
    _apply(cluster, namespace, _manifest("fraud", "s3://models/fraud/1/model.onnx", cluster, canary))
    _wait_ready(cluster, namespace, "fraud")
    route = cluster.get_json("httproute", "fraud", namespace=namespace)
    assert [(b["name"], b["weight"]) for b in route["spec"]["rules"][0]["backendRefs"]] == [("fraud-stable", 100)]
    _apply(cluster, namespace, _manifest("fraud", "s3://models/fraud/2/model.onnx", cluster, canary))

    seen: set[tuple[tuple[str, int], ...]] = set()

    def promoted() -> bool:
        backends = cluster.get_json("httproute", "fraud", namespace=namespace)["spec"]["rules"][0]["backendRefs"]
        seen.add(tuple((b["name"], b["weight"]) for b in backends))
        status = _status(cluster, namespace, "fraud")
        return _condition(status, "Ready").get("status") == "True" and _stable_uri(status).endswith("2/model.onnx")

    wait_until(promoted, timeout=120, interval=0.5, what="canary promoted")
    assert (("fraud-stable", 80), ("fraud-canary", 20)) in seen, seen
    assert (("fraud-stable", 40), ("fraud-canary", 60)) in seen, seen
    final = cluster.get_json("httproute", "fraud", namespace=namespace)["spec"]["rules"][0]["backendRefs"]
    assert [(b["name"], b["weight"]) for b in final] == [("fraud-stable", 100)]
    stable_service = cluster.get_json("service", "fraud-stable", namespace=namespace)
    new_revision = next(r["name"] for r in _status(cluster, namespace, "fraud")["revisions"] if r["role"] == "stable")
    assert stable_service["spec"]["selector"]["serving.modelapi.io/revision"] == new_revision.split("-", 1)[1]


def test_canary_replica_ratio_sizes_the_canary_by_weight(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    # A step's pause runs from the step's start, and the canary's weight is the share of ready pods: each pause must
    # outlast the canary's pods starting (on kwok, seconds; many more on a loaded machine), or the step ends the moment
    # they are ready and no status shows the canary at that weight.
    pause = round(load_scaled(4))
    canary = {
        "steps": [{"weight": 25, "pauseSeconds": pause}, {"weight": 50, "pauseSeconds": pause}],
        "trafficRouting": "replicas",
    }
    manifest = _manifest(
        "mlp", "s3://models/mlp/1/model.onnx", cluster, canary, autoscaling={"minReplicas": 3, "maxReplicas": 5}
    )
    _apply(cluster, namespace, manifest)
    _wait_ready(cluster, namespace, "mlp")
    manifest["spec"]["model"]["uri"] = "s3://models/mlp/2/model.onnx"
    _apply(cluster, namespace, manifest)
    observed: set[tuple[int, int]] = set()

    def done() -> bool:
        # the ModelAPI and its Deployments in one request, so a sample is one moment (and quick on a loaded machine)
        items = cluster.get_json("modelapis,deployments", namespace=namespace)["items"]
        status = next(i for i in items if i["kind"] == "ModelAPI" and i["metadata"]["name"] == "mlp").get("status", {})
        canary_status = status.get("canary")
        deployment = next(
            (
                i
                for i in items
                if i["kind"] == "Deployment"
                and i["metadata"].get("annotations", {}).get("serving.modelapi.io/role") == "canary"
            ),
            None,
        )
        if canary_status and deployment is not None and deployment["status"].get("readyReplicas"):
            observed.add((canary_status["weight"], deployment["spec"]["replicas"]))
        return _condition(status, "Ready").get("status") == "True" and _stable_uri(status).endswith("2/model.onnx")

    wait_until(done, timeout=120 + 2 * pause, interval=0.5, what="replica-ratio canary promoted")
    assert (25, 1) in observed, observed  # 1 canary next to 3 stable replicas: 25 % of the pods
    assert (50, 3) in observed, observed


def test_canary_resumes_at_its_step_after_an_operator_restart(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    canary = {"steps": [{"weight": 10, "pauseSeconds": 2}, {"weight": 50, "pauseSeconds": 15}]}
    manifest = _manifest("iris", "s3://models/iris/1/model.onnx", cluster, canary)
    _apply(cluster, namespace, manifest)
    _wait_ready(cluster, namespace, "iris")
    manifest["spec"]["model"]["uri"] = "s3://models/iris/2/model.onnx"
    _apply(cluster, namespace, manifest)
    wait_until(
        lambda: (_status(cluster, namespace, "iris").get("canary") or {}).get("step") == 1, timeout=60, what="step 2"
    )
    operator.process.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
    operator.process.wait(timeout=30)  # type: ignore[union-attr]
    time.sleep(3)
    operator.start()
    steps: list[int] = []

    def promoted() -> bool:
        status = _status(cluster, namespace, "iris")
        if status.get("canary"):
            steps.append(status["canary"]["step"])
        return _condition(status, "Ready").get("status") == "True" and _stable_uri(status).endswith("2/model.onnx")

    wait_until(promoted, timeout=90, interval=0.5, what="promotion after the restart")
    assert 0 not in steps, "the canary must not start over"


def test_canary_rollback_annotation_restores_last_known_good(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    canary = {"steps": [{"weight": 50, "pauseSeconds": 1}]}
    manifest = _manifest("iris", "s3://models/iris/1/model.onnx", cluster, canary)
    _apply(cluster, namespace, manifest)
    _wait_ready(cluster, namespace, "iris")
    manifest["spec"]["model"]["uri"] = "s3://models/iris/2/model.onnx"
    _apply(cluster, namespace, manifest)
    wait_until(
        lambda: (
            _stable_uri(_status(cluster, namespace, "iris")).endswith("2/model.onnx")
            and _condition(_status(cluster, namespace, "iris"), "Ready").get("status") == "True"
        ),
        timeout=60,
        what="v2 promoted",
    )
    cluster.kubectl("annotate", "modelapi", "iris", "serving.modelapi.io/rollback=true", namespace=namespace)

    def rolled_back() -> dict[str, Any] | None:
        status = _status(cluster, namespace, "iris")
        return status if _condition(status, "Degraded").get("reason") == "RolledBack" else None

    status = wait_until(rolled_back, timeout=60, what="rolled back")
    stable = next(r for r in status["revisions"] if r["role"] == "stable")
    assert stable["modelUri"].endswith("1/model.onnx")
    annotations = cluster.get_json("modelapi", "iris", namespace=namespace)["metadata"].get("annotations", {})
    assert "serving.modelapi.io/rollback" not in annotations, "the request is consumed"
    wait_until(
        lambda: (
            cluster.get_json("hpa", "iris", namespace=namespace)["spec"]["scaleTargetRef"]["name"] == stable["name"]
        ),
        timeout=30,
        what="HPA on the restored revision",
    )


def test_a_new_revision_of_a_measured_artifact_gets_a_model_volume_sized_from_it(
    cluster: Cluster, namespace: str, s3: Any, secret: dict[str, str], operator: OperatorProcess, tmp_path: Path
) -> None:
    """The runtime reports its artifact's size (modelapi_artifact_bytes), Prometheus scrapes it, the operator records
    it in status.coldStart; a runtime change (same sha256) then creates a revision whose model volume and
    ephemeral-storage request are that size plus 64Mi of headroom instead of cacheSize."""
    artifacts = Artifacts(cluster, s3, namespace)
    body = _model_bytes(0.0)
    manifest = _manifest("iris", artifacts.put("sized/model.onnx", body), cluster, {"steps": [{"weight": 50}]})
    manifest["spec"]["model"]["sha256"] = hashlib.sha256(body).hexdigest()
    manifest["spec"]["rollout"] = {"strategy": "RollingUpdate"}
    manifest["spec"]["autoscaling"] = {"minReplicas": 1, "maxReplicas": 2}
    _apply(cluster, namespace, manifest)
    _wait_ready(cluster, namespace, "iris")
    first = _deployment_with_role(cluster, namespace, "stable")
    assert first is not None
    volumes = first["spec"]["template"]["spec"]["volumes"]
    assert next(v for v in volumes if v["name"] == "models")["emptyDir"]["sizeLimit"] == "5Gi", "nothing known yet"
    runtime = RuntimeProcess(cluster, first, tmp_path / "first", secret).start()
    try:
        wait_until(
            lambda: (_status(cluster, namespace, "iris").get("coldStart") or {}).get("artifactBytes") == len(body),
            timeout=90,
            what="status.coldStart.artifactBytes from the runtime's metrics",
        )
        manifest["spec"]["runtime"]["threads"] = 2
        _apply(cluster, namespace, manifest)

        def sized() -> dict[str, Any] | None:
            for item in cluster.get_json("deployments", namespace=namespace)["items"]:
                if "serving.modelapi.io/artifact-bytes" in (item["metadata"].get("annotations") or {}):
                    return item  # type: ignore[no-any-return]
            return None

        second = wait_until(sized, timeout=60, what="the new revision created with the artifact's size")
    finally:
        runtime.stop()
    assert second["metadata"]["annotations"]["serving.modelapi.io/artifact-bytes"] == str(len(body))
    pod = second["spec"]["template"]["spec"]
    assert next(v for v in pod["volumes"] if v["name"] == "models")["emptyDir"]["sizeLimit"] == "65Mi"
    assert pod["containers"][0]["resources"]["requests"]["ephemeral-storage"] == "577Mi"
    _wait_ready(cluster, namespace, "iris")


def _arms(cluster: Cluster, namespace: str, name: str) -> dict[str, str] | None:
    """The data of the ModelAPI's ``<name>-arms`` ConfigMap, or None when there is none."""
    proc = cluster.kubectl("get", "configmap", f"{name}-arms", "-o", "json", namespace=namespace, check=False)
    if proc.returncode != 0:
        assert "NotFound" in proc.stderr, proc.stderr
        return None
    data: dict[str, str] = json.loads(proc.stdout).get("data") or {}
    return data


def test_the_arms_config_map_follows_the_canary_and_goes_with_the_prediction_log(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    """spec.monitoring.predictionLog: the operator keeps ``iris-arms`` (revision -> role) for the records' arm; a
    promotion flips the roles, the pods mount it, and it is deleted when the prediction log is removed."""
    canary = {"steps": [{"weight": 50, "pauseSeconds": round(load_scaled(4))}]}
    logged = {"monitoring": {"predictionLog": {"sampleRate": 10}}}
    manifest = _manifest("iris", "s3://models/iris/1/model.onnx", cluster, canary, **logged)
    _apply(cluster, namespace, manifest)
    first = next(r["name"] for r in _wait_ready(cluster, namespace, "iris")["revisions"] if r["role"] == "stable")
    v1 = first.removeprefix("iris-")
    wait_until(lambda: _arms(cluster, namespace, "iris") == {v1: "stable"}, timeout=30, what="iris-arms: v1 stable")
    template = cluster.get_json("deployment", first, namespace=namespace)["spec"]["template"]["spec"]
    arms_volume = next(volume for volume in template["volumes"] if volume["name"] == "arms")
    assert (arms_volume["configMap"]["name"], arms_volume["configMap"]["optional"]) == ("iris-arms", True)

    manifest["spec"]["model"]["uri"] = "s3://models/iris/2/model.onnx"
    _apply(cluster, namespace, manifest)
    seen: list[dict[str, str] | None] = []

    def promoted() -> bool:
        seen.append(_arms(cluster, namespace, "iris"))
        status = _status(cluster, namespace, "iris")
        return _condition(status, "Ready").get("status") == "True" and _stable_uri(status).endswith("2/model.onnx")

    wait_until(promoted, timeout=90, interval=0.3, what="v2 promoted")
    v2 = next(r["name"] for r in _status(cluster, namespace, "iris")["revisions"] if r["role"] == "stable")
    v2 = v2.removeprefix("iris-")
    assert {v1: "stable", v2: "canary"} in seen, seen
    wait_until(
        lambda: _arms(cluster, namespace, "iris") == {v1: "lastKnownGood", v2: "stable"},
        timeout=30,
        what="iris-arms: roles flipped by the promotion",
    )

    del manifest["spec"]["monitoring"]
    _apply(cluster, namespace, manifest)
    wait_until(lambda: _arms(cluster, namespace, "iris") is None, timeout=30, what="iris-arms deleted")
