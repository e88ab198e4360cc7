"""The activator's pure parts: which model a request is for, which pods may answer; and that it stays light."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from modelapi_runtime.activator.targets import (
    Directory,
    Endpoint,
    Target,
    Unplaced,
    ready_endpoints,
    resolve,
    services_directory,
    starting_endpoints,
)

SERVICES = [
    {
        "metadata": {"name": "iris", "namespace": "ml", "labels": {"serving.modelapi.io/name": "iris"}},
        "spec": {"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20", "fd00::20"]},
    },
    {"metadata": {"name": "x", "namespace": "ml", "labels": {}}, "spec": {"clusterIP": "10.96.0.30"}},
    {
        "metadata": {"name": "h", "namespace": "ml", "labels": {"serving.modelapi.io/name": "h"}},
        "spec": {"clusterIP": "None"},
    },
]
KNOWN = Directory((Target("ml", "iris"), Target("ml", "mlp"), Target("other", "mlp")), services_directory(SERVICES))


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Host": "iris.ml.svc.cluster.local"}, Target("ml", "iris")),
        ({"Host": "iris.ml.svc.cluster.local:80"}, Target("ml", "iris")),
        ({"Host": "iris.ml.svc"}, Target("ml", "iris")),
        ({"Host": "iris.ml"}, Target("ml", "iris")),
        ({"Host": "iris-stable.ml.svc.cluster.local"}, Target("ml", "iris")),
        ({"Host": "IRIS.ML.svc.cluster.local."}, Target("ml", "iris")),
        ({"Host": "iris"}, Target("ml", "iris")),  # one ModelAPI of that name
        ({"Host": "iris:80"}, Target("ml", "iris")),
        ({"Host": "models.example.com", "X-ModelAPI-Target": "other/mlp"}, Target("other", "mlp")),
        ({"Host": "10.96.0.20"}, Target("ml", "iris")),  # the ClusterIP of a model's Service
        ({"Host": "10.96.0.20:80"}, Target("ml", "iris")),
        ({"Host": "[fd00::20]:80"}, Target("ml", "iris")),
    ],
)
def test_the_model_is_named_by_header_or_host(headers: dict[str, str], expected: Target) -> None:
    assert resolve(headers, "cluster.local", KNOWN) == expected


@pytest.mark.parametrize(
    ("headers", "words"),
    [
        ({"Host": "mlp"}, "several ModelAPIs are named 'mlp' (ml/mlp, other/mlp)"),
        ({"Host": "nope"}, "no ModelAPI named 'nope'"),
        ({"Host": "10.96.0.12"}, "the Host header names no model"),
        ({"Host": "10.96.0.30:80"}, "the Host header names no model"),  # not a model's Service
        ({"Host": "[fd00::1]:80"}, "the Host header names no model"),
        ({"Host": ""}, "the Host header names no model"),
        ({"Host": "iris.ml", "X-ModelAPI-Target": "ml"}, "must be <namespace>/<name>"),
    ],
)
def test_a_request_that_names_no_single_model_is_refused_with_what_works(headers: dict[str, str], words: str) -> None:
    with pytest.raises(Unplaced) as caught:
        resolve(headers, "cluster.local", KNOWN)
    assert words in str(caught.value)


def _pod(
    ip: str,
    *,
    ready: bool = True,
    deleting: bool = False,
    phase: str = "Running",
    port: int = 8080,
    container: str = "running",
) -> Any:
    return {
        "metadata": {"name": ip, **({"deletionTimestamp": "2026-11-30T12:00:00Z"} if deleting else {})},
        "spec": {"containers": [{"name": "runtime", "ports": [{"name": "http", "containerPort": port}]}]},
        "status": {
            "phase": phase,
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [{"name": "runtime", "state": {container: {}}}],
        },
    }


def test_only_ready_running_pods_not_being_deleted_answer() -> None:
    pods = [
        _pod("10.0.0.3"),
        _pod("10.0.0.4", ready=False),
        _pod("10.0.0.5", deleting=True),
        _pod("10.0.0.6", phase="Pending"),
        _pod("10.0.0.2", port=9000),
    ]
    assert ready_endpoints(pods) == [Endpoint("10.0.0.2", 9000), Endpoint("10.0.0.3", 8080)]
    assert Endpoint("fd00::2", 8080).url("/v2/models/x/infer?a=1") == "http://[fd00::2]:8080/v2/models/x/infer?a=1"


def test_starting_pods_are_running_not_ready_and_not_being_deleted() -> None:
    pods = [
        _pod("10.0.0.3"),  # Ready: not starting
        _pod("10.0.0.4", ready=False),
        _pod("10.0.0.5", ready=False, deleting=True),
        _pod("10.0.0.6", ready=False, phase="Pending"),
        _pod("10.0.0.7", ready=False, container="waiting"),
        _pod("10.0.0.2", ready=False, port=9000),
    ]
    assert starting_endpoints(pods) == [Endpoint("10.0.0.2", 9000), Endpoint("10.0.0.4", 8080)]


def test_the_activator_loads_no_model_code() -> None:
    """It ships in the runtime image but must stay a light proxy: no onnxruntime, numpy or the runtime's app."""
    code = (
        "import sys, modelapi_runtime.activator.main\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('onnxruntime', 'numpy', 'fastapi', 'boto3') "
        "or m in ('modelapi_runtime.app', 'modelapi_runtime.model'))\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_invalid_settings_exit_with_a_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from modelapi_runtime.activator import main

    monkeypatch.setenv("MODELAPI_ACTIVATOR_QUEUE_LIMIT", "0")
    assert main.main([]) == 2
    assert "queue_limit" in capsys.readouterr().err
    assert main.main(["--help"]) == 0
    assert "MODELAPI_ACTIVATOR_HOLD_TIMEOUT_SECONDS" in capsys.readouterr().out
