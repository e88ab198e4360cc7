"""Processes the e2e tests run next to the cluster: the operator (its console script) and model runtimes."""

from __future__ import annotations

import hashlib
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from .conftest import Cluster


def terminate(process: subprocess.Popen[bytes] | None, grace_s: float = 30) -> None:
    """SIGTERM a child process this test started, SIGKILL it when it has not exited after grace_s."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


class OperatorProcess:
    """``modelapi-operator`` as a child process that tests can kill and start again."""

    def __init__(self, cluster: Cluster, settings: dict[str, str]) -> None:
        self.cluster = cluster
        self.settings = settings
        self.log_path = cluster.logs_dir / "modelapi-operator.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**self.cluster.subprocess_env(), **self.settings}
        script = Path(sys.executable).parent / "modelapi-operator"
        log = self.log_path.open("ab")
        self.process = subprocess.Popen([str(script), "--verbose"], env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        terminate(self.process)

    def assert_alive(self) -> None:
        assert self.process is not None
        assert self.process.poll() is None, f"the operator exited:\n{self.log_path.read_text()[-4000:]}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def sa_kubeconfig(cluster: Cluster, namespace: str, account: str, path: Path) -> Path:
    """A kubeconfig that authenticates as the ServiceAccount (a bound token from the TokenRequest API)."""
    token = cluster.kubectl("create", "token", account, "--duration=1h", namespace=namespace).stdout.strip()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "local",
                "cluster": {
                    "server": cluster.env["KUBE_APISERVER_URL"],
                    "certificate-authority": cluster.env["KUBE_CA_FILE"],
                },
            }
        ],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": account, "context": {"cluster": "local", "user": account}}],
        "current-context": account,
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


class RuntimeProcess:
    """``modelapi-runtime serve`` started with the environment of a revision's Deployment (as its pod would be),
    on a free loopback port, and registered with the cluster's Prometheus (file_sd) under the pod's namespace.

    Local differences from the pod, and only these: the port, a writable model directory, the S3 endpoint as
    seen from this machine, the Secret's values resolved by the test, a termination-log file, and the prediction
    log's ``<name>-arms`` ConfigMap as a local folder of its keys (what the kubelet would mount; read once, at
    construction: no later change propagates).
    """

    def __init__(
        self,
        cluster: Cluster,
        deployment: dict[str, Any],
        workdir: Path,
        secret: dict[str, str],
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
    ) -> None:
        """``host``/``port``: where it listens (default a free loopback port); a test that points a fake pod's IP at
        it listens on another loopback address and the pod's own port."""
        self.cluster = cluster
        self.name = deployment["metadata"]["name"]
        self.namespace = deployment["metadata"]["namespace"]
        self.host = host
        self.port = port or free_port()
        self.url = f"http://{host}:{self.port}"
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        env: dict[str, str] = {}
        for item in container.get("env", []):
            if "value" in item:
                env[item["name"]] = item["value"]
            elif "secretKeyRef" in item.get("valueFrom", {}):
                key = item["valueFrom"]["secretKeyRef"]["key"]
                if key in secret:
                    env[item["name"]] = secret[key]
        workdir.mkdir(parents=True, exist_ok=True)
        env.update(
            {
                "MODELAPI_PORT": str(self.port),
                "MODELAPI_HOST": host,
                "MODELAPI_MODEL_DIR": str(workdir / "models"),
                "MODELAPI_S3_ENDPOINT": cluster.s3_endpoint_url,
                "MODELAPI_TERMINATION_LOG": str(workdir / "termination-log"),
                "MODELAPI_THREADS": "1",
            }
        )
        if "MODELAPI_PREDICTION_LOG_ARMS_DIR" in env:
            env["MODELAPI_PREDICTION_LOG_ARMS_DIR"] = str(self._arms_folder(deployment, workdir / "arms"))
        self.args = container.get("args", ["serve"])
        self.env = env
        self.log_path = cluster.logs_dir / f"runtime-{self.namespace}-{self.name}.log"
        self.sd_path = cluster.prometheus_file_sd_dir / f"{self.namespace}-{self.name}.json"
        self.process: subprocess.Popen[bytes] | None = None

    def _arms_folder(self, deployment: dict[str, Any], folder: Path) -> Path:
        """The pod's arms ConfigMap volume (optional: an absent ConfigMap is an empty folder), one file per key."""
        volumes = deployment["spec"]["template"]["spec"].get("volumes", [])
        name = next(v["configMap"]["name"] for v in volumes if v["name"] == "arms")
        folder.mkdir(parents=True, exist_ok=True)
        proc = self.cluster.kubectl("get", "configmap", name, "-o", "json", namespace=self.namespace, check=False)
        data = json.loads(proc.stdout).get("data") or {} if proc.returncode == 0 else {}
        for key, value in data.items():
            (folder / key).write_text(value)
        return folder

    def start(self, ready_timeout: float = 60) -> RuntimeProcess:
        script = Path(sys.executable).parent / "modelapi-runtime"
        base = {"PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin", "HOME": "/tmp"}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(script), *self.args], env={**base, **self.env}, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"runtime {self.name} exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/v2/health/ready", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            time.sleep(0.3)
        else:
            raise AssertionError(f"runtime {self.name} not ready after {ready_timeout}s")
        target = [
            {"targets": [f"{self.host}:{self.port}"], "labels": {"job": "modelapi-e2e", "namespace": self.namespace}}
        ]
        tmp = self.sd_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(target))
        tmp.rename(self.sd_path)
        return self

    def predict(self, model: str, instances: list[list[float]], timeout: float = 5) -> int:
        """POST a KServe v1 request; the HTTP status."""
        body = json.dumps({"instances": instances}).encode()
        request = urllib.request.Request(
            f"{self.url}/v1/models/{model}:predict", data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            return int(error.code)

    def stop(self) -> None:
        self.sd_path.unlink(missing_ok=True)
        terminate(self.process)


DEMO_SH = Path(__file__).resolve().parents[2] / "scripts" / "demo.sh"


def demo_namespace(demo_dir: Path) -> str:
    """The namespace run_demo gives the demo of this demo dir."""
    return f"e2e-demo-{hashlib.sha256(str(demo_dir).encode()).hexdigest()[:6]}"


def run_demo(
    cluster: Cluster, demo_dir: Path, mode: str, *args: str, timeout: float
) -> subprocess.CompletedProcess[str]:
    """scripts/demo.sh (make demo; ``down`` as an arg) on the running cluster, in its own demo dir and namespace."""
    env = {
        **cluster.subprocess_env(),
        "MODELAPI_CLUSTER_DIR": cluster.env["MODELAPI_CLUSTER_DIR"],
        "MODELAPI_DEMO_DIR": str(demo_dir),
        "MODELAPI_DEMO_NAMESPACE": demo_namespace(demo_dir),
        "PYTHON_BIN": sys.executable,
        "MODELAPI_DEMO_NODE": mode,
    }
    return subprocess.run(
        ["bash", str(DEMO_SH), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
