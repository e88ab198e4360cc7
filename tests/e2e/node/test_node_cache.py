"""The node cache on the real node (`-k cache`): the chart's DaemonSet (modelapi-cache from the runtime image, on the
node's network, a hostPath under the cluster's run directory), the operator pointing model pods at it, real pods
under Pod Security "restricted" pulling from the local S3 through it.

The large artifact is an ONNX model generated here with one big initializer (never committed), of
``MODELAPI_E2E_CACHE_ARTIFACT_MIB`` MiB (default 1024: the issue's 1 GiB); its pods get 3x its size of memory (parsing
and the session hold copies). A smaller value runs the same checks on a machine with less memory or time.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper

from e2e.conftest import Cluster, wait_until
from e2e.processes import OperatorProcess, free_port

from .test_real_node import Models, _apply, _manifest, _wait_degraded, _wait_ready

ROOT = Path(__file__).resolve().parents[3]
MiB = 1024 * 1024
ARTIFACT_MIB = int(os.environ.get("MODELAPI_E2E_CACHE_ARTIFACT_MIB", "1024"))
# how a hit reaches the pod (the chart's nodeCache.placement): link (the cache under the kubelet's root), copy, stream
PLACEMENT = os.environ.get("MODELAPI_E2E_CACHE_PLACEMENT", "link")
BOUND_MIB = ARTIFACT_MIB * 5 // 2  # the large artifact and a bit more: the eviction test fills it with two others

pytestmark = pytest.mark.node


@dataclass(frozen=True)
class Agent:
    namespace: str
    url: str
    host: str
    port: int
    directory: Path
    kubelet_root: Path

    def pod_file(self, pod: dict[str, Any]) -> Path:
        """The artifact in ``pod``'s own volume, as the node sees it."""
        volume = self.kubelet_root / "pods" / pod["metadata"]["uid"] / "volumes" / "kubernetes.io~empty-dir" / "models"
        (blob,) = (volume / "blobs" / "sha256").iterdir()
        return blob

    def blob(self, uri_path: str) -> Path:
        """The cached file of the object whose URL path ends with ``uri_path``."""
        for meta in (self.directory / "objects").glob("*.json"):
            if json.loads(meta.read_text())["key"].endswith(uri_path):
                return meta.with_suffix("")
        raise AssertionError(f"nothing cached for {uri_path}")

    def cached(self, uri_path: str) -> bool:
        try:
            return self.blob(uri_path).is_file()
        except AssertionError:
            return False

    def metrics(self) -> dict[str, float]:
        """The agent's own metrics (GET /metrics): each modelapi_cache_* series, labels included, to its value."""
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as response:
            text = response.read().decode()
        series = (line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("modelapi_cache_"))
        return {name: float(value) for name, value in series}

    def post(self, head: str, get: str, timeout: float = 120) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request("POST", "/v1/fetch", json.dumps({"head": head, "get": get}))
            resp = conn.getresponse()
            start = resp.read(64 * 1024)
            while resp.read(4 * MiB):  # the artifact itself is read and dropped
                pass
            return resp.status, dict(resp.headers), start
        finally:
            conn.close()


