"""Scale to zero on the kwok tier: the real API server, the operator, the activator and real runtime processes.

kwok pods run nothing and have no network, so each revision's runtime runs as a local process (processes.
RuntimeProcess) on a loopback address of its own and the pod's port, and the test writes that address into the fake
pod's status.podIP (kwok sets a pod's IP once, when it has none): the activator then finds the pod Ready and forwards
to a real model. Prometheus scrapes those processes (file_sd), so the operator's idleness query is the real one. The
activator runs as a local process too, behind a Service whose EndpointSlice the test writes (the chart's Deployment
is what does that in a cluster; the real-node tier runs it from the chart).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import Cluster, wait_until
from .processes import OperatorProcess, RuntimeProcess, free_port, terminate
from .test_canary import Artifacts, _model_bytes

FLOWERS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
IDLE_SECONDS = 30


def _host_address() -> str:
    """A non-loopback address of this machine: an EndpointSlice refuses loopback ones, and the activator's slice
    must name where it listens."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        address = line.split()[3].split("/")[0]
        if not address.startswith("127."):
            return address
    pytest.fail("this machine has no non-loopback IPv4 address for the activator's EndpointSlice")


@pytest.fixture(scope="module")
def activator_namespace(cluster: Cluster) -> Iterator[str]:
    name = f"e2e-activator-{secrets.token_hex(3)}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


class Activator:
    """``modelapi-activator`` as a local process, and its Service + EndpointSlice in the cluster."""

    def __init__(self, cluster: Cluster, namespace: str, **settings: str) -> None:
        self.cluster, self.namespace = cluster, namespace
        self.address = _host_address()
        self.port, self.health_port = free_port(), free_port()
        self.url = f"http://{self.address}:{self.port}"
        self.log_path = cluster.logs_dir / f"activator-{namespace}-{self.port}.log"
        self.env = {
            "PATH": "/usr/bin:/bin",
            "HOME": "/tmp",
            "MODELAPI_ACTIVATOR_HOST": self.address,
            "MODELAPI_ACTIVATOR_PORT": str(self.port),
            "MODELAPI_ACTIVATOR_HEALTH_PORT": str(self.health_port),
            "MODELAPI_ACTIVATOR_KUBECONFIG": str(cluster.kubeconfig),
            "MODELAPI_ACTIVATOR_POLL_SECONDS": "0.1",
            **settings,
        }
        self.process: Any = None

    def start(self, service: str = "activator") -> Activator:
        import sys

        script = Path(sys.executable).parent / "modelapi-activator"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen([str(script)], env=self.env, stdout=log, stderr=subprocess.STDOUT)
        wait_until(lambda: _get(f"http://{self.address}:{self.health_port}/healthz")[0] == 200, 30, what="activator up")
        manifests = [
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": service, "namespace": self.namespace},
                "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
            },
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"{service}-local",
                    "namespace": self.namespace,
                    "labels": {"kubernetes.io/service-name": service},
                },
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": self.port, "protocol": "TCP"}],
                "endpoints": [{"addresses": [self.address], "conditions": {"ready": True}}],
            },
        ]
        for manifest in manifests:
            self.cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
        return self

    def stop(self) -> None:
        terminate(self.process)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="module")
def activator(cluster: Cluster, activator_namespace: str) -> Iterator[Activator]:
    process = Activator(cluster, activator_namespace, MODELAPI_ACTIVATOR_HOLD_TIMEOUT_SECONDS="90").start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def operator(cluster: Cluster, activator: Activator) -> Iterator[OperatorProcess]:
    process = OperatorProcess(
        cluster,
        {
            "MODELAPI_OPERATOR_RESYNC_SECONDS": "5",
            "MODELAPI_OPERATOR_CANARY_TICK_SECONDS": "1",
            "MODELAPI_OPERATOR_PROMETHEUS_URL": cluster.prometheus_url,
            "MODELAPI_OPERATOR_ACTIVATOR_SERVICE": f"{activator.namespace}/activator",
        },
    )
    process.start()
    yield process
    process.stop()


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    return _call(urllib.request.Request(url, headers=headers or {}))


