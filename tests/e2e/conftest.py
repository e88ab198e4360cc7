"""Fixtures for the e2e tier: a real local Kubernetes (tests/e2e/cluster/cluster.sh), real S3, real Prometheus.

Session scope: the cluster is brought up once per pytest run, or reused when one is already up. One this run
started is stopped at the end in CI (CI set) and left running elsewhere (other runs may share it). A fresh
namespace per test, deleted afterwards. When a test fails, the tail of every component's log (etcd, kube-apiserver,
controller-manager, scheduler, kwok, versitygw, Prometheus) and the events of the test's namespace are attached to
the failure report.

Environment knobs: MODELAPI_CLUSTER_DIR (run state, default tests/e2e/cluster/.run), MODELAPI_KEEP_CLUSTER=0|1
(stop or keep a cluster this run started; default: stop in CI, keep elsewhere), MODELAPI_E2E_LOG_LINES (log lines
per component on failure, default 40), MODELAPI_NODE_GPU_IMAGE (real-node tier: 1 builds the runtime-gpu image at
`up`; default 0, the tests that need it push it).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

CLUSTER_DIR = Path(__file__).resolve().parent / "cluster"
CLUSTER_SH = CLUSTER_DIR / "cluster.sh"
E2E_DIR = Path(__file__).resolve().parent
# CI has 90 minutes for everything, cold Go builds included; `up` on a warm cache takes seconds.
CLUSTER_UP_TIMEOUT_S = 75 * 60


def run_dir() -> Path:
    return Path(os.environ.get("MODELAPI_CLUSTER_DIR") or CLUSTER_DIR / ".run")


def read_env_file(path: Path) -> dict[str, str]:
    """Parse the KEY=VALUE env file that `cluster.sh up` writes (comments and blank lines ignored)."""
    env: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        env[key.strip()] = value.strip()
    return env


@dataclass(frozen=True)
class Cluster:
    """The running local cluster, as described by its env file."""

    env: Mapping[str, str]

    @property
    def kubeconfig(self) -> Path:
        return Path(self.env["KUBECONFIG"])

    @property
    def kubectl_bin(self) -> str:
        return self.env["KUBECTL"]

    @property
    def s3_endpoint_url(self) -> str:
        return self.env["S3_ENDPOINT_URL"]

    @property
    def s3_bucket(self) -> str:
        return self.env["S3_BUCKET"]

    @property
    def prometheus_url(self) -> str:
        return self.env["PROMETHEUS_URL"]

    @property
    def prometheus_file_sd_dir(self) -> Path:
        return Path(self.env["PROMETHEUS_FILE_SD_DIR"])

    @property
    def logs_dir(self) -> Path:
        return Path(self.env["MODELAPI_CLUSTER_LOGS"])

    def subprocess_env(self) -> dict[str, str]:
        """os.environ plus KUBECONFIG and the S3 credentials: for running kubectl, helm or the operator."""
        env = dict(os.environ)
        for key in ("KUBECONFIG", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
            env[key] = self.env[key]
        return env

    def kubectl(
        self,
        *args: str,
        namespace: str | None = None,
        input: str | None = None,
        check: bool = True,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against the cluster; raises with stderr in the message when check and it fails."""
        cmd = [self.kubectl_bin, "--kubeconfig", str(self.kubeconfig)]
        if namespace:
            cmd += ["--namespace", namespace]
        cmd += list(args)
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}\n{proc.stdout}")
        return proc

    def get_json(self, *args: str, namespace: str | None = None) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json", namespace=namespace).stdout)

    def log_tails(self, lines: int = 40) -> str:
        out = []
        for log in sorted(self.logs_dir.glob("*.log")):
            text = log.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"===== {log.stem}: last {len(text)} lines =====\n" + "\n".join(text))
        return "\n".join(out)


# how far load_scaled stretches a time: the e2e tests ran in clean-clone CI at load averages up to about 19 per core
LOAD_SCALE_MAX = 6.0


def load_scaled(seconds: float) -> float:
    """seconds, stretched by how loaded this machine is now: by the 1-minute load average per core, from 1 (an idle
    or lightly loaded machine: unchanged) up to LOAD_SCALE_MAX. For the time a test allows work that only CPU bounds
    (a reconcile, pods starting on kwok, a canary step that must outlast them), never for what a test measures."""
    per_core = os.getloadavg()[0] / (os.cpu_count() or 1)
    return seconds * min(max(per_core, 1.0), LOAD_SCALE_MAX)


