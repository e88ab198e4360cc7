"""Prediction logging end to end: the operator puts spec.monitoring.predictionLog in the revision's Deployment, the
runtime (a local process with that Deployment's environment, see processes.RuntimeProcess: kwok pods run nothing)
writes its records to the cluster's S3 (versitygw) in batches, and the test reads the objects back. A prefix in a
bucket that does not exist leaves serving alone and reaches the ModelAPI's PredictionLog condition through the
cluster's Prometheus.
"""

from __future__ import annotations

import json
import runpy
import secrets
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import Cluster, wait_until
from .processes import OperatorProcess, RuntimeProcess

ROOT = Path(__file__).resolve().parents[2]
FLOWERS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


class JsonLoggingOperator(OperatorProcess):
    """The operator with JSON logs (the chart's logFormat: json), which it also sets in the model pods; its log file
    is shared with the session's other operators: this one's lines start at ``log_start``."""

    def start(self) -> None:
        self.log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        super().start()


@pytest.fixture(scope="module")
def operator(cluster: Cluster) -> Iterator[JsonLoggingOperator]:
    process = JsonLoggingOperator(
        cluster,
        {
            "MODELAPI_OPERATOR_RESYNC_SECONDS": "5",
            "MODELAPI_OPERATOR_PROMETHEUS_URL": cluster.prometheus_url,
            "MODELAPI_OPERATOR_LOG_FORMAT": "json",
        },
    )
    process.start()
    yield process
    process.stop()


def _json_lines(path: Path, start: int = 0) -> list[dict[str, Any]]:
    """Every line of a log file from byte ``start``, parsed: fails on a line that is not a JSON object."""
    with path.open("rb") as log:
        log.seek(start)
        lines = [line for line in log.read().decode().splitlines() if line.strip()]
    parsed = [json.loads(line) for line in lines]
    assert all(isinstance(item, dict) for item in parsed)
    return parsed


@pytest.fixture
def secret(cluster: Cluster, namespace: str) -> dict[str, str]:
    values = {key: cluster.env[key] for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    cluster.kubectl(
        "create", "secret", "generic", "s3-creds", *[f"--from-literal={k}={v}" for k, v in values.items()],
        namespace=namespace,
    )  # fmt: skip
    return values


@pytest.fixture
def model_uri(cluster: Cluster, s3: Any, namespace: str) -> str:
    model = runpy.run_path(str(ROOT / "examples" / "iris" / "build_model.py"))["build_iris_model"]()
    key = f"e2e/{namespace}/iris.onnx"
    s3.put_object(Bucket=cluster.s3_bucket, Key=key, Body=model.SerializeToString())
    return f"s3://{cluster.s3_bucket}/{key}"


def _apply(cluster: Cluster, namespace: str, name: str, uri: str, prediction_log: dict[str, Any]) -> None:
    manifest = {
        "apiVersion": "serving.modelapi.io/v1alpha1",
        "kind": "ModelAPI",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": uri},
            "storage": {"endpoint": cluster.s3_endpoint_url, "region": "us-east-1", "credentialsSecret": "s3-creds"},
            "runtime": {"resources": {"cpu": "500m", "memory": "512Mi"}},
            "autoscaling": {"minReplicas": 1, "maxReplicas": 1},
            "monitoring": {"predictionLog": prediction_log},
        },
    }
    cluster.kubectl("apply", "-f", "-", namespace=namespace, input=yaml.safe_dump(manifest))