@pytest.fixture(scope="module")
def cache_agent(cluster: Cluster, node: dict[str, str]) -> Iterator[Agent]:
    """The chart's node-cache DaemonSet, rendered by helm and applied in a namespace that allows "privileged"."""
    suffix = secrets.token_hex(3)
    namespace = f"e2e-node-cache-{suffix}"
    run_dir = Path(cluster.env["MODELAPI_CLUSTER_DIR"])
    kubelet_root = run_dir / "node" / "kubelet" / "root"  # the harness's kubelet --root-dir (cluster/node.sh)
    directory = (kubelet_root if PLACEMENT == "link" else run_dir) / f"node-cache-{suffix}"
    port = free_port()
    values = {
        "nodeCache": {
            "enabled": True,
            "image": node["NODE_RUNTIME_IMAGE"],
            "port": port,
            "hostPath": str(directory),
            "placement": PLACEMENT,
            "kubeletRootDir": str(kubelet_root),
            "maxSizeMiB": BOUND_MIB,
            "allowedEndpoints": [node["NODE_S3_ENDPOINT_URL"]],
        }
    }
    values_path = run_dir / f"node-cache-values-{suffix}.yaml"
    values_path.write_text(yaml.safe_dump(values))
    rendered = subprocess.run(
        [cluster.env["HELM"], "template", "modelapi", str(ROOT / "charts" / "modelapi"), "--namespace", namespace,
         "--kube-version", cluster.env["KUBE_VERSION"],
         "--values", str(values_path), "--show-only", "templates/node-cache.yaml"],
        capture_output=True, text=True, check=True, env=cluster.subprocess_env(),
    ).stdout  # fmt: skip
    values_path.unlink()
    cluster.kubectl("create", "namespace", namespace)
    cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=privileged")
    cluster.kubectl("apply", "-f", "-", namespace=namespace, input=rendered)

    def ready() -> bool:
        pods = cluster.get_json("pods", "-l", "app.kubernetes.io/component=node-cache", namespace=namespace)["items"]
        return any(
            c["type"] == "Ready" and c["status"] == "True" for p in pods for c in p["status"].get("conditions", [])
        )

    wait_until(ready, timeout=120, interval=1, what="the node cache agent Ready")
    host = node["NODE_IP"]
    yield Agent(namespace, f"http://{host}:{port}", host, port, directory, kubelet_root)
    cluster.kubectl("delete", "namespace", namespace, "--wait=true", "--timeout=60s", check=False, timeout=90)
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def cache_operator(cluster: Cluster, node: dict[str, str], cache_agent: Agent) -> Iterator[OperatorProcess]:
    process = OperatorProcess(
        cluster,
        {
            "MODELAPI_OPERATOR_CPU_IMAGE": node["NODE_RUNTIME_IMAGE"],
            "MODELAPI_OPERATOR_RESYNC_SECONDS": "5",
            "MODELAPI_OPERATOR_NODE_CACHE_PORT": str(cache_agent.port),
            "MODELAPI_OPERATOR_PROMETHEUS_URL": cluster.prometheus_url,
        },
    )
    process.start()
    yield process
    process.stop()


# ---- helpers --------------------------------------------------------------------------------------------------------