def _call(request: urllib.request.Request, timeout: float = 120) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return int(error.code), dict(error.headers), error.read()
    except OSError:
        return 0, {}, b""


def _predict(url: str, host: str, model: str = "iris") -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(
        f"{url}/v1/models/{model}:predict",
        data=json.dumps({"instances": FLOWERS}).encode(),
        headers={"Content-Type": "application/json", "Host": host},
    )
    return _call(request)


def _manifest(name: str, uri: str, cluster: Cluster, **autoscaling: Any) -> dict[str, Any]:
    return {
        "apiVersion": "serving.modelapi.io/v1alpha1",
        "kind": "ModelAPI",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": uri},
            "storage": {"endpoint": cluster.s3_endpoint_url, "region": "us-east-1", "credentialsSecret": "s3-creds"},
            "runtime": {"resources": {"cpu": "500m", "memory": "512Mi"}},
            "autoscaling": {"minReplicas": 0, "maxReplicas": 2, "scaleToZeroAfterSeconds": IDLE_SECONDS, **autoscaling},
        },
    }


def _ready(cluster: Cluster, namespace: str, name: str, reason: str, timeout: float) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        body = cluster.get_json("modelapi", name, namespace=namespace)
        condition = next((c for c in body.get("status", {}).get("conditions", []) if c["type"] == "Ready"), {})
        fresh = condition.get("observedGeneration") == body["metadata"]["generation"]
        ok = fresh and condition.get("status") == "True" and condition.get("reason") == reason
        return body if ok else None

    result: dict[str, Any] = wait_until(check, timeout=timeout, interval=1, what=f"{name} Ready ({reason})")
    return result


def _stable(cluster: Cluster, namespace: str) -> dict[str, Any]:
    items = cluster.get_json("deployments", namespace=namespace)["items"]
    (stable,) = [d for d in items if d["metadata"].get("annotations", {}).get("serving.modelapi.io/role") == "stable"]
    return stable  # type: ignore[no-any-return]


