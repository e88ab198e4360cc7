"""``modelapi get`` and ``modelapi status`` (and predict's refusals) against the real local API server: the console
script with the cluster's kubeconfig, as a model's owner runs it; the operator serves the iris example."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Cluster
from .processes import OperatorProcess, sa_kubeconfig

ROOT = Path(__file__).resolve().parents[2]
IRIS = ROOT / "examples" / "iris" / "model.yaml"


@pytest.fixture(scope="module")
def operator(cluster: Cluster) -> Iterator[OperatorProcess]:
    process = OperatorProcess(cluster, {"MODELAPI_OPERATOR_RESYNC_SECONDS": "5"})
    process.start()
    yield process
    process.stop()


def modelapi(cluster: Cluster, *args: str, kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The console script with KUBECONFIG set as a user's shell would have it (or --kubeconfig FILE)."""
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
    extra = ["--kubeconfig", str(kubeconfig)] if kubeconfig else []
    script = Path(sys.executable).parent / "modelapi"
    return subprocess.run(
        [str(script), *args, *extra], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def _serving_iris(cluster: Cluster, namespace: str) -> dict[str, object]:
    cluster.kubectl("apply", "-f", str(IRIS), namespace=namespace)
    cluster.kubectl("wait", "--for=condition=Ready", "modelapi/iris", "--timeout=90s", namespace=namespace, timeout=120)
    body: dict[str, object] = cluster.get_json("modelapi", "iris", namespace=namespace)
    return body


def test_get_and_status_of_a_serving_model(cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    empty = modelapi(cluster, "get", "-n", namespace)
    assert (empty.returncode, empty.stdout, empty.stderr) == (0, "", f"No ModelAPI in namespace {namespace}.\n")

    body = _serving_iris(cluster, namespace)
    status = body["status"]
    assert isinstance(status, dict)
    revision = status["revisions"][0]["name"]
    short = revision.removeprefix("iris-")

    listed = modelapi(cluster, "get", "-n", namespace, "--context", "modelapi-e2e")
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split() == ["NAME", "READY", "REASON", "URL", "REVISIONS", "REPLICAS", "AGE"]
    assert row.split()[:4] == ["iris", "True", "Serving", f"http://iris.{namespace}.svc.cluster.local"]
    assert f"{short} stable 100%" in row
    assert row.split()[-2] == "1/1"

    everywhere = modelapi(cluster, "get", "-A")
    assert everywhere.returncode == 0, everywhere.stderr
    assert any(line.split()[:2] == [namespace, "iris"] for line in everywhere.stdout.splitlines()[1:])

    shown = modelapi(cluster, "status", "iris", "-n", namespace, "--events", "50")
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert "Ready:          True (Serving)\n" in text
    assert "Model:          s3://models/iris/1/model.onnx\n" in text
    conditions = text.split("Conditions:\n")[1].split("\n\n")[0]
    assert {line.split()[0] for line in conditions.splitlines()[1:]} >= {"Ready", "Progressing", "Degraded"}
    revisions = text.split("Revisions:\n")[1].split("\n\n")[0].splitlines()
    assert revisions[1].split()[:4] == [revision, "stable", "100%", "1/1"]
    events = text.split("Events (last 50):\n")[1]
    # the operator's own events and the controller-manager's about the revision's Deployment
    assert "modelapi/iris" in events
    assert f"deployment/{revision}" in events or f"replicaset/{revision}-" in events
    assert "Serving" in events or "RolloutComplete" in events
    operator.assert_alive()


def test_missing_model_and_predict_without_the_service_proxy_permission(
    cluster: Cluster, namespace: str, operator: OperatorProcess, tmp_path: Path
) -> None:
    missing = modelapi(cluster, "status", "nope", "-n", namespace)
    assert missing.returncode == 1
    assert missing.stderr == f'modelapi status: ModelAPI "nope" not found in namespace "{namespace}"\n'

    _serving_iris(cluster, namespace)
    cluster.kubectl("create", "serviceaccount", "owner", namespace=namespace)
    cluster.kubectl(
        "create",
        "role",
        "read-models",
        "--verb=get,list",
        "--resource=modelapis.serving.modelapi.io",
        namespace=namespace,
    )
    cluster.kubectl(
        "create",
        "rolebinding",
        "owner",
        "--role=read-models",
        f"--serviceaccount={namespace}:owner",
        namespace=namespace,
    )
    config = sa_kubeconfig(cluster, namespace, "owner", tmp_path / "owner.kubeconfig")
    refused = modelapi(
        cluster, "predict", "iris", "-n", namespace, "--data", "[[5.1, 3.5, 1.4, 0.2]]", kubeconfig=config
    )
    assert refused.returncode == 1
    assert refused.stderr.startswith("modelapi predict: forbidden: "), refused.stderr
    assert f"(the service proxy needs get and create on services/proxy in {namespace})" in refused.stderr
    assert "Traceback" not in refused.stderr

    # the same identity may read the model, not its children or the events: status shows what it may read
    partial = modelapi(cluster, "status", "iris", "-n", namespace, kubeconfig=config)
    assert partial.returncode == 0, partial.stderr
    assert "Ready:          True (Serving)\n" in partial.stdout
    assert (
        f"Not shown: you may not list deployments, replicasets, pods, services, horizontalpodautoscalers, "
        f"poddisruptionbudgets, events in {namespace}" in partial.stdout
    )
