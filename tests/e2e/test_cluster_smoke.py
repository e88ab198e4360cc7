"""Smoke tests proving the local cluster is a real one: real apiserver validation, real controllers (Deployments,
garbage collection), real admission (Pod Security), real scheduling onto kwok nodes, real S3, real Prometheus."""

from __future__ import annotations

import json
import secrets
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import Cluster, wait_until

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
MODELAPI_CRD = ROOT / "crds" / "modelapi.yaml"
INVALID_CASES = ROOT / "tests" / "unit" / "operator" / "invalid_cases"

MINIMAL_MODELAPI = """\
apiVersion: serving.modelapi.io/v1alpha1
kind: ModelAPI
metadata:
  name: iris
spec:
  model:
    uri: s3://models/iris/1/model.onnx
"""


def _invalid_cases() -> list[Any]:
    """The unit suite's invalid manifests whose header says the CRD itself refuses them (`# server: yes`)."""
    cases = []
    for path in sorted(INVALID_CASES.glob("*.yaml")) if INVALID_CASES.is_dir() else []:
        header: dict[str, str] = {}
        for line in path.read_text().splitlines():
            if not line.startswith("#"):
                break
            key, sep, value = line.lstrip("#").partition(":")
            if sep:
                header[key.strip()] = value.strip()
        if header.get("server", "").lower() == "yes":
            cases.append(pytest.param(path, header.get("message", ""), id=path.stem))
    return cases


def _condition(obj: dict[str, Any], kind: str) -> str | None:
    for cond in obj.get("status", {}).get("conditions", []):
        if cond["type"] == kind:
            return str(cond["status"])
    return None


@pytest.mark.parametrize(
    "crd",
    [
        "gatewayclasses.gateway.networking.k8s.io",
        "gateways.gateway.networking.k8s.io",
        "httproutes.gateway.networking.k8s.io",
        "servicemonitors.monitoring.coreos.com",
        "modelapis.serving.modelapi.io",
    ],
)
def test_crd_is_established(cluster: Cluster, crd: str) -> None:
    if crd.endswith(".serving.modelapi.io") and not MODELAPI_CRD.exists():
        pytest.skip("crds/modelapi.yaml does not exist yet")
    proc = cluster.kubectl("get", "customresourcedefinition", crd, "-o", "json", check=False)
    if proc.returncode != 0:
        refused = Path(cluster.env["CRD_ERRORS_FILE"]).read_text()
        pytest.fail(f"CRD {crd} is not installed: {proc.stderr.strip()}\napiserver refusals at `up`:\n{refused}")
    obj = json.loads(proc.stdout)
    assert _condition(obj, "Established") == "True"
    assert _condition(obj, "NamesAccepted") == "True"