def _large_model(path: Path, mib: int, fill: float) -> Path:
    """y = x + big[0:4], with ``big`` an initializer of ``mib`` MiB: a loadable model of about that size."""
    big = numpy_helper.from_array(np.full(mib * MiB // 4, fill, dtype=np.float32), "big")
    ints = [numpy_helper.from_array(np.array(v, dtype=np.int64), n) for n, v in (("s", [0]), ("e", [4]))]
    graph = helper.make_graph(
        [helper.make_node("Slice", ["big", "s", "e"], ["b"]), helper.make_node("Add", ["x", "b"], ["y"])],
        "large",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        initializer=[big, *ints],
    )
    del big
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="modelapi-e2e")
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def _upload(cluster: Cluster, s3: Any, path: Path, key: str) -> str:
    s3.upload_file(str(path), cluster.s3_bucket, key)
    return f"s3://{cluster.s3_bucket}/{key}"


def _sparse_file(path: Path, mib: int, first: bytes) -> Path:
    with path.open("wb") as f:
        f.write(first)
        f.truncate(mib * MiB)
    return path


def _pods(cluster: Cluster, namespace: str, name: str) -> list[dict[str, Any]]:
    pods: list[dict[str, Any]] = cluster.get_json(
        "pods", "-l", f"serving.modelapi.io/name={name}", namespace=namespace
    )["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def _is_ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))


def _ready_pods(cluster: Cluster, namespace: str, name: str, count: int, timeout: float) -> list[dict[str, Any]]:
    def ready() -> list[dict[str, Any]] | None:
        pods = [p for p in _pods(cluster, namespace, name) if _is_ready(p)]
        return pods if len(pods) == count else None

    result: list[dict[str, Any]] = wait_until(ready, timeout=timeout, interval=2, what=f"{count} ready pods of {name}")
    return result


def _artifact_metrics(pod: dict[str, Any]) -> tuple[str, int, int]:
    """(source, bytes from the store, node cache fallback) from the pod's own /metrics."""
    with urllib.request.urlopen(f"http://{pod['status']['podIP']}:8080/metrics", timeout=5) as response:
        text = response.read().decode()
    source = re.search(r'^modelapi_artifact_source\{[^}]*source="(\w+)"[^}]*\} 1\.0$', text, re.M)
    store = re.search(r"^modelapi_artifact_store_bytes\{[^}]*\} ([0-9.e+]+)$", text, re.M)
    fallback = re.search(r"^modelapi_node_cache_fallback\{[^}]*\} ([0-9.e+]+)$", text, re.M)
    assert source, text[-2000:]
    assert store, text[-2000:]
    assert fallback, text[-2000:]
    return source.group(1), int(float(store.group(1))), int(float(fallback.group(1)))


def _replace_pod(cluster: Cluster, namespace: str, name: str, pod: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Deletes ``pod``; its replacement (a new pod object, with a new emptyDir) once ready."""
    before = {p["metadata"]["name"] for p in _pods(cluster, namespace, name)}
    cluster.kubectl("delete", "pod", pod["metadata"]["name"], "--wait=false", namespace=namespace)

    def replaced() -> dict[str, Any] | None:
        pods = _pods(cluster, namespace, name)
        fresh = [p for p in pods if p["metadata"]["name"] not in before and _is_ready(p)]
        return fresh[0] if fresh and len(pods) == len(before) else None

    result: dict[str, Any] = wait_until(replaced, timeout=timeout, interval=2, what=f"a new pod of {name} ready")
    return result


def _presign(node: dict[str, str], bucket: str, key: str, secret: str) -> tuple[str, str]:
    client = boto3.client(
        "s3",
        endpoint_url=node["NODE_S3_ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id=node["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=secret,
        config=boto3.session.Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    params = {"Bucket": bucket, "Key": key}
    return (
        client.generate_presigned_url("head_object", Params=params, ExpiresIn=600),
        client.generate_presigned_url("get_object", Params=params, ExpiresIn=600),
    )


# ---- tests ----------------------------------------------------------------------------------------------------------


def test_cache_a_second_replica_and_a_replaced_pod_download_nothing(
    cluster: Cluster, node: dict[str, str], cache_operator: OperatorProcess, cache_agent: Agent, restricted: str,
    s3: Any, tmp_path: Path,
) -> None:  # fmt: skip
    path = _large_model(tmp_path / "large.onnx", ARTIFACT_MIB, 1.0)
    size = path.stat().st_size
    counters = cache_agent.metrics()
    uri = _upload(cluster, s3, path, f"e2e-node/{restricted}/large/model.onnx")
    path.unlink()
    memory = f"{max(1024, 3 * ARTIFACT_MIB)}Mi"
    manifest = _manifest("large", uri, node, runtime={"resources": {"cpu": "500m", "memory": memory}})
    _apply(cluster, restricted, manifest)
    timeout = 300 + ARTIFACT_MIB * 0.3
    _wait_ready(cluster, restricted, "large", timeout=timeout)
    pods = _ready_pods(cluster, restricted, "large", 2, timeout)
    first = sorted(_artifact_metrics(p) for p in pods)
    print(f"[node-cache] {size} bytes; two replicas started together: {first}")
    # one replica made the agent download; the other read along from the cache: one download in all
    assert first == [("cache", 0, 0), ("store", size, 0)]
    assert cache_agent.cached("/large/model.onnx")

    replacement = _replace_pod(cluster, restricted, "large", pods[0], timeout)
    again = _artifact_metrics(replacement)
    print(f"[node-cache] a replaced pod: {again}")
    assert again == ("cache", 0, 0)
    placed, entry = cache_agent.pod_file(replacement).stat(), cache_agent.blob("/large/model.onnx").stat()
    print(f"[node-cache] its file: inode {placed.st_ino} (the entry's {entry.st_ino}), links {placed.st_nlink}")
    assert placed.st_size == size
    if PLACEMENT == "link":  # the entry itself, read-only: not one byte went through the pod
        assert (placed.st_ino, placed.st_dev) == (entry.st_ino, entry.st_dev)
        assert placed.st_mode & 0o777 == 0o444
    elif PLACEMENT == "copy":
        assert placed.st_ino != entry.st_ino
        assert placed.st_mode & 0o777 == 0o444, "the agent's copy, not the pod's own"

    def cold_start() -> dict[str, Any] | None:
        status = cluster.get_json("modelapi", "large", namespace=restricted).get("status", {})
        found: dict[str, Any] | None = status.get("coldStart")
        return found if found and found.get("source") else None

    timings = wait_until(cold_start, timeout=90, interval=2, what="status.coldStart with its source")
    print(f"[node-cache] status.coldStart: {timings}")
    assert (timings["source"], timings["storeBytes"]) in {("store", size), ("cache", 0)}

    # the agent's own metrics saw it: one fill from the store, two pods served from the cache
    moved = {k: v - counters.get(k, 0.0) for k, v in cache_agent.metrics().items()}
    print(f"[node-cache] the agent's metrics moved by: {moved}")
    assert moved["modelapi_cache_misses_total"] == 1
    assert moved["modelapi_cache_hits_total"] == 2
    assert moved["modelapi_cache_store_bytes_total"] == size
    assert moved['modelapi_cache_served_bytes_total{origin="store"}'] == size
    if PLACEMENT == "stream":
        assert moved['modelapi_cache_served_bytes_total{origin="cache"}'] == 2 * size
    else:  # the pod that read along streamed; the replaced one got the entry placed in its volume
        assert moved['modelapi_cache_served_bytes_total{origin="cache"}'] == size
        assert moved[f'modelapi_cache_placed_total{{method="{PLACEMENT}"}}'] == 1
        assert moved[f'modelapi_cache_placed_bytes_total{{method="{PLACEMENT}"}}'] == size
    assert cache_agent.metrics()["modelapi_cache_bytes"] >= size


def test_cache_a_pod_whose_credentials_cannot_read_the_object_is_refused_the_cached_copy(
    cluster: Cluster, node: dict[str, str], cache_operator: OperatorProcess, cache_agent: Agent, restricted: str,
    models: Models,
) -> None:  # fmt: skip
    uri = models.put("v1", 0.0)
    key = uri.removeprefix(f"s3://{cluster.s3_bucket}/")
    _apply(cluster, restricted, _manifest("allowed", uri, node, autoscaling={"minReplicas": 1, "maxReplicas": 1}))
    _wait_ready(cluster, restricted, "allowed")
    assert cache_agent.cached(key)

    # a tenant with credentials that cannot read the object: its pod fails as it would without the cache
    literals = [
        f"--from-literal=AWS_ACCESS_KEY_ID={node['AWS_ACCESS_KEY_ID']}",
        "--from-literal=AWS_SECRET_ACCESS_KEY=x",
    ]
    cluster.kubectl("create", "secret", "generic", "wrong-creds", *literals, namespace=restricted)
    denied = _manifest("denied", uri, node, autoscaling={"minReplicas": 1, "maxReplicas": 1})
    denied["spec"]["storage"]["credentialsSecret"] = "wrong-creds"
    _apply(cluster, restricted, denied)
    condition = _wait_degraded(cluster, restricted, "denied", "ArtifactAccessDenied")
    print(f"[node-cache] wrong credentials: {condition['message']}")

    # and the agent itself refuses URLs signed with them, cached or not, without a hint of what it holds
    bad = cache_agent.post(*_presign(node, cluster.s3_bucket, key, "not-the-secret"))
    never = cache_agent.post(*_presign(node, cluster.s3_bucket, f"{key}.never-uploaded", "not-the-secret"))
    print(f"[node-cache] presigned with a wrong secret: {bad[0]} {bad[2]!r}")
    assert bad[0] == never[0] == 403
    # the same answer, but for the object's name in the message
    assert bad[2].replace(b".never-uploaded", b"") == never[2].replace(b".never-uploaded", b"")
    good = cache_agent.post(*_presign(node, cluster.s3_bucket, key, node["AWS_SECRET_ACCESS_KEY"]))
    assert good[0] == 200
    assert good[1]["X-Modelapi-Origin"] == "cache"


def test_cache_a_corrupted_entry_is_detected_and_fetched_again(
    cluster: Cluster, node: dict[str, str], cache_operator: OperatorProcess, cache_agent: Agent, restricted: str,
    models: Models,
) -> None:  # fmt: skip
    uri = models.put("v1", 0.0)
    key = uri.removeprefix(f"s3://{cluster.s3_bucket}/")
    _apply(cluster, restricted, _manifest("mended", uri, node, autoscaling={"minReplicas": 1, "maxReplicas": 1}))
    _wait_ready(cluster, restricted, "mended")
    (pod,) = _ready_pods(cluster, restricted, "mended", 1, 60)
    assert _artifact_metrics(pod)[0] == "store"
    blob = cache_agent.blob(key)
    good = hashlib.sha256(blob.read_bytes()).hexdigest()
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))  # a bit flipped on the node's disk

    replacement = _replace_pod(cluster, restricted, "mended", pod, 180)
    source, store_bytes, fallback = _artifact_metrics(replacement)
    print(f"[node-cache] after corruption: {source} {store_bytes} bytes, fallback {fallback}")
    assert (source, store_bytes, fallback) == ("store", len(data), 0)  # dropped, filled again through the agent
    assert hashlib.sha256(cache_agent.blob(key).read_bytes()).hexdigest() == good


def test_cache_eviction_under_its_bound_never_removes_an_artifact_in_use(
    cluster: Cluster, node: dict[str, str], cache_agent: Agent, s3: Any, tmp_path: Path
) -> None:
    """Two artifacts of 60% of the bound each: the second fits only by evicting the first, which a slow reader is
    still reading; it is refused (507, the pod would download itself) until that reader is gone."""
    mib = BOUND_MIB * 3 // 5
    prefix = f"e2e-node/evict-{secrets.token_hex(3)}"
    keys = [f"{prefix}/{n}.bin" for n in ("one", "two")]
    for n, key in enumerate(keys):
        _upload(cluster, s3, _sparse_file(tmp_path / "blob", mib, bytes([n + 1])), key)
    secret = node["AWS_SECRET_ACCESS_KEY"]
    first = _presign(node, cluster.s3_bucket, keys[0], secret)
    status, headers, _ = cache_agent.post(*first, timeout=600)
    assert status == 200
    assert headers["X-Modelapi-Origin"] == "store"

    reader = socket.socket()
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    reader.connect((cache_agent.host, cache_agent.port))
    body = json.dumps({"head": first[0], "get": first[1]}).encode()
    reader.sendall(f"POST /v1/fetch HTTP/1.1\r\nHost: a\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    assert reader.recv(1024).startswith(b"HTTP/1.1 200")
    try:
        status, _, answer = cache_agent.post(*_presign(node, cluster.s3_bucket, keys[1], secret), timeout=600)
        print(f"[node-cache] while the first is read: {status} {answer!r}")
        assert status == 507
        assert b"in use" in answer
        assert cache_agent.cached(keys[0])
    finally:
        reader.close()

    def admitted() -> tuple[int, dict[str, str], bytes] | None:
        answer = cache_agent.post(*_presign(node, cluster.s3_bucket, keys[1], secret), timeout=600)
        return answer if answer[0] == 200 else None

    status, headers, _ = wait_until(admitted, timeout=60, interval=1, what="the second artifact admitted")
    assert headers["X-Modelapi-Origin"] == "store"
    assert cache_agent.cached(keys[1])
    assert not cache_agent.cached(keys[0])
    used = sum(p.stat().st_size for p in (cache_agent.directory / "objects").iterdir())
    assert used <= BOUND_MIB * MiB + 64 * 1024
