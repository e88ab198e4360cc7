"""Autoscaling benchmarks on the real-node tier (kubelet + containerd pods, the chart's activator, the HPA with
metrics-server). Run with `bash benchmarks/autoscaling/run.sh` (README.md beside this file); figures go to stdout
and to the JSON file named by MODELAPI_BENCH_JSON.

1. First answer from zero: a model at zero replicas, one request through its Service's ClusterIP (held by the
   activator), timed from send to answer and split into phases from real timestamps (timeline.py): the API
   server's watch events, containerd's timestamps of the runtime's and the activator's log lines.
   For iris and for a generated model of at least 256 MiB (uploaded to the local S3, never committed).
2. Step load: an open-loop client at low -> 8x -> low req/s against a ModelAPI scaled on CPU; replicas over time
   from the pods' watch events, the replica-seconds against a fixed Deployment of maxReplicas, the reaction to the
   step and the latency of each phase.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from timeline import LogLine, Phases, Recorder, first_answer_phases, parse_log

from e2e.conftest import Cluster, wait_until
from e2e.node.load import ConstantLoad, LoadReport
from e2e.node.test_autoscaling_zero_node import _predict
from e2e.node.test_real_node import FLOWERS, SMALL, Models, _apply, _condition, _predict_url, _wait_ready
from e2e.processes import OperatorProcess

pytestmark = pytest.mark.node

IDLE_SECONDS = 30  # the smallest scaleToZeroAfterSeconds
RUNS = int(os.environ.get("MODELAPI_BENCH_RUNS", "3"))
LARGE_RUNS = int(os.environ.get("MODELAPI_BENCH_LARGE_RUNS", "2"))
# iris's CPU: as in the real-node scale-to-zero tests (250m) and as in examples/iris (500m)
IRIS_CPUS = os.environ.get("MODELAPI_BENCH_IRIS_CPU", "250m,500m").split(",")
LARGE_HIDDEN = 8192  # 8192 x 8192 float32 weights: 256 MiB, plus two small layers
LARGE_RESOURCES = {"cpu": "1", "memory": "1536Mi"}
STEP = {"low": 10.0, "high": 80.0, "low_s": 60.0, "high_s": 150.0, "after_s": 150.0}
MAX_REPLICAS = 4
RESULTS: dict[str, Any] = {}


@pytest.fixture(scope="module", autouse=True)
def results() -> Iterator[dict[str, Any]]:
    yield RESULTS
    out = Path(os.environ.get("MODELAPI_BENCH_JSON", f"/tmp/modelapi-autoscaling-bench-{int(time.time())}.json"))
    out.write_text(json.dumps(RESULTS, indent=2))
    print(f"\n[bench] results written to {out}")


def _say(line: str) -> None:
    print(f"[bench] {line}", flush=True)


# ---- models ---------------------------------------------------------------------------------------------------------


def build_large_model(hidden: int = LARGE_HIDDEN) -> onnx.ModelProto:
    """4 inputs -> hidden -> hidden -> 3 class probabilities, random weights: the iris request works on it, and the
    middle layer alone is ``hidden**2 * 4`` bytes."""
    rng = np.random.default_rng(13)
    scale = np.float32(1 / np.sqrt(hidden))

    def weights(name: str, rows: int, cols: int) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.standard_normal((rows, cols), dtype=np.float32) * scale, name=name)

    graph = helper.make_graph(
        nodes=[
            helper.make_node("MatMul", ["input", "w1"], ["h1_raw"]),
            helper.make_node("Relu", ["h1_raw"], ["h1"]),
            helper.make_node("MatMul", ["h1", "w2"], ["h2_raw"]),
            helper.make_node("Relu", ["h2_raw"], ["h2"]),
            helper.make_node("MatMul", ["h2", "w3"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
        ],
        name="large",
        inputs=[helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        outputs=[helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3])],
        initializer=[weights("w1", 4, hidden), weights("w2", hidden, hidden), weights("w3", hidden, 3)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="modelapi-bench")
    model.ir_version = 8
    return model


def _zero_manifest(name: str, uri: str, node: dict[str, str], resources: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "serving.modelapi.io/v1alpha1",
        "kind": "ModelAPI",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": uri},
            "storage": {
                "endpoint": node["NODE_S3_ENDPOINT_URL"],
                "region": "us-east-1",
                "credentialsSecret": "s3-creds",
            },
            "runtime": {"resources": dict(resources)},
            "autoscaling": {"minReplicas": 0, "maxReplicas": 1, "scaleToZeroAfterSeconds": IDLE_SECONDS},
        },
    }


# ---- first answer from zero -----------------------------------------------------------------------------------------


def _wait_reason(cluster: Cluster, namespace: str, name: str, reason: str, timeout: float) -> None:
    def check() -> bool:
        body = cluster.get_json("modelapi", name, namespace=namespace)
        ready = _condition(body, "Ready")
        fresh = ready.get("observedGeneration") == body["metadata"]["generation"]
        return fresh and ready.get("status") == "True" and ready.get("reason") == reason

    wait_until(check, timeout=timeout, interval=1, what=f"{name} Ready/{reason}")


def _at_zero(cluster: Cluster, namespace: str, name: str) -> None:
    _wait_reason(cluster, namespace, name, "ScaledToZero", timeout=IDLE_SECONDS + 120)
    wait_until(
        lambda: not cluster.get_json("pods", "-l", f"serving.modelapi.io/name={name}", namespace=namespace)["items"],
        timeout=90,
        what=f"every pod of {name} gone",
    )


def _logs(cluster: Cluster, namespace: str, *selector: str) -> list[LogLine]:
    proc = cluster.kubectl("logs", "--timestamps", "--tail=-1", *selector, namespace=namespace, check=False)
    return parse_log(proc.stdout)


def _first_answers(
    cluster: Cluster,
    node: dict[str, str],
    namespace: str,
    activator: str,
    name: str,
    uri: str,
    resources: dict[str, str],
    runs: int,
) -> list[Phases]:
    recorder = Recorder(cluster.env, namespace).start()
    _apply(cluster, namespace, _zero_manifest(name, uri, node, resources))
    _wait_reason(cluster, namespace, name, "Serving", timeout=300)
    service = cluster.get_json("service", name, namespace=namespace)
    url, host = (
        f"http://{service['spec']['clusterIP']}/v1/models/{name}:predict",
        f"{name}.{namespace}.svc.cluster.local",
    )
    activator_namespace = activator.split("/", maxsplit=1)[0]
    found = []
    for run in range(runs):
        _at_zero(cluster, namespace, name)
        time.sleep(2)  # the activator's slices and kube-proxy have settled
        sent = time.time()
        code, answer, _ = _predict(url, host, timeout=300)
        answered = time.time()
        assert code == 200, answer
        time.sleep(3)  # the Service's endpoints, after the answer
        phases = first_answer_phases(
            recorder,
            name,
            sent,
            answered,
            runtime_log=lambda pod: _logs(cluster, namespace, pod),
            activator_logs=_logs(cluster, activator_namespace, "-l", "app.kubernetes.io/name=modelapi-activator"),
        )
        found.append(phases)
        _say(f"{name} run {run + 1}: first answer from zero in {answered - sent:.2f} s")
        for milestone, delta, total in phases.table():
            shown = "-" if total is None else f"{total:6.2f} s  (+{delta:.2f})"
            _say(f"    {milestone:52s} {shown}")
    return found


def _summary(found: list[Phases]) -> dict[str, Any]:
    rows: dict[str, list[float]] = {}
    for phases in found:
        for milestone, at in phases.milestones:
            if at is not None:
                rows.setdefault(milestone, []).append(round(at, 3))
    answers = rows["answer received by the client"]
    return {
        "runs": [p.as_dict() for p in found],
        "first_answer_s": answers,
        "first_answer_p50_s": round(statistics.median(answers), 3),
        "milestone_median_s": {k: round(statistics.median(v), 3) for k, v in rows.items()},
    }


@pytest.mark.parametrize("cpu", IRIS_CPUS)
def test_first_answer_from_zero_iris(
    cluster: Cluster,
    node: dict[str, str],
    operator: OperatorProcess,
    activator: str,
    restricted: str,
    models: Models,
    cpu: str,
) -> None:
    resources = {**SMALL, "cpu": cpu}
    found = _first_answers(cluster, node, restricted, activator, "iris", models.put("v1", 0.0), resources, RUNS)
    summary = RESULTS[f"first_answer_iris_{cpu}"] = {"resources": resources, **_summary(found)}
    _say(f"iris at {cpu}: first answer from zero p50 {summary['first_answer_p50_s']:.2f} s")
    operator.assert_alive()


def test_first_answer_from_zero_large_model(
    cluster: Cluster,
    node: dict[str, str],
    operator: OperatorProcess,
    activator: str,
    restricted: str,
    models: Models,
) -> None:
    body = build_large_model().SerializeToString()
    size = len(body)
    assert size >= 256 * 1024 * 1024, size
    uri = models.put_bytes("large/model.onnx", body)
    del body
    _say(f"large: {size / 2**20:.1f} MiB uploaded to {uri}")
    found = _first_answers(cluster, node, restricted, activator, "large", uri, LARGE_RESOURCES, LARGE_RUNS)
    RESULTS["first_answer_large"] = {"resources": LARGE_RESOURCES, "model_bytes": size, **_summary(found)}
    _say(f"large: first answer from zero p50 {RESULTS['first_answer_large']['first_answer_p50_s']:.2f} s")
    operator.assert_alive()


# ---- step load ------------------------------------------------------------------------------------------------------


def _pods_alive(recorder: Recorder, name: str, start: float, end: float) -> dict[str, tuple[float, float]]:
    """Each pod of the model: (from, to) within [start, end], from its first to its DELETED watch event."""
    spans: dict[str, tuple[float, float]] = {}
    for event in recorder.since(0, "pods"):
        meta = event.body["metadata"]
        if (meta.get("labels") or {}).get("serving.modelapi.io/name") != name:
            continue
        began, ended = spans.get(meta["name"], (event.at, end))
        spans[meta["name"]] = (began, event.at if event.kind == "DELETED" else ended)
    return {pod: (max(a, start), min(b, end)) for pod, (a, b) in spans.items() if min(b, end) > max(a, start)}


def _replicas_at(spans: dict[str, tuple[float, float]], at: float) -> int:
    return sum(1 for a, b in spans.values() if a <= at < b)


def _deployment_first(
    recorder: Recorder, name: str, since: float, test: Callable[[dict[str, Any]], bool]
) -> float | None:
    for event in recorder.since(since, "deployments"):
        if (event.body["metadata"].get("labels") or {}).get("serving.modelapi.io/name") == name and test(event.body):
            return event.at - since
    return None


def _latency(report: LoadReport, since_s: float = 0.0, until_s: float = 1e9) -> dict[str, Any]:
    took = [o.latency_s * 1000 for o in report.outcomes if since_s <= o.started_s < until_s]
    ok = [o for o in report.outcomes if since_s <= o.started_s < until_s and o.ok]
    if not took:
        return {"sent": 0}
    return {
        "sent": len(took),
        "failed": len(took) - len(ok),
        "p50_ms": round(float(np.percentile(took, 50)), 1),
        "p99_ms": round(float(np.percentile(took, 99)), 1),
        "max_ms": round(max(took), 1),
    }


def _step_load(cluster: Cluster, namespace: str, name: str, url: str, classify: Callable[[Any], str]) -> dict[str, Any]:
    recorder = Recorder(cluster.env, namespace).start()
    reports: dict[str, LoadReport] = {}
    marks: dict[str, float] = {}
    for label, rate, seconds in (
        ("low", STEP["low"], STEP["low_s"]),
        ("high", STEP["high"], STEP["high_s"]),
        ("after", STEP["low"], STEP["after_s"]),
    ):
        marks[label] = time.time()
        _say(f"{name}: {label} phase, {rate:.0f} req/s for {seconds:.0f} s")
        load = ConstantLoad(url, {"instances": FLOWERS}, classify, rate=rate, keepalive=False)
        with load:
            threading.Event().wait(seconds)
        reports[label] = load.report
    end = time.time()
    spans = _pods_alive(recorder, name, marks["low"], end)
    replica_seconds = sum(b - a for a, b in spans.values())
    duration = end - marks["low"]
    peak = max(_replicas_at(spans, marks["low"] + t) for t in range(int(duration)))
    asked = _deployment_first(recorder, name, marks["high"], lambda b: b["spec"].get("replicas", 0) > 1)
    first_ready = _deployment_first(recorder, name, marks["high"], lambda b: b["status"].get("readyReplicas", 0) > 1)
    all_ready = _deployment_first(
        recorder, name, marks["high"], lambda b: b["status"].get("readyReplicas", 0) >= max(peak, 2)
    )
    back = _deployment_first(recorder, name, marks["after"], lambda b: b["spec"].get("replicas", 0) == 1)
    ramp_end = all_ready if all_ready is not None else STEP["high_s"]
    return {
        "profile": dict(STEP),
        "duration_s": round(duration, 1),
        "replica_seconds": round(replica_seconds, 1),
        "fixed_replica_seconds": round(MAX_REPLICAS * duration, 1),
        "share_of_fixed": round(replica_seconds / (MAX_REPLICAS * duration), 3),
        "peak_replicas": peak,
        "replicas_every_10s": [_replicas_at(spans, marks["low"] + t) for t in range(0, int(duration), 10)],
        "step_to_hpa_asks_s": asked,
        "step_to_first_new_replica_ready_s": first_ready,
        "step_to_peak_ready_s": all_ready,
        "drop_to_one_replica_asked_s": back,
        "latency": {
            "low": _latency(reports["low"]),
            "ramp": _latency(reports["high"], 0, ramp_end),
            "high_after_ramp": _latency(reports["high"], ramp_end),
            "after": _latency(reports["after"]),
        },
    }


def _scaled_on_cpu(name: str, uri: str, node: dict[str, str], *, fixed: bool) -> dict[str, Any]:
    autoscaling = {
        "minReplicas": MAX_REPLICAS if fixed else 1,
        "maxReplicas": MAX_REPLICAS,
        "metric": "cpu",
        "target": 25,  # of the 100m request: 80 req/s (60-75m here) need 3 replicas
        "scaleUpStabilizationSeconds": 0,
        "scaleDownStabilizationSeconds": 15,
    }
    return {
        "apiVersion": "serving.modelapi.io/v1alpha1",
        "kind": "ModelAPI",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": uri},
            "storage": {
                "endpoint": node["NODE_S3_ENDPOINT_URL"],
                "region": "us-east-1",
                "credentialsSecret": "s3-creds",
            },
            "runtime": {"resources": {"cpu": "100m", "memory": "384Mi"}},
            "autoscaling": autoscaling,
        },
    }


@pytest.mark.parametrize("fixed", [False, True], ids=["autoscaled", "fixed"])
def test_step_load(
    cluster: Cluster, node: dict[str, str], operator: OperatorProcess, restricted: str, models: Models, fixed: bool
) -> None:
    if fixed and os.environ.get("MODELAPI_BENCH_FIXED", "1") != "1":
        pytest.skip("MODELAPI_BENCH_FIXED=0: the fixed Deployment's bill is maxReplicas x duration, not measured")
    name = "fixed" if fixed else "scaled"
    _apply(cluster, restricted, _scaled_on_cpu(name, models.put("v1", 0.0), node, fixed=fixed))
    _wait_ready(cluster, restricted, name, timeout=300)
    url = _predict_url(cluster, restricted, name)
    if not fixed:  # a fixed size (minReplicas == maxReplicas) has no Autoscaling condition
        wait_until(
            lambda: (
                _condition(cluster.get_json("modelapi", name, namespace=restricted), "Autoscaling").get("reason")
                == "AutoscalingActive"
            ),
            timeout=120,
            interval=1,
            what="the HPA reading cpu from metrics-server",
        )
    found = _step_load(cluster, restricted, name, url, models.classify)
    RESULTS[f"step_load_{name}"] = found
    _say(f"step load ({name}): {json.dumps(found)}")
    operator.assert_alive()
