"""``modelapi predict`` and ``modelapi logs`` against real model pods: the request goes through the API server's
service proxy to the runtime, and the logs are the runtime containers' own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from e2e.conftest import Cluster, wait_until
from e2e.processes import OperatorProcess

from .test_real_node import FLOWERS, Models, _apply, _manifest, _wait_ready

# The CLI's entry point with Ctrl-C handled as in a terminal: a test run in the background has SIGINT ignored, and a
# child would inherit that.
AS_FROM_A_TERMINAL = (
    "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "from modelapi_operator.cli import main; sys.exit(main(sys.argv[1:]))"
)


def _script() -> list[str]:
    return [str(Path(sys.executable).parent / "modelapi")]


def _env(cluster: Cluster) -> dict[str, str]:
    return {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}


def modelapi(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_script(), *args], env=_env(cluster), capture_output=True, text=True, timeout=120, check=False
    )


def _serving(cluster: Cluster, node: dict[str, str], models: Models, namespace: str) -> str:
    uri = models.put("v1", 0.0)
    _apply(cluster, namespace, _manifest("iris", uri, node))
    body = _wait_ready(cluster, namespace, "iris")
    revision: str = body["status"]["revisions"][0]["name"]
    return revision


def test_cli_predict_v1_v2_and_the_models_own_error(
    cluster: Cluster, node: dict[str, str], operator: OperatorProcess, models: Models, restricted: str
) -> None:
    _serving(cluster, node, models, restricted)
    v1 = json.dumps({"instances": FLOWERS})

    def answered() -> subprocess.CompletedProcess[str] | None:
        # Ready says the pods are ready; the Service's endpoints follow a moment later
        done = modelapi(cluster, "predict", "iris", "-n", restricted, "--data", v1)
        return done if done.returncode == 0 else None

    result = wait_until(answered, timeout=30, interval=1, what="modelapi predict answering")
    assert models.classify(json.loads(result.stdout)) == "v1"

    request = {"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32", "data": np.ravel(FLOWERS).tolist()}]}
    v2 = modelapi(
        cluster, "predict", "iris", "-n", restricted, "--v2", "--data", json.dumps(request), "--via", "service"
    )
    assert v2.returncode == 0, v2.stderr
    output = json.loads(v2.stdout)["outputs"][0]
    assert output["name"] == "probabilities"
    assert np.allclose(np.reshape(output["data"], output["shape"]), models.expected["v1"], atol=1e-4)

    wrong = modelapi(cluster, "predict", "iris", "-n", restricted, "--data", "[[1.0, 2.0]]")
    assert (wrong.returncode, wrong.stdout) == (1, "")
    first, rest = wrong.stderr.split("\n", 1)
    assert first == "modelapi predict: the model answered 422:"
    assert "error" in json.loads(rest)  # the runtime's body, as it gave it
    assert "Traceback" not in wrong.stderr


def test_cli_logs_of_every_replica_and_follow(
    cluster: Cluster, node: dict[str, str], operator: OperatorProcess, models: Models, restricted: str
) -> None:
    revision = _serving(cluster, node, models, restricted)
    short = revision.removeprefix("iris-")
    pods = {
        item["metadata"]["name"]
        for item in cluster.get_json("pods", "-l", "serving.modelapi.io/name=iris", namespace=restricted)["items"]
    }
    assert len(pods) == 2

    printed = modelapi(cluster, "logs", "iris", "-n", restricted, "--tail", "3", "--revision", revision)
    assert printed.returncode == 0, printed.stderr
    lines = printed.stdout.splitlines()
    assert lines, printed.stderr
    assert {line.split("] ", 1)[0] for line in lines} == {f"[{pod} {short}" for pod in pods}
    assert all(len([line for line in lines if line.startswith(f"[{pod} ")]) <= 3 for pod in pods)

    unknown = modelapi(cluster, "logs", "iris", "-n", restricted, "--revision", "00000000")
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("modelapi logs: no pod of revision 00000000 of ModelAPI iris")

    follow = subprocess.Popen(
        [sys.executable, "-c", AS_FROM_A_TERMINAL, "logs", "iris", "-n", restricted, "-f", "--tail", "1"],
        env=_env(cluster),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        seen: set[str] = set()
        deadline = time.monotonic() + 30
        assert follow.stdout is not None
        while seen != pods and time.monotonic() < deadline:
            line = follow.stdout.readline()
            seen |= {pod for pod in pods if line.startswith(f"[{pod} {short}] ")}
        assert seen == pods
        assert follow.poll() is None, "logs -f keeps following"
    finally:
        follow.send_signal(signal.SIGINT)  # Ctrl-C
        _, errors = follow.communicate(timeout=30)
    assert follow.returncode == 130
    assert "Traceback" not in errors