def test_nodes_are_kwok_nodes_and_one_has_a_gpu(cluster: Cluster) -> None:
    nodes = {n["metadata"]["name"]: n for n in cluster.get_json("nodes")["items"]}
    assert set(nodes) == {"kwok-cpu-0", "kwok-gpu-0"}
    for node in nodes.values():
        assert node["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"
        assert _condition(node, "Ready") == "True"
        assert not node["spec"].get("taints")
    assert nodes["kwok-gpu-0"]["status"]["allocatable"]["nvidia.com/gpu"] == "2"
    assert "nvidia.com/gpu" not in nodes["kwok-cpu-0"]["status"]["allocatable"]


@pytest.mark.skipif(not MODELAPI_CRD.exists(), reason="crds/modelapi.yaml does not exist yet")
def test_modelapi_created_with_kubectl_reads_back(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("apply", "-f", "-", input=MINIMAL_MODELAPI, namespace=namespace)
    obj = cluster.get_json("modelapi", "iris", namespace=namespace)
    assert obj["apiVersion"] == "serving.modelapi.io/v1alpha1"
    assert obj["kind"] == "ModelAPI"
    assert obj["spec"]["model"]["uri"] == "s3://models/iris/1/model.onnx"
    assert obj["metadata"]["generation"] == 1
    # the short name from the CRD resolves too
    assert cluster.kubectl("get", "mapi", "iris", "-o", "name", namespace=namespace).stdout.strip() == (
        "modelapi.serving.modelapi.io/iris"
    )


@pytest.mark.skipif(not MODELAPI_CRD.exists(), reason="crds/modelapi.yaml does not exist yet")
@pytest.mark.parametrize(("manifest", "message"), _invalid_cases())
def test_invalid_manifest_is_refused_by_the_apiserver(
    cluster: Cluster, namespace: str, manifest: Path, message: str
) -> None:
    assert message, f"{manifest.name} has no '# message:' header"
    proc = cluster.kubectl("apply", "--dry-run=server", "-f", str(manifest), namespace=namespace, check=False)
    assert proc.returncode != 0, f"the apiserver accepted {manifest.name}:\n{proc.stdout}"
    assert message in proc.stderr


@pytest.mark.skipif(not MODELAPI_CRD.exists(), reason="crds/modelapi.yaml does not exist yet")
def test_valid_manifest_passes_server_side_dry_run(cluster: Cluster, namespace: str) -> None:
    """The control for the refusal test above: the apiserver's dry run does accept a valid ModelAPI."""
    proc = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=MINIMAL_MODELAPI, namespace=namespace)
    assert "(server dry run)" in proc.stdout


def _deployment(name: str, replicas: int, resources: dict[str, Any] | None = None) -> str:
    container: dict[str, Any] = {"name": "app", "image": "registry.invalid/never-pulled:1"}
    if resources:
        container["resources"] = resources
    return json.dumps(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [container]}},
            },
        }
    )