def wait_until(
    predicate: Callable[[], Any], timeout: float = 60, interval: float = 0.5, what: str = "condition"
) -> Any:
    """Poll predicate until it returns something truthy; return that value or fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def _cluster_sh(*args: str, timeout: float) -> int:
    # the real-node tier's runtime-gpu image (about 3 GiB) is left out of `up`: the tests that pull it push it
    # themselves (the gpu_image fixture), so a run without them never builds it
    env = {**os.environ, "MODELAPI_NODE_GPU_IMAGE": os.environ.get("MODELAPI_NODE_GPU_IMAGE", "0")}
    return subprocess.run(["bash", str(CLUSTER_SH), *args], timeout=timeout, check=False, env=env).returncode


@pytest.fixture(scope="session")
def cluster(pytestconfig: pytest.Config) -> Iterator[Cluster]:
    """The local cluster: reused when already up, else brought up here (and down at the end of the run)."""
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    uncaptured = capture.global_and_fixture_disabled if capture is not None else contextlib.nullcontext
    env_file = run_dir() / "env"
    started = False
    if subprocess.run(["bash", str(CLUSTER_SH), "status"], capture_output=True, check=False).returncode != 0:
        # show the progress of a cold build (tens of minutes) instead of capturing it
        with uncaptured():
            print(f"\n[e2e] bringing the local cluster up: bash {CLUSTER_SH} up", flush=True)
            rc = _cluster_sh("up", timeout=CLUSTER_UP_TIMEOUT_S)
        if rc != 0:
            pytest.fail(f"cluster.sh up failed (exit {rc}); see its output above and {run_dir() / 'logs'}")
        started = True
    _CLUSTER_STATE["env_file"] = env_file
    yield Cluster(env=read_env_file(env_file))
    if started and not _keep_cluster():
        with uncaptured():
            _cluster_sh("down", timeout=120)


def _keep_cluster() -> bool:
    """Leave a cluster this run started running? In CI no; on a developer's machine yes, because other pytest runs
    in the same checkout may be using it by now (`make cluster-down` stops it)."""
    default = "0" if os.environ.get("CI") else "1"
    return os.environ.get("MODELAPI_KEEP_CLUSTER", default) == "1"


def _namespace_name(node_name: str) -> str:
    base = re.sub(r"[^a-z0-9-]+", "-", node_name.lower()).strip("-")[:40].strip("-")
    return f"e2e-{base}-{secrets.token_hex(3)}"


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for this test, deleted afterwards (without waiting for its finalization)."""
    name = _namespace_name(request.node.name)
    cluster.kubectl("create", "namespace", name)
    cluster.kubectl("label", "namespace", name, "modelapi.io/e2e=true")
    # the ServiceAccount admission plugin refuses pods until the namespace's default ServiceAccount exists
    wait_until(
        lambda: cluster.kubectl("get", "serviceaccount", "default", namespace=name, check=False).returncode == 0,
        timeout=30,
        what=f"ServiceAccount default in {name}",
    )
    request.node.stash[_NAMESPACE_KEY] = name
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


@pytest.fixture(scope="session")
def s3(cluster: Cluster) -> Any:
    """A boto3 S3 client for the cluster's versitygw (bucket: cluster.s3_bucket)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=cluster.s3_endpoint_url,
        aws_access_key_id=cluster.env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=cluster.env["AWS_SECRET_ACCESS_KEY"],
        region_name=cluster.env["AWS_DEFAULT_REGION"],
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
    )


# ---- hooks ---------------------------------------------------------------------------------------------

_CLUSTER_STATE: dict[str, Path] = {}
_NAMESPACE_KEY = pytest.StashKey[str]()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/e2e is an e2e test (the `e2e` marker is declared in pyproject.toml)."""
    for item in items:
        if E2E_DIR in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.e2e)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """On failure, attach every component's log tail and the namespace's events to the report."""
    report = yield
    if report.failed and "cluster" in getattr(item, "fixturenames", ()):
        report.sections.append(("cluster component logs", _failure_context(item)))
    return report


def _failure_context(item: pytest.Item) -> str:
    env_file = _CLUSTER_STATE.get("env_file")
    if env_file is None or not env_file.exists():
        logs = run_dir() / "logs"
        if not logs.is_dir():
            return "(the cluster never came up: no logs)"
        env = {"MODELAPI_CLUSTER_LOGS": str(logs)}
    else:
        env = read_env_file(env_file)
    cluster = Cluster(env=env)
    parts = [cluster.log_tails(int(os.environ.get("MODELAPI_E2E_LOG_LINES", "40")))]
    ns = item.stash.get(_NAMESPACE_KEY, None)
    if ns and "KUBECONFIG" in env:
        try:
            proc = cluster.kubectl("get", "events", "--sort-by=.lastTimestamp", namespace=ns, check=False)
            parts.append(f"===== events in namespace {ns} =====\n{proc.stdout}{proc.stderr}")
        except (OSError, subprocess.TimeoutExpired) as exc:  # the report must not fail because the cluster did
            parts.append(f"(could not list events in {ns}: {exc})")
    return "\n".join(parts)
