"""Every file in examples/ on the real local cluster.

- each ModelAPI example renders (`modelapi render -f`) and it and its children pass a server-side dry-run;
- mlp, gpu, canary, gateway and expose are applied for real with the operator running and become Ready (iris is
  applied for real by test_operator.py and by the chart's e2e test);
- the gateway example's Gateway passes a server-side dry-run (tests/e2e/node/test_gateway.py applies it for real);
- the Argo CD Application's source (path + include glob) resolves to ModelAPI examples that the API server accepts;
- the mlp example's build script makes a model that onnxruntime runs at its batch size.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from .conftest import Cluster, wait_until
from .processes import run_demo, terminate

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
MODELAPI_EXAMPLES = ["iris", "mlp", "gpu", "canary", "gateway", "expose"]
APPLIED_HERE = ["mlp", "gpu", "canary", "gateway", "expose"]
BIN = Path(sys.executable).parent


def example(name: str) -> Path:
    return EXAMPLES / name / "model.yaml"


def manifest(name: str) -> dict[str, Any]:
    result: dict[str, Any] = yaml.safe_load(example(name).read_text())
    return result


def render(name: str, namespace: str = "default") -> list[dict[str, Any]]:
    proc = subprocess.run(
        [str(BIN / "modelapi"), "render", "-f", str(example(name)), "-n", namespace],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def test_every_example_file_is_covered() -> None:
    manifests = sorted(str(p.relative_to(EXAMPLES)) for p in EXAMPLES.glob("*/*.yaml"))
    others = [
        "argocd/application.yaml",
        "gateway/gateway.yaml",
    ]  # the Gateway: applied by tests/e2e/node/test_gateway.py
    assert manifests == sorted([f"{name}/model.yaml" for name in MODELAPI_EXAMPLES] + others)


def test_gateway_example_passes_server_side_dry_run(cluster: Cluster, namespace: str) -> None:
    gateway = yaml.safe_load((EXAMPLES / "gateway" / "gateway.yaml").read_text())
    gateway["metadata"]["namespace"] = namespace
    proc = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(gateway))
    assert "(server dry run)" in proc.stdout, proc.stdout


@pytest.mark.parametrize("name", MODELAPI_EXAMPLES)
def test_example_renders_what_it_promises(name: str) -> None:
    docs = render(name)
    kinds = {doc["kind"]: doc for doc in docs}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler"} <= set(kinds)
    container = kinds["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    env = {item["name"]: item.get("value") for item in container.get("env", [])}
    if name == "mlp":
        assert env["MODELAPI_MAX_BATCH_SIZE"] == "32"
        metrics = kinds["HorizontalPodAutoscaler"]["spec"]["metrics"]
        assert metrics[0]["type"] == "Pods"
        assert metrics[0]["pods"]["metric"]["name"] == "modelapi_inflight_requests"
    if name == "gpu":
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert "runtime-gpu" in container["image"]
        assert env["MODELAPI_DEVICE"] == "cuda"
    if name == "gateway":
        route = kinds["HTTPRoute"]
        assert route["spec"]["parentRefs"][0]["name"] == "public"
        assert route["spec"]["parentRefs"][0]["namespace"] == "gateway"
    if name == "expose":
        route = kinds["HTTPRoute"]
        assert route["metadata"]["name"] == "iris-public-expose"
        assert route["spec"]["hostnames"] == ["models.example.test"]
        assert route["spec"]["parentRefs"][0]["namespace"] == "gateway"
        paths = [rule["matches"][0]["path"]["value"] for rule in route["spec"]["rules"]]
        assert paths == ["/v1/models/iris-public", "/v1/models/iris-public:predict", "/v2/models/iris-public"]
    if name in {"iris", "canary", "mlp"}:
        assert "HTTPRoute" not in kinds


@pytest.mark.parametrize("name", MODELAPI_EXAMPLES)
def test_example_and_its_children_pass_server_side_dry_run(cluster: Cluster, namespace: str, name: str) -> None:
    docs = [manifest(name), *render(name, namespace)]
    proc = cluster.kubectl(
        "apply", "--server-side", "--dry-run=server", "-f", "-", namespace=namespace, input=yaml.safe_dump_all(docs)
    )
    assert len([line for line in proc.stdout.splitlines() if "(server dry run)" in line]) == len(docs), proc.stdout


# ---- applied for real, with the operator running ------------------------------------------------------------------
@pytest.fixture(scope="module")
def operator(cluster: Cluster) -> Iterator[subprocess.Popen[bytes]]:
    log_path = cluster.logs_dir / "modelapi-operator-examples.log"
    env = {**cluster.subprocess_env(), "MODELAPI_OPERATOR_RESYNC_SECONDS": "5"}
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [str(BIN / "modelapi-operator"), "--verbose"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    yield process
    terminate(process)


def ready(cluster: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    body: dict[str, Any] = cluster.get_json("modelapi", name, namespace=namespace)
    condition = next((c for c in body.get("status", {}).get("conditions", []) if c["type"] == "Ready"), {})
    current = condition.get("observedGeneration") == body["metadata"]["generation"]
    return body if current and condition.get("status") == "True" else None


def test_examples_become_ready(cluster: Cluster, namespace: str, operator: subprocess.Popen[bytes]) -> None:
    for name in APPLIED_HERE:
        cluster.kubectl("apply", "-f", str(example(name)), namespace=namespace)
    for name in APPLIED_HERE:
        model = manifest(name)["metadata"]["name"]
        body = wait_until(
            lambda model=model: ready(cluster, namespace, model), timeout=120, interval=1, what=f"{model} Ready"
        )
        assert body["status"]["readyReplicas"] >= manifest(name)["spec"]["autoscaling"]["minReplicas"]
    assert operator.poll() is None

    gpu_pods = cluster.get_json("pods", "-l", "serving.modelapi.io/name=mlp-gpu", namespace=namespace)["items"]
    assert {pod["spec"]["nodeName"] for pod in gpu_pods} == {"kwok-gpu-0"}
    route = cluster.get_json("httproute", "iris-gw", namespace=namespace)
    assert route["spec"]["parentRefs"][0]["name"] == "public"
    backends = {ref["name"] for rule in route["spec"]["rules"] for ref in rule["backendRefs"]}
    assert "iris-gw-stable" in backends
    hpa = cluster.get_json("hpa", "mlp", namespace=namespace)
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "modelapi_inflight_requests"
    # no Gateway gateway/public on this cluster: Ready inside the cluster, and Exposed says which Gateway is missing
    public = cluster.get_json("modelapi", "iris-public", namespace=namespace)["status"]
    exposed = next(c for c in public["conditions"] if c["type"] == "Exposed")
    assert (exposed["status"], exposed["reason"]) == ("False", "GatewayNotFound"), exposed
    assert "Gateway gateway/public not found" in exposed["message"]
    assert public["url"] == f"http://iris-public.{namespace}.svc.cluster.local"


# ---- the Argo CD Application ------------------------------------------------------------------------------------
def expand_braces(pattern: str) -> list[str]:
    """Argo CD's directory.include glob: only the `{a,b}` alternation form is used by our Application."""
    if "{" not in pattern:
        return [pattern]
    head, rest = pattern.split("{", 1)
    options, tail = rest.split("}", 1)
    return [expanded for option in options.split(",") for expanded in expand_braces(head + option + tail)]