def test_deployment_reaches_available_replicas_through_kwok(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("apply", "-f", "-", input=_deployment("web", 3), namespace=namespace)
    wait_until(
        lambda: cluster.get_json("deployment", "web", namespace=namespace)["status"].get("availableReplicas") == 3,
        timeout=90,
        what="deployment web to have 3 available replicas",
    )
    pods = cluster.get_json("pods", "-l", "app=web", namespace=namespace)["items"]
    assert len(pods) == 3
    for pod in pods:
        assert pod["spec"]["nodeName"] in {"kwok-cpu-0", "kwok-gpu-0"}  # placed by the real scheduler
        assert pod["status"]["phase"] == "Running"
        assert _condition(pod, "Ready") == "True"


def test_gpu_request_is_scheduled_on_the_gpu_node(cluster: Cluster, namespace: str) -> None:
    gpu = {"limits": {"nvidia.com/gpu": "1"}}
    cluster.kubectl("apply", "-f", "-", input=_deployment("gpu", 1, gpu), namespace=namespace)
    wait_until(
        lambda: cluster.get_json("deployment", "gpu", namespace=namespace)["status"].get("availableReplicas") == 1,
        timeout=90,
        what="the GPU deployment to become available",
    )
    (pod,) = cluster.get_json("pods", "-l", "app=gpu", namespace=namespace)["items"]
    assert pod["spec"]["nodeName"] == "kwok-gpu-0"


def test_deleting_an_owner_garbage_collects_its_children(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("create", "configmap", "owner", "--from-literal=k=v", namespace=namespace)
    owner = cluster.get_json("configmap", "owner", namespace=namespace)
    child = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "child",
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "name": "owner",
                    "uid": owner["metadata"]["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "data": {"k": "v"},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(child), namespace=namespace)
    cluster.kubectl("apply", "-f", "-", input=_deployment("owned", 2), namespace=namespace)
    wait_until(
        lambda: cluster.get_json("replicasets", "-l", "app=owned", namespace=namespace)["items"],
        timeout=60,
        what="the deployment's ReplicaSet",
    )

    cluster.kubectl("delete", "configmap", "owner", "--wait=false", namespace=namespace)
    cluster.kubectl("delete", "deployment", "owned", "--wait=false", namespace=namespace)

    def gone() -> bool:
        child_left = cluster.kubectl("get", "configmap", "child", namespace=namespace, check=False)
        replicasets = cluster.get_json("replicasets", "-l", "app=owned", namespace=namespace)["items"]
        pods = cluster.get_json("pods", "-l", "app=owned", namespace=namespace)["items"]
        return child_left.returncode != 0 and "NotFound" in child_left.stderr and not replicasets and not pods

    wait_until(gone, timeout=60, what="the garbage collector to delete the children")


RESTRICTED_OK = {
    "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
    "containers": [
        {
            "name": "app",
            "image": "registry.invalid/never-pulled:1",
            "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        }
    ],
}


def _pod(name: str, spec: dict[str, Any]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})


def test_privileged_pod_is_refused_in_a_restricted_namespace(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    privileged = {
        "containers": [
            {"name": "app", "image": "registry.invalid/never-pulled:1", "securityContext": {"privileged": True}}
        ]
    }
    proc = cluster.kubectl("apply", "-f", "-", input=_pod("privileged", privileged), namespace=namespace, check=False)
    assert proc.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in proc.stderr
    assert "privileged" in proc.stderr
    # the control: a pod that meets the restricted profile is admitted
    cluster.kubectl("apply", "-f", "-", input=_pod("restricted", RESTRICTED_OK), namespace=namespace)


def test_s3_object_round_trips_byte_identical(cluster: Cluster, s3: Any) -> None:
    key = f"e2e/smoke/{secrets.token_hex(4)}/blob.bin"
    body = secrets.token_bytes(3 * 1024 * 1024 + 17)  # not a multiple of any buffer size
    s3.put_object(Bucket=cluster.s3_bucket, Key=key, Body=body)
    try:
        got = s3.get_object(Bucket=cluster.s3_bucket, Key=key)["Body"].read()
        assert got == body
        listed = s3.list_objects_v2(Bucket=cluster.s3_bucket, Prefix=key)
        assert [o["Key"] for o in listed.get("Contents", [])] == [key]
        # versitygw's posix backend stores the object as a plain file: a real gateway, not a mock
        assert (Path(cluster.env["S3_DATA_DIR"]) / cluster.s3_bucket / key).read_bytes() == body
    finally:
        s3.delete_object(Bucket=cluster.s3_bucket, Key=key)


def _prom_query(cluster: Cluster, query: str) -> list[dict[str, Any]]:
    url = f"{cluster.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=10) as resp:  # loopback only
        payload = json.load(resp)
    assert payload["status"] == "success"
    return list(payload["data"]["result"])


def test_prometheus_answers_a_query(cluster: Cluster) -> None:
    def up(job: str) -> list[dict[str, Any]]:
        return [r for r in _prom_query(cluster, f'up{{job="{job}"}}') if r["value"][1] == "1"]

    wait_until(lambda: up("prometheus"), timeout=60, what="Prometheus to scrape itself")
    # it also scrapes the apiserver with the admin token: the metrics are the real apiserver's
    wait_until(lambda: up("kube-apiserver"), timeout=60, what="Prometheus to scrape kube-apiserver")
    assert _prom_query(cluster, "count(apiserver_request_total)")


def test_prometheus_picks_up_file_sd_targets(cluster: Cluster) -> None:
    job = f"e2e-file-sd-{secrets.token_hex(3)}"
    target = urllib.parse.urlsplit(cluster.prometheus_url).netloc
    sd_file = cluster.prometheus_file_sd_dir / f"{job}.yaml"
    sd_file.write_text(yaml.safe_dump([{"targets": [target], "labels": {"job": job}}]))
    try:
        wait_until(
            lambda: [r for r in _prom_query(cluster, f'up{{job="{job}"}}') if r["value"][1] == "1"],
            timeout=60,
            what=f"Prometheus to scrape the file_sd target of job {job}",
        )
    finally:
        sd_file.unlink()