def _secret(cluster: Cluster, namespace: str) -> dict[str, str]:
    values = {key: cluster.env[key] for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    literals = [f"--from-literal={k}={v}" for k, v in values.items()]
    cluster.kubectl("create", "secret", "generic", "s3-creds", *literals, namespace=namespace)
    return values


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class HandNode:
    """A node the test runs by hand, as its kubelet: a pod scheduled there gets Running, Ready and the address of its
    revision's runtime process in one status write (kwok would give it an address of its own the moment it becomes
    Ready, and the activator would forward there first); a pod being deleted is confirmed gone; the node's Lease is
    renewed, so it stays Ready."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.name = f"hand-{secrets.token_hex(3)}"
        self.addresses: dict[str, str] = {}  # revision -> loopback address of its runtime process
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> HandNode:
        resources = {"cpu": "16", "memory": "64Gi", "pods": "110", "ephemeral-storage": "1Ti"}  # pods request disk
        ready = {"type": "Ready", "status": "True", "reason": "Hand", "lastHeartbeatTime": _now()}
        status = {"allocatable": resources, "capacity": resources, "conditions": [ready]}
        node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.name}, "status": status}
        node["metadata"]["labels"] = {"modelapi.io/hand": self.name}
        self.cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(node))
        patch = json.dumps({"status": status})
        self.cluster.kubectl("patch", "node", self.name, "--subresource=status", "--type=merge", "-p", patch)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.cluster.kubectl("delete", "node", self.name, "--wait=false", check=False)

    def _renew(self) -> None:
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": "kube-node-lease"},
            "spec": {
                "holderIdentity": self.name,
                "leaseDurationSeconds": 40,
                "renewTime": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime()),
            },
        }
        self.cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(lease), check=False)

    def _run(self) -> None:
        deadline = time.monotonic() + 600  # bounded: never outlives a test
        renewed = 0.0
        while not self._stop.is_set() and time.monotonic() < deadline:
            if time.monotonic() - renewed > 5:
                self._renew()
                renewed = time.monotonic()
            selector = f"spec.nodeName={self.name}"
            for pod in self.cluster.get_json("pods", "--all-namespaces", "--field-selector", selector)["items"]:
                self._tend(pod)
            time.sleep(0.1)

    def _tend(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        if meta.get("deletionTimestamp"):
            self.cluster.kubectl(
                "delete", "pod", meta["name"], "--grace-period=0", "--force", namespace=meta["namespace"], check=False
            )
            return
        address = self.addresses.get(meta.get("labels", {}).get("serving.modelapi.io/revision", ""))
        if address is None or pod.get("status", {}).get("podIP") == address:
            return
        kinds = ("PodScheduled", "Initialized", "ContainersReady", "Ready")
        status = {
            "phase": "Running",
            "podIP": address,
            "podIPs": [{"ip": address}],
            "hostIP": "127.0.0.1",
            "startTime": _now(),
            "conditions": [{"type": kind, "status": "True", "lastTransitionTime": _now()} for kind in kinds],
        }
        self.cluster.kubectl(
            "patch", "pod", meta["name"], "--subresource=status", "--type=merge", "-p", json.dumps({"status": status}),
            namespace=meta["namespace"], check=False,
        )  # fmt: skip


def _stable_or_none(cluster: Cluster, namespace: str) -> dict[str, Any] | None:
    items = cluster.get_json("deployments", namespace=namespace)["items"]
    found = [d for d in items if d["metadata"].get("annotations", {}).get("serving.modelapi.io/role") == "stable"]
    return found[0] if len(found) == 1 else None


def _revision(deployment: dict[str, Any]) -> str:
    return str(deployment["metadata"]["labels"]["serving.modelapi.io/revision"])


def test_autoscaling_zero_without_an_activator_keeps_a_replica_and_says_why(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    """Bad input: minReplicas 0 where no activator is installed is never a model stuck at zero. (First in this
    module: the module's operator, which knows an activator, is not started yet.)"""
    process = OperatorProcess(
        cluster, {"MODELAPI_OPERATOR_RESYNC_SECONDS": "5", "MODELAPI_OPERATOR_PROMETHEUS_URL": cluster.prometheus_url}
    )
    process.start()
    try:
        manifest = _manifest("lonely", "s3://models/iris/1/model.onnx", cluster)
        cluster.kubectl("apply", "-f", "-", namespace=namespace, input=yaml.safe_dump(manifest))
        body = _ready(cluster, namespace, "lonely", "ScaleToZeroUnavailable", timeout=60)
        ready = next(c for c in body["status"]["conditions"] if c["type"] == "Ready")
        assert "scale to zero is off: no ready activator" in ready["message"]
        assert "activator.enabled=true" in ready["message"]
        assert _stable(cluster, namespace)["spec"]["replicas"] == 1
    finally:
        process.stop()


def test_autoscaling_zero_idle_model_goes_to_zero_and_held_requests_are_served_by_the_new_revision(
    cluster: Cluster, namespace: str, s3: Any, operator: OperatorProcess, activator: Activator, tmp_path: Path
) -> None:
    secret = _secret(cluster, namespace)
    artifacts = Artifacts(cluster, s3, namespace)
    host = f"iris.{namespace}.svc.cluster.local"
    runtimes: list[RuntimeProcess] = []
    with HandNode(cluster) as node:
        manifest = _manifest("iris", artifacts.put("1/model.onnx", _model_bytes(0.0)), cluster)
        manifest["spec"]["runtime"]["nodeSelector"] = {"modelapi.io/hand": node.name}
        cluster.kubectl("apply", "-f", "-", namespace=namespace, input=yaml.safe_dump(manifest))
        started = time.monotonic()
        try:
            v1 = wait_until(lambda: _stable_or_none(cluster, namespace), timeout=30, what="the first revision")
            # on this machine's address, so that the EndpointSlice controller can list the pod (not a loopback one)
            address = _host_address()
            runtimes.append(RuntimeProcess(cluster, v1, tmp_path / "v1", secret, host=address, port=8080).start())
            node.addresses[_revision(v1)] = runtimes[0].host
            _ready(cluster, namespace, "iris", "Serving", timeout=90)
            assert _stable(cluster, namespace)["spec"]["replicas"] == 1, "minReplicas 0 starts with one replica"
            hpa = cluster.get_json("hpa", "iris", namespace=namespace)
            assert hpa["spec"]["minReplicas"] == 1, "an HPA cannot hold 0: it keeps 1 while the model is warm"

            # -- idle -> zero within scaleToZeroAfterSeconds + 60 s
            body = _ready(cluster, namespace, "iris", "ScaledToZero", timeout=IDLE_SECONDS + 60)
            took = time.monotonic() - started
            assert body["status"]["scaledToZeroAt"]
            assert _stable(cluster, namespace)["spec"]["replicas"] == 0
            assert cluster.kubectl("get", "hpa", "iris", namespace=namespace, check=False).returncode != 0, "no HPA"
            for service in ("iris", "iris-stable"):
                assert "selector" not in cluster.get_json("service", service, namespace=namespace)["spec"]
                endpoints = cluster.get_json("endpointslice", f"{service}-activator", namespace=namespace)
                assert endpoints["endpoints"][0]["addresses"] == [activator.address]
                assert endpoints["ports"][0]["port"] == activator.port
                # nothing left with the pods' addresses: the controllers' slices and the Endpoints object (mirrored)
                for manager in ("endpointslice-controller.k8s.io", "endpointslicemirroring-controller.k8s.io"):
                    selector = f"kubernetes.io/service-name={service},endpointslice.kubernetes.io/managed-by={manager}"
                    wait_until(
                        lambda s=selector: (
                            not cluster.get_json("endpointslices", "-l", s, namespace=namespace)["items"]
                        ),
                        timeout=15,
                        what=f"no {manager} slice for {service}",
                    )
                gone = cluster.kubectl("get", "endpoints", service, namespace=namespace, check=False).returncode != 0
                assert gone, "the stale Endpoints object is deleted"
            columns = cluster.kubectl("get", "modelapi", "iris", namespace=namespace).stdout
            assert "ScaledToZero" in columns, columns
            print(f"[scale-to-zero] idle -> 0 replicas {took:.0f} s after create (idle time {IDLE_SECONDS} s)")

            # -- a new model applied at zero: nothing rolls, the new revision waits at zero
            manifest["spec"]["model"]["uri"] = artifacts.put("2/model.onnx", _model_bytes(3.0))
            cluster.kubectl("apply", "-f", "-", namespace=namespace, input=yaml.safe_dump(manifest))
            wait_until(
                lambda: (d := _stable_or_none(cluster, namespace)) is not None and _revision(d) != _revision(v1),
                timeout=30,
                what="the new revision stable",
            )
            _ready(cluster, namespace, "iris", "ScaledToZero", timeout=30)
            v2 = _stable(cluster, namespace)
            assert v2["spec"]["replicas"] == 0
            wait_until(
                lambda: (
                    cluster.kubectl(
                        "get", "deployment", v1["metadata"]["name"], namespace=namespace, check=False
                    ).returncode
                    != 0
                ),
                timeout=30,
                what="the old revision deleted",
            )
            old_answer = _predict(runtimes[0].url, "x")[2]
            runtimes[0].stop()  # the old revision is gone; its address and port go to the new one's process
            v2_runtime = RuntimeProcess(cluster, v2, tmp_path / "v2", secret, host=address, port=8080).start()
            runtimes.append(v2_runtime)
            new_answer = _predict(v2_runtime.url, "x")[2]
            assert new_answer != old_answer, "the two models answer differently"
            node.addresses[_revision(v2)] = v2_runtime.host

            # -- 20 concurrent requests at zero: held, then all answered by the new revision
            cluster_ip = cluster.get_json("service", "iris", namespace=namespace)["spec"]["clusterIP"]
            hosts = [host, cluster_ip] * 10  # the Service's DNS name, or its address
            t0 = time.monotonic()
            with ThreadPoolExecutor(20) as pool:
                answers = list(pool.map(lambda h: _predict(activator.url, h), hosts))
            first = time.monotonic() - t0
            codes = Counter(code for code, _, _ in answers)
            assert codes == {200: 20}, (codes, [b[:300] for c, _, b in answers if c != 200], activator.log()[-3000:])
            assert all(payload == new_answer for _, _, payload in answers), "answered by the new revision"
            print(f"[scale-to-zero] 20 held requests answered in {first:.1f} s (the test is the node: no pod start)")

            body = _ready(cluster, namespace, "iris", "Serving", timeout=60)
            assert "scaledToZeroAt" not in body["status"]
            assert "serving.modelapi.io/activate" not in body["metadata"].get("annotations", {})
            service = cluster.get_json("service", "iris", namespace=namespace)
            assert service["spec"]["selector"] == {"serving.modelapi.io/name": "iris"}, "warm: straight to the pods"
            wait_until(
                lambda: (
                    not cluster.get_json(
                        "endpointslices",
                        "-l",
                        "endpointslice.kubernetes.io/managed-by=modelapi-operator",
                        namespace=namespace,
                    )["items"]
                ),
                timeout=30,
                what="the activator's slices gone once the controller lists the pod",
            )
            assert cluster.get_json("hpa", "iris", namespace=namespace)["spec"]["minReplicas"] == 1
            events = cluster.kubectl("get", "events", namespace=namespace).stdout
            assert "ScaledToZero" in events
            assert "Activating" in events
        finally:
            for runtime in runtimes:
                runtime.stop()
            cluster.kubectl("delete", "modelapi", "iris", "--wait=false", namespace=namespace, check=False)
    operator.assert_alive()


def test_autoscaling_zero_activator_refuses_what_it_cannot_hold(
    cluster: Cluster, namespace: str, operator: OperatorProcess, activator_namespace: str, tmp_path: Path
) -> None:
    """Bounded: a queue limit and a hold timeout, past which 503 with Retry-After and why; 421/404 for a request
    that names no model it can find."""
    small = Activator(
        cluster,
        activator_namespace,
        MODELAPI_ACTIVATOR_QUEUE_LIMIT="2",
        MODELAPI_ACTIVATOR_HOLD_TIMEOUT_SECONDS="3",
        MODELAPI_ACTIVATOR_RETRY_AFTER_SECONDS="7",
    ).start(service="small-activator")
    try:
        # a model whose replica never becomes ready (no node matches its selector)
        manifest = _manifest("stuck", "s3://models/stuck/model.onnx", cluster)
        manifest["spec"]["runtime"]["nodeSelector"] = {"modelapi.io/none": "true"}
        cluster.kubectl("apply", "-f", "-", namespace=namespace, input=yaml.safe_dump(manifest))
        host = f"stuck.{namespace}"
        with ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(lambda _: _predict(small.url, host, "stuck"), range(3)))
        codes = sorted(code for code, _, _ in answers)
        assert codes == [503, 503, 503], answers
        bodies = [json.loads(payload)["error"] for _, _, payload in answers]
        assert sum("queue limit" in text for text in bodies) == 1, bodies
        assert sum("no replica of" in text and "within 3 s" in text for text in bodies) == 2, bodies
        assert all(headers.get("Retry-After") == "7" for _, headers, _ in answers)
        assert f"asked for a replica of {namespace}/stuck" in small.log()

        code, _, payload = _predict(small.url, f"nothing.{namespace}", "nothing")
        assert (code, json.loads(payload)["error"]) == (404, f"no ModelAPI {namespace}/nothing")
        code, _, payload = _predict(small.url, "10.96.0.10", "stuck")
        assert code == 421
        assert "X-ModelAPI-Target" in json.loads(payload)["error"]
    finally:
        small.stop()