def test_argocd_application_syncs_modelapi_examples(cluster: Cluster, namespace: str) -> None:
    app = yaml.safe_load((EXAMPLES / "argocd" / "application.yaml").read_text())
    assert (app["apiVersion"], app["kind"]) == ("argoproj.io/v1alpha1", "Application")
    source = app["spec"]["source"]
    assert source["path"] == "examples"
    directory = ROOT / source["path"]
    files = sorted(
        path for pattern in expand_braces(source["directory"]["include"]) for path in directory.glob(pattern)
    )
    assert [str(path.relative_to(directory)) for path in files] == [
        "canary/model.yaml",
        "iris/model.yaml",
        "mlp/model.yaml",
    ]
    docs = [yaml.safe_load(path.read_text()) for path in files]
    assert {doc["kind"] for doc in docs} == {"ModelAPI"}
    # What Argo CD would apply (server-side, ServerSideApply=true) into the destination namespace.
    assert "ServerSideApply=true" in app["spec"]["syncPolicy"]["syncOptions"]
    proc = cluster.kubectl(
        "apply", "--server-side", "--dry-run=server", "-f", "-", namespace=namespace, input=yaml.safe_dump_all(docs)
    )
    assert proc.stdout.count("(server dry run)") == len(docs)


# ---- the mlp example's model ------------------------------------------------------------------------------------
def test_mlp_build_script_makes_a_model_onnxruntime_batches(tmp_path: Path) -> None:
    import onnxruntime as ort

    path = tmp_path / "mlp.onnx"
    subprocess.run([sys.executable, str(EXAMPLES / "mlp" / "build_model.py"), str(path)], check=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch = manifest("mlp")["spec"]["runtime"]["batching"]["maxBatchSize"]
    rows = np.random.default_rng(0).standard_normal((batch, 256)).astype(np.float32)
    (probabilities,) = session.run(None, {"input": rows})
    assert probabilities.shape == (batch, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    (single,) = session.run(None, {"input": rows[:1]})
    np.testing.assert_allclose(single[0], probabilities[0], rtol=1e-4, atol=1e-6)


# ---- make demo: iris end to end ---------------------------------------------------------------------------------
def test_make_demo_answers_predictions_and_demo_down_cleans_up(cluster: Cluster, tmp_path: Path) -> None:
    """scripts/demo.sh (make demo) on the running cluster, in its own demo dir and namespace, then `down`."""
    demo_dir = tmp_path / "demo"
    try:
        # the kwok mode here; tests/e2e/node/test_real_node.py runs the demo's real-node mode
        proc = run_demo(cluster, demo_dir, "kwok", timeout=300)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
        out = proc.stdout
        assert "==> mode: kwok nodes" in out
        assert "no container runs on the kwok nodes, so the runtime runs on this machine" in out
        assert '"predictions":[[' in out
        assert '"model_name":"iris"' in out
        assert "substituted: AWS_SECRET_ACCESS_KEY from Secret s3-creds" in out
        assert cluster.env["AWS_SECRET_ACCESS_KEY"] not in out, "the demo never prints a credential"
        pids = [int((demo_dir / f"{name}.pid").read_text()) for name in ("operator", "runtime")]
    finally:
        down = run_demo(cluster, demo_dir, "kwok", "down", timeout=180)
    assert down.returncode == 0, down.stderr
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists(), f"process {pid} still running after demo-down"
    assert not demo_dir.exists()
