"""The operator on the real local cluster (kube-apiserver + controller-manager + scheduler + kwok nodes).

The operator runs as its console script, `modelapi-operator`, with the cluster's admin kubeconfig and a
short resync interval; its log goes next to the components' logs (dumped when a test fails).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import Cluster, wait_until
from .processes import OperatorProcess

ROOT = Path(__file__).resolve().parents[2]
IRIS = ROOT / "examples" / "iris" / "model.yaml"


@pytest.fixture(scope="module")
def operator(cluster: Cluster) -> Iterator[OperatorProcess]:
    process = OperatorProcess(cluster, {"MODELAPI_OPERATOR_RESYNC_SECONDS": "5"})
    process.start()
    yield process
    process.stop()


def _apply(cluster: Cluster, namespace: str, manifest: dict[str, Any] | str) -> None:
    text = manifest if isinstance(manifest, str) else yaml.safe_dump(manifest)
    cluster.kubectl("apply", "-f", "-", namespace=namespace, input=text)


def _iris(name: str = "iris", **spec: Any) -> dict[str, Any]:
    manifest = yaml.safe_load(IRIS.read_text())
    manifest["metadata"]["name"] = name
    for key, value in spec.items():
        manifest["spec"][key] = {**manifest["spec"].get(key, {}), **value}
    return manifest


def _mapi(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    result: dict[str, Any] = cluster.get_json("modelapi", name, namespace=namespace)
    return result


def _condition(body: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in body.get("status", {}).get("conditions", []) if c["type"] == kind), {})


def _wait_ready(cluster: Cluster, namespace: str, name: str, timeout: float = 90) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        body = _mapi(cluster, namespace, name)
        condition = _condition(body, "Ready")
        current = condition.get("observedGeneration") == body["metadata"]["generation"]
        return body if current and condition.get("status") == "True" else None

    result: dict[str, Any] = wait_until(ready, timeout=timeout, interval=1, what=f"ModelAPI {name} Ready")
    return result


def _names(cluster: Cluster, namespace: str, kind: str) -> set[str]:
    items = cluster.get_json(kind, "-l", "serving.modelapi.io/name", namespace=namespace)["items"]
    return {item["metadata"]["name"] for item in items}


def _deployments(cluster: Cluster, namespace: str) -> dict[str, dict[str, Any]]:
    items = cluster.get_json("deployments", namespace=namespace)["items"]
    return {item["metadata"]["name"]: item for item in items}


def test_iris_example_becomes_ready_with_every_child(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    cluster.kubectl("apply", "-f", str(IRIS), namespace=namespace)
    waited = cluster.kubectl(
        "wait", "--for=condition=Ready", "modelapi/iris", "--timeout=90s", namespace=namespace, timeout=120
    )
    assert "condition met" in waited.stdout
    body = _mapi(cluster, namespace, "iris")
    status = body["status"]
    assert status["observedGeneration"] == body["metadata"]["generation"]
    assert status["url"] == f"http://iris.{namespace}.svc.cluster.local"
    assert status["readyReplicas"] == 1
    (revision,) = status["revisions"]
    assert revision["role"] == "stable"
    assert revision["weight"] == 100
    assert revision["modelUri"] == "s3://models/iris/1/model.onnx"

    rendered = subprocess.run(
        [str(Path(sys.executable).parent / "modelapi"), "render", "-f", str(IRIS), "-n", namespace, "-o", "name"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    expected = {line.split("/", 1)[1] for line in rendered}
    assert (
        _names(cluster, namespace, "deployments")
        | _names(cluster, namespace, "services")
        | _names(cluster, namespace, "hpa")
        | _names(cluster, namespace, "pdb")
        == expected
    )

    hpa = cluster.get_json("hpa", "iris", namespace=namespace)
    assert hpa["spec"]["scaleTargetRef"]["name"] == revision["name"]
    owner = hpa["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"]) == ("ModelAPI", body["metadata"]["uid"])

    table = cluster.kubectl("get", "mapi", "iris", namespace=namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "READY", "REASON", "URL", "REPLICAS", "CANARY", "REVISION", "AGE"]
    assert table[1].split()[:5] == ["iris", "True", "Serving", status["url"], "1"]
    assert revision["name"] in table[1]

    events = cluster.get_json("events", "--field-selector", "involvedObject.kind=ModelAPI", namespace=namespace)
    assert {"Serving", "RolloutComplete"} <= {event["reason"] for event in events["items"]}
    operator.assert_alive()


def _roles(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {revision["role"]: revision for revision in body["status"]["revisions"]}


def test_model_change_rolls_out_a_new_revision_and_keeps_the_old_as_last_known_good(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    _apply(cluster, namespace, _iris(autoscaling={"minReplicas": 2}))
    first = _wait_ready(cluster, namespace, "iris")["status"]["revisions"][0]["name"]
    _apply(cluster, namespace, _iris(model={"uri": "s3://models/iris/2/model.onnx"}, autoscaling={"minReplicas": 2}))
    body = _wait_ready(cluster, namespace, "iris")
    roles = _roles(body)
    revision = roles["stable"]
    assert set(roles) == {"stable", "lastKnownGood"}
    assert revision["name"] != first
    assert revision["modelUri"] == "s3://models/iris/2/model.onnx"
    assert (roles["lastKnownGood"]["name"], roles["lastKnownGood"]["weight"]) == (first, 0)
    good = body["status"]["lastKnownGood"]
    assert (good["revision"], good["modelUri"], good["replicas"]) == (first, "s3://models/iris/1/model.onnx", 0)
    assert good["lastServed"]
    wait_until(
        lambda: _deployments(cluster, namespace)[first]["spec"]["replicas"] == 0, timeout=30, what="old revision at 0"
    )
    assert set(_deployments(cluster, namespace)) == {revision["name"], first}
    assert cluster.get_json("hpa", "iris", namespace=namespace)["spec"]["scaleTargetRef"]["name"] == revision["name"]
    assert body["status"]["readyReplicas"] == 2
    reasons = [
        e["reason"]
        for e in cluster.get_json("events", namespace=namespace)["items"]
        if e["involvedObject"]["kind"] == "ModelAPI"
    ]
    assert "RollingOut" in reasons

    # Autoscaling edits never start a new revision.
    _apply(
        cluster,
        namespace,
        _iris(model={"uri": "s3://models/iris/2/model.onnx"}, autoscaling={"minReplicas": 2, "maxReplicas": 4}),
    )
    body = _wait_ready(cluster, namespace, "iris")
    assert body["status"]["revisions"][0]["name"] == revision["name"]
    assert body["status"]["lastKnownGood"]["revision"] == first
    wait_until(
        lambda: cluster.get_json("hpa", "iris", namespace=namespace)["spec"]["maxReplicas"] == 4,
        timeout=30,
        what="HPA updated",
    )


def _rolled_back(cluster: Cluster, namespace: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        body = _mapi(cluster, namespace, "iris")
        stable = _roles(body).get("stable") if body.get("status") else None
        rolled = _condition(body, "Degraded").get("reason") == "RolledBack"
        return body if rolled and stable and stable["readyReplicas"] >= 1 else None

    result: dict[str, Any] = wait_until(done, timeout=60, interval=1, what="rolled back, the restored revision ready")
    return result


def _main_selector(cluster: Cluster, namespace: str) -> dict[str, str]:
    selector: dict[str, str] = cluster.get_json("service", "iris", namespace=namespace)["spec"]["selector"]
    return selector


def test_rollback_after_a_rolling_update_serves_the_old_revision_again_without_a_new_one(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    _apply(cluster, namespace, _iris(autoscaling={"minReplicas": 2}))
    first = _wait_ready(cluster, namespace, "iris")["status"]["revisions"][0]["name"]
    _apply(cluster, namespace, _iris(model={"uri": "s3://models/iris/2/model.onnx"}, autoscaling={"minReplicas": 2}))
    second = _roles(_wait_ready(cluster, namespace, "iris"))["stable"]["name"]
    wait_until(
        lambda: _deployments(cluster, namespace)[first]["spec"]["replicas"] == 0, timeout=30, what="old revision at 0"
    )
    uids = {name: d["metadata"]["uid"] for name, d in _deployments(cluster, namespace).items()}

    cluster.kubectl("annotate", "modelapi", "iris", "serving.modelapi.io/rollback=true", namespace=namespace)
    body = _rolled_back(cluster, namespace)
    roles = _roles(body)
    assert roles["stable"]["name"] == first
    assert roles["stable"]["modelUri"] == "s3://models/iris/1/model.onnx"
    assert "lastKnownGood" not in body["status"], "nothing left to roll back to"
    assert "serving.modelapi.io/rollback" not in (
        _mapi(cluster, namespace, "iris")["metadata"].get("annotations") or {}
    )
    wait_until(
        lambda: (
            _deployments(cluster, namespace)[second]["spec"]["replicas"] == 0
            and _deployments(cluster, namespace)[first]["status"].get("readyReplicas") == 2
        ),
        timeout=60,
        what="the restored revision at 2 ready replicas, the rolled-back one at 0",
    )
    after = {name: d["metadata"]["uid"] for name, d in _deployments(cluster, namespace).items()}
    assert after == uids, "no revision was created or re-created: the kept Deployment serves again"
    assert cluster.get_json("hpa", "iris", namespace=namespace)["spec"]["scaleTargetRef"]["name"] == first

    def serving_pods() -> set[str] | None:
        slices = cluster.get_json("endpointslices", "-l", "kubernetes.io/service-name=iris", namespace=namespace)
        ready = {
            endpoint["targetRef"]["name"]
            for item in slices["items"]
            for endpoint in item.get("endpoints") or []
            if (endpoint.get("conditions") or {}).get("ready")
        }
        return ready if len(ready) == 2 and all(pod.startswith(f"{first}-") for pod in ready) else None

    wait_until(serving_pods, timeout=30, what="the <name> Service's ready endpoints: the restored revision's pods")

    # A second request has nothing to return to: an Event says so and nothing changes.
    cluster.kubectl("annotate", "modelapi", "iris", "serving.modelapi.io/rollback=true", namespace=namespace)
    wait_until(
        lambda: (
            "RollbackUnavailable"
            in {
                e["reason"]
                for e in cluster.get_json("events", namespace=namespace)["items"]
                if e["involvedObject"]["kind"] == "ModelAPI"
            }
        ),
        timeout=30,
        what="RollbackUnavailable Event",
    )
    assert _roles(_mapi(cluster, namespace, "iris"))["stable"]["name"] == first


def test_warm_last_known_good_replicas_take_no_traffic_and_serve_a_rollback_at_once(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    warm = {"lastKnownGoodReplicas": 1}
    _apply(cluster, namespace, _iris(autoscaling={"minReplicas": 2}, rollout=warm))
    first = _wait_ready(cluster, namespace, "iris")["status"]["revisions"][0]["name"]
    v2 = {"uri": "s3://models/iris/2/model.onnx"}
    _apply(cluster, namespace, _iris(model=v2, autoscaling={"minReplicas": 2}, rollout=warm))
    second = _roles(_wait_ready(cluster, namespace, "iris"))["stable"]["name"]

    def warm_ready() -> dict[str, Any] | None:
        good = _mapi(cluster, namespace, "iris")["status"].get("lastKnownGood") or {}
        return good if good.get("readyReplicas") == 1 else None

    good = wait_until(warm_ready, timeout=60, what="one warm replica of the last-known-good revision")
    assert (good["revision"], good["replicas"]) == (first, 1)
    revision_label = "serving.modelapi.io/revision"
    assert _main_selector(cluster, namespace)[revision_label] == second.rsplit("-", 1)[1], "the warm one takes none"

    cluster.kubectl("annotate", "modelapi", "iris", "serving.modelapi.io/rollback=true", namespace=namespace)
    body = _rolled_back(cluster, namespace)
    assert _roles(body)["stable"]["name"] == first
    assert _main_selector(cluster, namespace)[revision_label] == first.rsplit("-", 1)[1]
    assert set(_deployments(cluster, namespace)) == {first, second}


def test_a_rollback_during_a_stuck_rollout_rolls_it_back_and_the_old_revision_keeps_serving(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    _apply(cluster, namespace, _iris(autoscaling={"minReplicas": 2}))
    old = _wait_ready(cluster, namespace, "iris")["status"]["revisions"][0]["name"]
    stuck = _iris(
        autoscaling={"minReplicas": 2},
        model={"uri": "s3://models/iris/2/model.onnx"},
        runtime={"nodeSelector": {"pool": "none"}},
    )
    _apply(cluster, namespace, stuck)
    wait_until(lambda: "next" in _roles(_mapi(cluster, namespace, "iris")), timeout=60, what="rollout in progress")
    cluster.kubectl("annotate", "modelapi", "iris", "serving.modelapi.io/rollback=true", namespace=namespace)
    body = _rolled_back(cluster, namespace)
    assert _roles(body)["stable"]["name"] == old
    incoming = next(r["name"] for r in body["status"]["revisions"] if r["name"] != old)
    wait_until(
        lambda: (
            _deployments(cluster, namespace)[incoming]["spec"]["replicas"] == 0
            and _deployments(cluster, namespace)[old]["status"].get("readyReplicas") == 2
        ),
        timeout=60,
        what="the stuck revision at 0, the old one whole",
    )
    time.sleep(6)  # a resync passes: the same spec is not rolled out again
    assert _deployments(cluster, namespace)[incoming]["spec"]["replicas"] == 0
    assert _condition(_mapi(cluster, namespace, "iris"), "Degraded")["reason"] == "RolledBack"


def test_deleted_or_edited_children_are_restored(cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    _apply(cluster, namespace, _iris())
    revision = _wait_ready(cluster, namespace, "iris")["status"]["revisions"][0]["name"]
    cluster.kubectl("delete", f"deployment/{revision}", "service/iris-stable", "pdb/iris", namespace=namespace)
    cluster.kubectl(
        "patch",
        "service",
        "iris",
        "--type=merge",
        "-p",
        '{"spec":{"selector":{"app":"hijacked"}}}',
        namespace=namespace,
    )
    wait_until(
        lambda: (
            revision in _deployments(cluster, namespace)
            and {"iris", "iris-stable"} <= _names(cluster, namespace, "services")
            and "iris" in _names(cluster, namespace, "pdb")
        ),
        timeout=30,
        what="children recreated",
    )
    wait_until(
        lambda: (
            cluster.get_json("service", "iris", namespace=namespace)["spec"]["selector"]
            == {"serving.modelapi.io/name": "iris"}
        ),
        timeout=30,
        what="Service selector restored",
    )
    _wait_ready(cluster, namespace, "iris")


def test_pdb_goes_when_max_replicas_drops_to_one(cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    _apply(cluster, namespace, _iris())
    _wait_ready(cluster, namespace, "iris")
    assert "iris" in _names(cluster, namespace, "pdb")
    _apply(cluster, namespace, _iris(autoscaling={"minReplicas": 1, "maxReplicas": 1}))
    wait_until(lambda: "iris" not in _names(cluster, namespace, "pdb"), timeout=30, what="PDB deleted")


def test_deleting_the_modelapi_removes_every_child(cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    _apply(cluster, namespace, _iris())
    _wait_ready(cluster, namespace, "iris")
    cluster.kubectl("create", "configmap", "unrelated", namespace=namespace)
    cluster.kubectl("delete", "modelapi", "iris", "--wait=true", namespace=namespace, timeout=60)

    def gone() -> bool:
        return not any(_names(cluster, namespace, kind) for kind in ("deployments", "services", "hpa", "pdb", "pods"))

    wait_until(gone, timeout=60, what="children garbage-collected")
    assert cluster.kubectl("get", "configmap", "unrelated", namespace=namespace, check=False).returncode == 0


def test_missing_service_account_is_named_and_recovers(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    _apply(cluster, namespace, _iris(storage={"serviceAccountName": "model-reader"}))

    def degraded() -> dict[str, Any] | None:
        condition = _condition(_mapi(cluster, namespace, "iris"), "Degraded")
        return condition if condition.get("reason") == "ServiceAccountNotFound" else None

    condition = wait_until(degraded, timeout=60, what="Degraded ServiceAccountNotFound")
    assert condition["status"] == "True"
    assert "spec.storage.serviceAccountName" in condition["message"]
    assert "model-reader" in condition["message"]
    body = _mapi(cluster, namespace, "iris")
    assert _condition(body, "Ready")["status"] == "False"
    assert body["status"]["lastFailure"]["reason"] == "ServiceAccountNotFound"
    cluster.kubectl("create", "serviceaccount", "model-reader", namespace=namespace)
    _wait_ready(cluster, namespace, "iris")


def test_a_revision_that_cannot_schedule_leaves_the_old_one_serving_across_an_operator_restart(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    _apply(cluster, namespace, _iris(autoscaling={"minReplicas": 2}))
    old = _wait_ready(cluster, namespace, "iris")["status"]["revisions"][0]["name"]
    # The new revision asks for a node that does not exist: its pods stay Pending.
    stuck = _iris(
        autoscaling={"minReplicas": 2},
        model={"uri": "s3://models/iris/2/model.onnx"},
        runtime={"nodeSelector": {"pool": "none"}},
    )
    _apply(cluster, namespace, stuck)

    def rolling() -> dict[str, Any] | None:
        body = _mapi(cluster, namespace, "iris")
        roles = {r["role"] for r in body.get("status", {}).get("revisions", [])}
        return body if roles == {"stable", "next"} else None

    body = wait_until(rolling, timeout=60, what="rollout in progress")
    assert _condition(body, "Progressing")["status"] == "True"
    assert _condition(body, "Ready")["reason"] == "RollingOut"
    assert _deployments(cluster, namespace)[old]["status"].get("readyReplicas") == 2, "the old revision keeps serving"

    operator.kill()
    fixed = _iris(autoscaling={"minReplicas": 2}, model={"uri": "s3://models/iris/2/model.onnx"})
    _apply(cluster, namespace, fixed)  # changed while no operator runs: nothing may be lost
    operator.start()
    body = _wait_ready(cluster, namespace, "iris", timeout=120)
    roles = _roles(body)
    revision = roles["stable"]
    assert revision["modelUri"] == "s3://models/iris/2/model.onnx"
    assert roles["lastKnownGood"]["name"] == old
    wait_until(
        lambda: set(_deployments(cluster, namespace)) == {revision["name"], old},
        timeout=30,
        what="the stuck revision deleted, the old one kept as last-known-good",
    )


def test_gpu_rollout_needs_no_spare_gpu(cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    """Two replicas of one GPU each fill the only GPU node (2 GPUs); the update still completes."""
    gpu = {"resources": {"cpu": "1", "memory": "1Gi", "gpu": 1}}
    _apply(cluster, namespace, _iris(runtime=gpu, autoscaling={"minReplicas": 2, "maxReplicas": 2}))
    body = _wait_ready(cluster, namespace, "iris")
    revision = body["status"]["revisions"][0]["name"]
    deployment = _deployments(cluster, namespace)[revision]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    pods = cluster.get_json("pods", "-l", "serving.modelapi.io/name=iris", namespace=namespace)["items"]
    assert {pod["spec"]["nodeName"] for pod in pods} == {"kwok-gpu-0"}

    _apply(
        cluster,
        namespace,
        _iris(
            runtime=gpu,
            autoscaling={"minReplicas": 2, "maxReplicas": 2},
            model={"uri": "s3://models/iris/2/model.onnx"},
        ),
    )
    body = _wait_ready(cluster, namespace, "iris", timeout=120)
    assert body["status"]["revisions"][0]["name"] != revision
    assert body["status"]["readyReplicas"] == 2


def test_insufficient_gpu_is_reported(cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    _apply(cluster, namespace, _iris(runtime={"resources": {"gpu": 8}}))

    def degraded() -> dict[str, Any] | None:
        condition = _condition(_mapi(cluster, namespace, "iris"), "Degraded")
        return condition if condition.get("reason") == "InsufficientGPU" else None

    condition = wait_until(degraded, timeout=60, what="Degraded InsufficientGPU")
    assert "nvidia.com/gpu" in condition["message"]


def test_an_hpa_without_a_metrics_api_makes_autoscaling_inactive_while_the_model_stays_ready(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    """The kwok cluster has no metrics-server: the HPA's controller really cannot read cpu, and says so."""
    cluster.kubectl("apply", "-f", str(IRIS), namespace=namespace)

    def inactive() -> dict[str, Any] | None:
        condition = _condition(_mapi(cluster, namespace, "iris"), "Autoscaling")
        return condition if condition.get("reason") == "AutoscalingInactive" else None

    # the HPA controller syncs every 15 s; its first try fails to read the metric
    condition = wait_until(inactive, timeout=90, interval=1, what="Autoscaling=False AutoscalingInactive")
    print(f"[kwok] {condition['reason']}: {condition['message']}")
    assert condition["status"] == "False"
    assert "HorizontalPodAutoscaler iris cannot scale on cpu" in condition["message"]
    assert "FailedGetResourceMetric" in condition["message"]  # the HPA's own reason
    assert "pods.metrics.k8s.io" in condition["message"]  # and its own message
    assert "metrics-server" in condition["message"]  # what to do
    body = _wait_ready(cluster, namespace, "iris")  # the model serves all the same
    assert _condition(body, "Degraded")["status"] == "False"
    hpa = cluster.get_json("hpa", "iris", namespace=namespace)
    scaling = next(c for c in hpa["status"]["conditions"] if c["type"] == "ScalingActive")
    assert scaling["message"] in condition["message"]

    def warned() -> list[dict[str, Any]]:
        events = cluster.get_json("events", "--field-selector", "involvedObject.kind=ModelAPI", namespace=namespace)
        return [e for e in events["items"] if e["reason"] == "AutoscalingInactive"]

    (event,) = wait_until(warned, timeout=20, interval=1, what="the AutoscalingInactive Event")
    assert event["type"] == "Warning"
    assert "pods.metrics.k8s.io" in event["message"]