def _deployment(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        for item in cluster.get_json("deployments", namespace=namespace)["items"]:
            if item["metadata"]["labels"].get("serving.modelapi.io/name") == name:
                return item  # type: ignore[no-any-return]
        return None

    result: dict[str, Any] = wait_until(found, timeout=60, interval=1, what=f"the Deployment of {name}")
    return result


def _predict(runtime: RuntimeProcess, model: str, request_id: str) -> tuple[int, str]:
    request = urllib.request.Request(
        f"{runtime.url}/v1/models/{model}:predict",
        data=json.dumps({"instances": FLOWERS}).encode(),
        headers={"Content-Type": "application/json", "X-Request-Id": request_id},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status), str(response.headers["X-Request-Id"])


def _records(cluster: Cluster, s3: Any, prefix: str) -> list[list[dict[str, Any]]]:
    listed = s3.list_objects_v2(Bucket=cluster.s3_bucket, Prefix=prefix).get("Contents", [])
    return [
        [json.loads(line) for line in s3.get_object(Bucket=cluster.s3_bucket, Key=key)["Body"].read().splitlines()]
        for key in sorted(item["Key"] for item in listed)
    ]


def _condition(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    status = cluster.get_json("modelapi", name, namespace=namespace).get("status", {})
    return next((c for c in status.get("conditions", []) if c["type"] == "PredictionLog"), {})


def test_records_reach_the_local_s3_in_batches_and_a_missing_bucket_reaches_the_status(
    cluster: Cluster,
    s3: Any,
    namespace: str,
    secret: dict[str, str],
    model_uri: str,
    operator: JsonLoggingOperator,
    tmp_path: Path,
) -> None:
    prefix = f"predlog/{namespace}/"
    log = {"sampleRate": 100, "sink": "s3", "s3Prefix": f"s3://{cluster.s3_bucket}/{prefix}", "batchRecords": 3}
    _apply(cluster, namespace, "logged", model_uri, log)
    deployment = _deployment(cluster, namespace, "logged")
    revision = deployment["metadata"]["labels"]["serving.modelapi.io/revision"]
    env = {item["name"]: item.get("value") for item in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MODELAPI_LOG_FORMAT"] == "json"
    assert env["MODELAPI_PREDICTION_LOG_SINK"] == "s3"

    def arms() -> dict[str, str] | None:
        proc = cluster.kubectl("get", "configmap", "logged-arms", "-o", "json", namespace=namespace, check=False)
        return json.loads(proc.stdout).get("data") if proc.returncode == 0 else None

    wait_until(lambda: arms() == {revision: "stable"}, timeout=30, what="the logged-arms ConfigMap")
    runtime = RuntimeProcess(cluster, deployment, tmp_path / "logged", secret).start()
    try:
        answers = [_predict(runtime, "logged", f"e2e-{i}") for i in range(4)]
        assert answers == [(200, f"e2e-{i}") for i in range(4)]
        # three records make an object at once; the fourth waits for 60 s or the pod's stop
        wait_until(lambda: len(_records(cluster, s3, prefix)) == 1, timeout=30, interval=0.5, what="the first batch")
        ready = wait_until(
            lambda: _condition(cluster, namespace, "logged").get("status") == "True",
            timeout=60,
            interval=1,
            what="PredictionLog=True",
        )
        assert ready
    finally:
        runtime.stop()  # SIGTERM: the runtime drains and writes what it holds
    batches = _records(cluster, s3, prefix)
    assert [len(batch) for batch in batches] == [3, 1]
    records = [record for batch in batches for record in batch]
    assert [r["request_id"] for r in records] == [f"e2e-{i}" for i in range(4)]
    assert all(r["kind"] == "prediction" and r["model"] == "logged" and r["revision"] == revision for r in records)
    assert all(r["arm"] == "stable" for r in records), "from the operator's logged-arms ConfigMap"
    assert all(r["status"] == 200 and json.loads(r["request"]) == {"instances": FLOWERS} for r in records)
    assert all(len(json.loads(r["response"])["predictions"]) == 2 for r in records)
    keys = [item["Key"] for item in s3.list_objects_v2(Bucket=cluster.s3_bucket, Prefix=prefix)["Contents"]]
    assert all(key.startswith(f"{prefix}logged/{revision}/") and key.endswith(".jsonl") for key in keys), keys

    bucket = f"missing-{secrets.token_hex(4)}"
    missing = {"sampleRate": 100, "sink": "s3", "s3Prefix": f"s3://{bucket}/x/", "batchRecords": 1}
    _apply(cluster, namespace, "unlogged", model_uri, missing)
    deployment = _deployment(cluster, namespace, "unlogged")
    runtime = RuntimeProcess(cluster, deployment, tmp_path / "unlogged", secret).start()
    try:
        assert [_predict(runtime, "unlogged", f"lost-{i}")[0] for i in range(3)] == [200, 200, 200]  # serving goes on

        def failing() -> dict[str, Any] | None:
            _predict(runtime, "unlogged", "lost")
            condition = _condition(cluster, namespace, "unlogged")
            return condition if condition.get("reason") == "PredictionLogFailing" else None

        condition = wait_until(failing, timeout=90, interval=2, what="PredictionLogFailing")
        assert condition["status"] == "False"
        assert "NoSuchBucket" in condition["message"], condition
        metrics = urllib.request.urlopen(f"{runtime.url}/metrics", timeout=10).read().decode()
        assert 'modelapi_prediction_log_failing{model="unlogged"' in metrics
        assert "modelapi_prediction_log_records_total" in metrics
    finally:
        runtime.stop()
    events = cluster.kubectl("get", "events", "-o", "json", namespace=namespace).stdout
    assert "PredictionLogFailing" in events
    # JSON log lines: the runtime's (one warning about the lost records, not one per request) and the operator's
    runtime_lines = _json_lines(runtime.log_path)
    warnings = [line for line in runtime_lines if "prediction log" in line["message"]]
    assert len(warnings) == 1, warnings
    assert warnings[0]["level"] == "warning"
    assert "NoSuchBucket" in warnings[0]["message"]
    assert _json_lines(operator.log_path, operator.log_start)
