"""Operator benchmark on the local cluster (kube-apiserver + controller-manager + scheduler + kwok nodes).

Measures, with ``modelapi-operator`` running as its console script with default settings:

1. apply -> all children created: for each of ``--count`` ModelAPIs created at ``--rate`` per second, the time from
   the create request's return to the moment the bench's watches have seen every child (Deployment, Services
   <name> and <name>-stable, HPA, PDB). Peer (the floor), measured first in the same run with no operator running:
   the same ModelAPI is created, then the same children are applied directly by one client with server-side apply
   (one request per child, sequentially), timed the same way from the create's return.
2. time to Ready for each of ``--ready-counts``: from the start of a bulk create (``--concurrency`` parallel
   create requests) until every ModelAPI has Ready=True with status.observedGeneration == metadata.generation.
   Optional floor (``--ready-floor``): the largest count's children applied directly (no operator), until every
   Deployment is available: what the controller-manager, scheduler and kwok need without us.
3. the operator's RSS (peak VmHWM and VmRSS at idle) and CPU from /proc/<pid>, idle = ``--idle-seconds`` after
   the largest count is Ready.
4. the apiserver requests the operator makes: it runs as its own ServiceAccount (the chart's RBAC) and a FlowSchema
   matches exactly that ServiceAccount, so ``apiserver_flowcontrol_dispatched_requests_total`` for that
   FlowSchema counts the operator's requests and nobody else's.

Every watch is one streaming request per kind and namespace; nothing polls per object.
Run ``.venv/bin/python benchmarks/operator/bench.py --help``; see README.md beside this file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import ipaddress
import json
import os
import platform
import resource
import secrets
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from modelapi_operator.api import ModelAPISpec
from modelapi_operator.builders import Owner, RuntimeImages
from modelapi_operator.builders.service import SERVICE_NAME_LABEL
from modelapi_operator.plan import desired_children
from modelapi_operator.settings import OperatorSettings

ROOT = Path(__file__).resolve().parents[2]
IRIS = ROOT / "examples" / "iris" / "model.yaml"
CLUSTER_SH = ROOT / "tests" / "e2e" / "cluster" / "cluster.sh"
GROUP, VERSION, PLURAL = "serving.modelapi.io", "v1alpha1", "modelapis"
NAME_LABEL = f"{GROUP}/name"
OPERATOR_NS = "modelapi-bench"
RELEASE = "bench"
FLOW_SCHEMA = "modelapi-bench-operator"
FLOOR_MANAGER = "bench-floor"
SERVICE_CIDR_NAME, SERVICE_CIDR = "modelapi-bench", "10.1.0.0/16"
CHILD_KINDS = {  # kind -> list path (namespaced, without the namespace part)
    "Deployment": ("apis/apps/v1", "deployments"),
    "Service": ("api/v1", "services"),
    "HorizontalPodAutoscaler": ("apis/autoscaling/v2", "horizontalpodautoscalers"),
    "PodDisruptionBudget": ("apis/policy/v1", "poddisruptionbudgets"),
}
WANTED = ("Deployment", "Service/main", "Service/stable", "HorizontalPodAutoscaler", "PodDisruptionBudget")


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the cluster -------------------------------------------------------------------------------------------------------
def read_env(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            env[key] = value
    return env


def cluster_up(cluster_dir: Path) -> tuple[dict[str, str], bool]:
    """The env of a running cluster in ``cluster_dir``; brings one up when needed. Returns (env, started_here)."""
    env = {**os.environ, "MODELAPI_CLUSTER_DIR": str(cluster_dir), "MODELAPI_KEEP_CLUSTER": "1"}
    healthy = (cluster_dir / "env").exists() and (
        subprocess.run(["bash", str(CLUSTER_SH), "status"], env=env, capture_output=True, check=False).returncode == 0
    )
    if not healthy:
        log(f"bringing up the local cluster in {cluster_dir}")
        subprocess.run(["bash", str(CLUSTER_SH), "up"], env=env, check=True, stdout=sys.stderr)
    return read_env(cluster_dir / "env"), not healthy


def cluster_down(cluster_dir: Path) -> None:
    env = {**os.environ, "MODELAPI_CLUSTER_DIR": str(cluster_dir)}
    subprocess.run(["bash", str(CLUSTER_SH), "down"], env=env, check=False, stdout=sys.stderr)


class ServerError(RuntimeError):
    """The apiserver answered 5xx."""


class Api:
    """A small async client for the apiserver (admin token), with streaming watches."""

    def __init__(self, server: str, ca_file: str, token: str) -> None:
        self.server = server.rstrip("/")
        context = ssl.create_default_context(cafile=ca_file)
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context, limit=64),
            headers={"Authorization": f"Bearer {token}", "User-Agent": "modelapi-bench"},
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
        )

    async def close(self) -> None:
        await self.session.close()

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
        ok: tuple[int, ...] = (),
    ) -> Any:
        data = None if body is None else json.dumps(body)
        async with self.session.request(
            method,
            f"{self.server}/{path.lstrip('/')}",
            data=data,
            params=params,
            headers={"Content-Type": content_type},
            timeout=aiohttp.ClientTimeout(total=60),
        ) as response:
            text = await response.text()
            if response.status >= 500:
                raise ServerError(f"{method} {path}: {response.status} {text[:500]}")
            if response.status >= 400 and response.status not in ok:
                raise RuntimeError(f"{method} {path}: {response.status} {text[:500]}")
            return json.loads(text) if text and response.content_type == "application/json" else text

    async def apply(self, manifest: dict[str, Any], manager: str) -> Any:
        for attempt in range(5):
            try:
                return await self.request(
                    "PATCH",
                    object_path(manifest),
                    manifest,
                    params={"fieldManager": manager, "force": "true"},
                    content_type="application/apply-patch+yaml",
                )
            except ServerError:  # e.g. a ClusterIP allocation race under concurrency: retry as the operator would
                if attempt == 4:
                    raise
                await asyncio.sleep(0.2 * (attempt + 1))
        return None

    async def watch(self, path: str, on_event: Callable[[str, dict[str, Any], float], None]) -> asyncio.Task[None]:
        """Start a watch of ``path`` (a list path); returns once the stream is open. Events reach ``on_event``
        with their arrival time (time.monotonic)."""
        opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def run() -> None:
            resource_version = ""
            while True:
                params = {"watch": "1", "timeoutSeconds": "3600", "allowWatchBookmarks": "true"}
                if resource_version:
                    params["resourceVersion"] = resource_version
                try:
                    async with self.session.get(
                        f"{self.server}/{path}", params=params, timeout=aiohttp.ClientTimeout(total=None)
                    ) as response:
                        if response.status != 200:
                            raise RuntimeError(f"watch {path}: {response.status} {await response.text()}")
                        if not opened.done():
                            opened.set_result(None)
                        buffer = b""
                        async for chunk in response.content.iter_any():
                            now = time.monotonic()
                            buffer += chunk
                            *lines, buffer = buffer.split(b"\n")
                            for line in lines:
                                if not line.strip():
                                    continue
                                event = json.loads(line)
                                obj = event.get("object") or {}
                                resource_version = obj.get("metadata", {}).get("resourceVersion", resource_version)
                                if event.get("type") in {"ADDED", "MODIFIED", "DELETED"}:
                                    on_event(event["type"], obj, now)
                except (aiohttp.ClientError, TimeoutError) as error:
                    if not opened.done():
                        opened.set_exception(error)
                        return
                    await asyncio.sleep(0.2)  # reconnect from the last resourceVersion

        task = asyncio.get_running_loop().create_task(run())
        await opened
        return task

    async def metrics(self) -> str:
        text: str = await self.request("GET", "/metrics")
        return text


def object_path(manifest: dict[str, Any]) -> str:
    api_version, kind = manifest["apiVersion"], manifest["kind"]
    meta = manifest["metadata"]
    base = f"apis/{api_version}" if "/" in api_version else f"api/{api_version}"
    plural = {
        "Deployment": "deployments",
        "Service": "services",
        "HorizontalPodAutoscaler": "horizontalpodautoscalers",
        "PodDisruptionBudget": "poddisruptionbudgets",
        "HTTPRoute": "httproutes",
        "ModelAPI": PLURAL,
    }[kind]
    return f"{base}/namespaces/{meta['namespace']}/{plural}/{meta['name']}"


def modelapi_path(namespace: str) -> str:
    return f"apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"


def metric_sum(text: str, name: str, **labels: str) -> float:
    """Sum of a Prometheus counter's samples whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{key}="{val}"' in head for key, val in labels.items()):
            total += float(value)
    return total


WRITES: tuple[tuple[str, str], ...] = (
    *(("POST", "modelapis"), ("PATCH", "modelapis"), ("POST", "deployments"), ("APPLY", "deployments")),
    *(("APPLY", "services"), ("APPLY", "horizontalpodautoscalers"), ("APPLY", "poddisruptionbudgets")),
)


def write_latencies(before: str, after: str) -> dict[str, float]:
    """Mean apiserver latency (ms, all clients) of the writes that make a ModelAPI's children, between two scrapes
    of /metrics (apiserver_request_duration_seconds)."""
    means = {}
    for verb, res in WRITES:
        labels = {"verb": verb, "resource": res, "subresource": ""}
        name = "apiserver_request_duration_seconds"
        total = metric_sum(after, f"{name}_sum", **labels) - metric_sum(before, f"{name}_sum", **labels)
        count = metric_sum(after, f"{name}_count", **labels) - metric_sum(before, f"{name}_count", **labels)
        if count:
            means[f"{verb} {res}"] = round(1000 * total / count, 1)
    return means


# -- what the bench creates -----------------------------------------------------------------------------------------
def modelapi_manifest(name: str, namespace: str) -> dict[str, Any]:
    """examples/iris/model.yaml with a unique name and small resources (1,000 pods fit the two kwok nodes)."""
    manifest: dict[str, Any] = yaml.safe_load(IRIS.read_text())
    manifest["metadata"] = {"name": name, "namespace": namespace}
    manifest["spec"]["runtime"]["resources"] = {"cpu": "10m", "memory": "16Mi"}
    return manifest


def floor_children(body: dict[str, Any], *, owned: bool) -> list[dict[str, Any]]:
    """The children the operator would make for ``body`` (its own builders), as the floor applies them."""
    settings = OperatorSettings()
    meta = body["metadata"]
    owner = Owner(name=meta["name"], namespace=meta["namespace"], uid=meta.get("uid") or "0" * 8)
    images = RuntimeImages(cpu=settings.cpu_image, gpu=settings.gpu_image)
    spec = ModelAPISpec.model_validate(body["spec"])
    children = desired_children(spec, owner, images, gateway_api_installed=False, now=dt.datetime.now(dt.UTC))
    for child in children:
        if child["kind"] == "Deployment":
            child["spec"] = {"replicas": 1, **child["spec"]}
        if not owned:  # no ModelAPI: no owner (the garbage collector would delete orphans) and not ours
            child["metadata"].pop("ownerReferences", None)
            child["metadata"]["labels"]["app.kubernetes.io/managed-by"] = FLOOR_MANAGER
            if child["kind"] == "Deployment":
                child["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/managed-by"] = FLOOR_MANAGER
    return children


# -- tracking ----------------------------------------------------------------------------------------------------------
@dataclass
class Tracker:
    """First-seen times (time.monotonic) of each ModelAPI's children, available Deployments and Ready."""

    children: dict[str, dict[str, float]] = field(default_factory=dict)
    complete: dict[str, float] = field(default_factory=dict)
    available: dict[str, float] = field(default_factory=dict)
    listed: dict[str, float] = field(default_factory=dict)  # the <name> Service's EndpointSlices list a ready pod
    ready: dict[str, float] = field(default_factory=dict)
    modelapi_writes: int = 0  # MODIFIED events of ModelAPIs: finalizer, kopf annotations, status patches
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def on_child(self, kind: str, obj: dict[str, Any], now: float) -> None:
        meta = obj.get("metadata", {})
        model = (meta.get("labels") or {}).get(NAME_LABEL)
        if not model:
            return
        slot = kind
        if kind == "Service":
            slot = "Service/stable" if meta.get("name", "").endswith("-stable") else "Service/main"
        seen = self.children.setdefault(model, {})
        seen.setdefault(slot, now)
        if model not in self.complete and all(w in seen for w in WANTED):
            self.complete[model] = max(seen.values())
            self.changed.set()
        if kind == "Deployment" and model not in self.available:
            status = obj.get("status") or {}
            if int(status.get("availableReplicas") or 0) >= 1:
                self.available[model] = now
                self.changed.set()

    def on_slice(self, _type: str, obj: dict[str, Any], now: float) -> None:
        """The EndpointSlice controller's slice of a model's ``<name>`` Service lists a ready pod: what Ready waits
        for after the Deployment is available (the controller-manager's EndpointSlice controller writes it)."""
        labels = obj.get("metadata", {}).get("labels") or {}
        model = labels.get(NAME_LABEL)
        if not model or model in self.listed or labels.get(SERVICE_NAME_LABEL) != model:
            return
        endpoints = obj.get("endpoints") or []
        if any((endpoint.get("conditions") or {}).get("ready") is not False for endpoint in endpoints):
            self.listed[model] = now
            self.changed.set()

    def on_modelapi(self, type_: str, obj: dict[str, Any], now: float) -> None:
        meta, status = obj.get("metadata", {}), obj.get("status") or {}
        if type_ == "MODIFIED":
            self.modelapi_writes += 1
        name = meta.get("name")
        if not name or name in self.ready:
            return
        generation = meta.get("generation")
        if status.get("observedGeneration") != generation:
            return
        for condition in status.get("conditions") or []:
            if (
                condition.get("type") == "Ready"
                and condition.get("status") == "True"
                and condition.get("observedGeneration", generation) == generation
            ):
                self.ready[name] = now
                self.changed.set()

    async def wait(self, done: Callable[[], bool], timeout: float, what: str) -> bool:
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                log(f"TIMEOUT waiting for {what}")
                return False
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), timeout=min(left, 5))
        return True


async def watch_namespace(
    api: Api, namespace: str, tracker: Tracker, *, modelapis: bool, slices: bool = False
) -> list[asyncio.Task[None]]:
    tasks = []
    for kind, (prefix, plural) in CHILD_KINDS.items():

        def handler(_type: str, obj: dict[str, Any], now: float, kind: str = kind) -> None:
            tracker.on_child(kind, obj, now)

        tasks.append(await api.watch(f"{prefix}/namespaces/{namespace}/{plural}", handler))
    if slices:
        slices_path = f"apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"
        tasks.append(await api.watch(slices_path, tracker.on_slice))
    if modelapis:
        tasks.append(await api.watch(modelapi_path(namespace), tracker.on_modelapi))
    return tasks


# -- the operator process ----------------------------------------------------------------------------------------------
class Operator:
    def __init__(self, kubeconfig: Path, log_path: Path, *, verbose: bool) -> None:
        self.kubeconfig, self.log_path, self.verbose = kubeconfig, log_path, verbose
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        script = Path(sys.executable).parent / "modelapi-operator"
        env = {k: v for k, v in os.environ.items() if not k.startswith("MODELAPI_OPERATOR_")}  # default settings
        env["KUBECONFIG"] = str(self.kubeconfig)
        with self.log_path.open("ab") as out:
            args = [str(script), *(["--verbose"] if self.verbose else [])]
            self.process = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def proc_status(self) -> dict[str, int]:
        """VmRSS and VmHWM in kB."""
        values = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in {"VmRSS", "VmHWM"}:
                values[key] = int(rest.split()[0])
        return values

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
        return ticks / os.sysconf("SC_CLK_TCK")


async def operator_identity(api: Api, env: dict[str, str], workdir: Path) -> Path:
    """The chart's ServiceAccount, ClusterRole and binding for the operator, a FlowSchema that matches only that
    ServiceAccount, and a kubeconfig with its token. Returns the kubeconfig path."""
    helm = env.get("HELM", "helm")
    rendered = subprocess.run(
        [
            *(helm, "template", RELEASE, str(ROOT / "charts" / "modelapi"), "-n", OPERATOR_NS),
            *("--set", "peering.enabled=false", "--kube-version", env.get("KUBE_VERSION", "v1.33.0")),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    account = next(
        d["metadata"]["name"]
        for d in docs
        if d["kind"] == "ServiceAccount" and d["metadata"]["labels"].get("app.kubernetes.io/component") == "operator"
    )  # the chart has other ServiceAccounts (the activator's): the operator's is the one its Deployment runs as
    bindings = [
        d
        for d in docs
        if d["kind"] in {"ClusterRoleBinding", "RoleBinding"}
        and any(s.get("kind") == "ServiceAccount" and s.get("name") == account for s in d.get("subjects", []))
    ]
    roles = {(b["roleRef"]["kind"], b["roleRef"]["name"]) for b in bindings}
    wanted = [
        d
        for d in docs
        if (d["kind"] == "ServiceAccount" and d["metadata"]["name"] == account)
        or (d["kind"], d["metadata"]["name"]) in roles
    ] + bindings
    await api.request("POST", "api/v1/namespaces", {"metadata": {"name": OPERATOR_NS}}, ok=(409,))
    for doc in wanted:
        kind = doc["kind"]
        namespaced = kind in {"ServiceAccount", "Role", "RoleBinding"}
        if namespaced:
            doc["metadata"]["namespace"] = OPERATOR_NS
        base = "api/v1" if kind == "ServiceAccount" else "apis/rbac.authorization.k8s.io/v1"
        plural = {
            "ServiceAccount": "serviceaccounts",
            "ClusterRole": "clusterroles",
            "ClusterRoleBinding": "clusterrolebindings",
            "Role": "roles",
            "RoleBinding": "rolebindings",
        }[kind]
        ns = f"namespaces/{OPERATOR_NS}/" if namespaced else ""
        await api.request(
            "PATCH",
            f"{base}/{ns}{plural}/{doc['metadata']['name']}",
            doc,
            params={"fieldManager": "bench", "force": "true"},
            content_type="application/apply-patch+yaml",
        )
    flow_schema = {
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
        "kind": "FlowSchema",
        "metadata": {"name": FLOW_SCHEMA},
        "spec": {
            "matchingPrecedence": 1000,
            "priorityLevelConfiguration": {"name": "workload-low"},  # where "service-accounts" puts it anyway
            "distinguisherMethod": {"type": "ByUser"},
            "rules": [
                {
                    "subjects": [
                        {"kind": "ServiceAccount", "serviceAccount": {"name": account, "namespace": OPERATOR_NS}}
                    ],
                    "resourceRules": [
                        {
                            "verbs": ["*"],
                            "apiGroups": ["*"],
                            "resources": ["*"],
                            "namespaces": ["*"],
                            "clusterScope": True,
                        }
                    ],
                    "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                }
            ],
        },
    }
    await api.request(
        "PATCH",
        f"apis/flowcontrol.apiserver.k8s.io/v1/flowschemas/{FLOW_SCHEMA}",
        flow_schema,
        params={"fieldManager": "bench", "force": "true"},
        content_type="application/apply-patch+yaml",
    )
    review = await api.request(
        "POST",
        f"api/v1/namespaces/{OPERATOR_NS}/serviceaccounts/{account}/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 4 * 3600}},
    )
    token = review["status"]["token"]
    path = workdir / "operator.kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "bench",
                        "cluster": {"server": env["KUBE_APISERVER_URL"], "certificate-authority": env["KUBE_CA_FILE"]},
                    }
                ],
                "users": [{"name": account, "user": {"token": token}}],
                "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": account}}],
                "current-context": "bench",
            }
        )
    )
    path.chmod(0o600)
    return path


async def operator_requests(api: Api) -> float:
    return metric_sum(await api.metrics(), "apiserver_flowcontrol_dispatched_requests_total", flow_schema=FLOW_SCHEMA)


# -- phases ------------------------------------------------------------------------------------------------------------
async def new_namespace(api: Api, label: str) -> str:
    name = f"mbench-{label}-{secrets.token_hex(3)}"
    await api.request("POST", "api/v1/namespaces", {"metadata": {"name": name}})
    return name


async def delete_namespace(api: Api, namespace: str, timeout: float) -> float | None:
    """Delete a namespace and wait until it is gone; returns the seconds it took (None: still there)."""
    start = time.monotonic()
    await api.request("DELETE", f"api/v1/namespaces/{namespace}", ok=(404,))
    while time.monotonic() - start < timeout:
        result = await api.request("GET", f"api/v1/namespaces/{namespace}", ok=(404,))
        if not isinstance(result, dict) or result.get("kind") == "Status":
            return time.monotonic() - start
        await asyncio.sleep(2)
    log(f"namespace {namespace} still terminating after {timeout:.0f}s")
    return None


async def paced(count: int, rate: float, unit: Callable[[int], Coroutine[Any, Any, None]]) -> None:
    """Run ``unit(i)`` for each i, started at ``rate`` per second (0: one after the other, as fast as it goes)."""
    start = time.monotonic()
    pending: list[asyncio.Task[None]] = []
    for i in range(count):
        if rate > 0:
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            pending.append(asyncio.create_task(unit(i)))
        else:
            await unit(i)
    await asyncio.gather(*pending)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))  # nearest rank
    return ordered[index]


def summary(latencies: list[float]) -> dict[str, float]:
    return {
        "n": len(latencies),
        "p50": percentile(latencies, 50),
        "p90": percentile(latencies, 90),
        "p99": percentile(latencies, 99),
        "max": max(latencies) if latencies else float("nan"),
        "mean": statistics.fmean(latencies) if latencies else float("nan"),
    }


async def children_latency(api: Api, count: int, rate: float, *, floor: bool, timeout: float) -> dict[str, Any]:
    """Create ``count`` ModelAPIs at ``rate``/s; time each one's children (operator, or the floor's direct SSA)."""
    namespace = await new_namespace(api, "floor" if floor else "latency")
    tracker = Tracker()
    watches = await watch_namespace(api, namespace, tracker, modelapis=False)
    started: dict[str, float] = {}
    first = time.monotonic()

    async def unit(i: int) -> None:
        name = f"m-{i:04d}"
        created = await api.request("POST", modelapi_path(namespace), modelapi_manifest(name, namespace))
        started[name] = time.monotonic()
        if floor:
            for child in floor_children(created, owned=True):
                await api.apply(child, FLOOR_MANAGER)

    await paced(count, rate, unit)
    await tracker.wait(lambda: len(tracker.complete) >= count, timeout, f"children of {count} ModelAPIs")
    for task in watches:
        task.cancel()
    latencies = [tracker.complete[n] - t for n, t in started.items() if n in tracker.complete]
    return {
        "namespace": namespace,
        "complete": len(tracker.complete),
        "wall": max(tracker.complete.values(), default=first) - first,
        **summary(latencies),
    }


async def operator_events(api: Api, namespace: str) -> int:
    events = await api.request("GET", f"api/v1/namespaces/{namespace}/events")
    return sum(1 for e in events["items"] if (e.get("source") or {}).get("component") == "modelapi-operator")


async def ready_run(
    api: Api, count: int, concurrency: int, *, floor: bool, timeout: float, sampler: Sampler | None
) -> dict[str, Any]:
    """Bulk-create ``count`` ModelAPIs (or, as the floor, their children without any ModelAPI) and time to Ready."""
    namespace = await new_namespace(api, f"floor{count}" if floor else f"ready{count}")
    tracker = Tracker()
    watches = await watch_namespace(api, namespace, tracker, modelapis=not floor, slices=True)
    gate = asyncio.Semaphore(concurrency)
    start = time.monotonic()

    async def one(i: int) -> None:
        name = f"m-{i:04d}"
        async with gate:
            body = modelapi_manifest(name, namespace)
            if floor:
                for child in floor_children(body, owned=False):
                    await api.apply(child, FLOOR_MANAGER)
            else:
                await api.request("POST", modelapi_path(namespace), body)

    await asyncio.gather(*(one(i) for i in range(count)))
    created = time.monotonic() - start
    target = tracker.available if floor else tracker.ready
    what = "available Deployments" if floor else "Ready ModelAPIs"
    ok = await tracker.wait(lambda: len(target) >= count, timeout, f"{count} {what}")
    if floor and ok:  # the floor's Services get their EndpointSlices from the controller-manager, as the operator's
        ok = await tracker.wait(lambda: len(tracker.listed) >= count, timeout, f"{count} listed endpoints")
    for task in watches:
        task.cancel()
    if sampler is not None:
        sampler.tick()

    def last(times: dict[str, float]) -> float | None:
        return max(times.values()) - start if len(times) >= count else None

    return {
        "namespace": namespace,
        "count": count,
        "ok": ok,
        "created_s": created,
        "all_children_s": last(tracker.complete),
        "all_available_s": last(tracker.available),
        "all_listed_s": last(tracker.listed),
        "all_ready_s": None if floor else last(tracker.ready),
        "reached": len(target),
        "modelapi_writes": tracker.modelapi_writes,
        "operator_events": 0 if floor else await operator_events(api, namespace),
    }


@dataclass
class Sampler:
    """Load average and the operator's RSS, sampled once a second in the background."""

    operator: Operator | None = None
    load_max: float = 0.0
    load_samples: list[float] = field(default_factory=list)
    rss_max_kb: int = 0

    def tick(self) -> None:
        load = float(Path("/proc/loadavg").read_text().split()[0])
        self.load_samples.append(load)
        self.load_max = max(self.load_max, load)
        if self.operator is not None and self.operator.alive():
            with contextlib.suppress(OSError):
                self.rss_max_kb = max(self.rss_max_kb, self.operator.proc_status().get("VmRSS", 0))

    async def run(self) -> None:
        while True:
            self.tick()
            await asyncio.sleep(1)


async def ensure_service_range(api: Api, services: int) -> list[str]:
    """Two Services per ModelAPI: the harness's Service range (a /24) holds 254 ClusterIPs, so 1,000 ModelAPIs
    need more. When the ServiceCIDRs hold fewer than ``services`` addresses, adds one (networking.k8s.io/v1, GA in
    Kubernetes 1.33) of 10.1.0.0/16."""
    cidrs = await api.request("GET", "apis/networking.k8s.io/v1/servicecidrs")
    size = sum(
        ipaddress.ip_network(cidr).num_addresses - 2 for item in cidrs["items"] for cidr in item["spec"]["cidrs"]
    )
    if size >= services or any(item["metadata"]["name"] == SERVICE_CIDR_NAME for item in cidrs["items"]):
        return []
    await api.request(
        "POST",
        "apis/networking.k8s.io/v1/servicecidrs",
        {"metadata": {"name": SERVICE_CIDR_NAME}, "spec": {"cidrs": [SERVICE_CIDR]}},
    )
    return [f"ServiceCIDR {SERVICE_CIDR_NAME} {SERVICE_CIDR} added"]


BINARY_UNITS = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4}


def mebibytes(quantity: str) -> int:
    """A Kubernetes quantity with a binary suffix (or none: bytes) in MiB, rounded up."""
    unit = quantity[-2:]
    number, scale = (quantity[:-2], BINARY_UNITS[unit]) if unit in BINARY_UNITS else (quantity, 0)
    size: int = int(number) * 1024**scale
    return -(-size // 1024**2)


def pod_ephemeral_storage_mib() -> int:
    """What one bench pod requests of ephemeral storage (the operator sizes it from the model volume and cache)."""
    body = modelapi_manifest("m-0000", "bench")
    deployment = next(c for c in floor_children(body, owned=False) if c["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    requests = [c.get("resources", {}).get("requests", {}) for c in pod["containers"]]
    return sum(mebibytes(r.get("ephemeral-storage", "0")) for r in requests)


async def ensure_pod_capacity(api: Api, pods: int) -> list[str]:
    """Raise each kwok node's pods and ephemeral-storage capacity/allocatable so that ``pods`` bench pods fit on
    each (Node status subresource; kwok's 1Ti would hold 186 pods of 5.5 GiB each); returns notes."""
    notes = []
    storage = f"{pods * pod_ephemeral_storage_mib()}Mi"
    nodes = await api.request("GET", "api/v1/nodes")
    for node in nodes["items"]:
        name = node["metadata"]["name"]
        allocatable = node["status"].get("allocatable", {})
        current = int(allocatable.get("pods", "0"))
        room = mebibytes(allocatable.get("ephemeral-storage", "0"))
        if current < pods or room < mebibytes(storage):
            wanted = {"pods": str(max(current, pods)), "ephemeral-storage": storage}
            patch = {"status": {"capacity": wanted, "allocatable": wanted}}
            await api.request(
                "PATCH",
                f"api/v1/nodes/{name}/status",
                patch,
                content_type="application/merge-patch+json",
            )
            notes.append(f"{name}: pods {current} -> {wanted['pods']}, ephemeral-storage {room}Mi -> {storage}")
    return notes


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def commit() -> str:
    """The checked-out commit, with ``+dirty`` when the operator's code differs from it."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()

    dirty = git("status", "--porcelain", "--", "operator", "pyproject.toml", "constraints.txt")
    return git("rev-parse", "--short", "HEAD") + ("+dirty" if dirty else "")


def pip_freeze() -> list[str]:
    out = subprocess.run([sys.executable, "-m", "pip", "freeze"], capture_output=True, text=True, check=False).stdout
    return [line for line in out.splitlines() if line and not line.startswith("-e ")]


def machine() -> dict[str, str]:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


async def harness_floor(api: Api, n: int, concurrency: int, timeout: float, label: str) -> dict[str, Any]:
    """The harness floor of ``n``: their children applied directly, no operator, until every Deployment is available;
    its namespace deleted afterwards."""
    log(f"{label}: {n} Deployments (+Services, HPA, PDB) applied directly, until all available")
    floor = await ready_run(api, n, concurrency, floor=True, timeout=timeout, sampler=None)
    log(f"{label}: {n} available after {floor['all_available_s']}s")
    took = await delete_namespace(api, floor["namespace"], timeout)
    log(f"deleted {floor['namespace']} in {took}s")
    return floor


# -- main --------------------------------------------------------------------------------------------------------------
async def run(args: argparse.Namespace, env: dict[str, str], workdir: Path) -> dict[str, Any]:
    api = Api(env["KUBE_APISERVER_URL"], env["KUBE_CA_FILE"], env["KUBE_TOKEN"])
    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit(),
        "machine": machine(),
        "pip_freeze": pip_freeze(),
        "load_before": loadavg(),
        "args": {k: v for k, v in vars(args).items() if k not in {"cluster_dir"}},
    }
    version = await api.request("GET", "/version")
    results["kubernetes"] = version.get("gitVersion")
    counts = sorted(args.ready_counts)
    results["capacity"] = [
        *await ensure_pod_capacity(api, max([*counts, args.count]) + 200),
        *await ensure_service_range(api, 2 * max([*counts, args.count]) + 50),
    ]
    operator = Operator(await operator_identity(api, env, workdir), workdir / "operator.log", verbose=args.verbose)
    sampler = Sampler()
    sampler_task = asyncio.create_task(sampler.run())
    timeout = args.timeout
    try:
        # 1. the floors, with no operator running; the children floor last, right before the operator's run
        if args.ready_floor:
            results["floor_ready"] = await harness_floor(api, counts[-1], args.concurrency, timeout, "floor")
        log(f"floor: {args.count} ModelAPIs, children applied directly (SSA, one client) at {args.rate}/s")
        metrics0 = await api.metrics()
        floor = await children_latency(api, args.count, args.rate, floor=True, timeout=timeout)
        floor["apiserver_ms"] = write_latencies(metrics0, await api.metrics())
        results["floor_children"] = floor
        log(f"floor: p50 {floor['p50']:.3f}s p99 {floor['p99']:.3f}s wall {floor['wall']:.1f}s")
        took = await delete_namespace(api, floor["namespace"], timeout)
        log(f"deleted {floor['namespace']} in {took}s")

        # 2. the operator
        operator.start()
        sampler.operator = operator
        base_requests = await operator_requests(api)
        await asyncio.sleep(args.startup_seconds)
        results["startup"] = {
            "rss_kb": operator.proc_status()["VmRSS"],
            "cpu_s": operator.cpu_seconds(),
            "requests": await operator_requests(api) - base_requests,
        }
        log(f"operator pid {operator.pid} up: {results['startup']}")

        log(f"operator: {args.count} ModelAPIs at {args.rate}/s, apply -> all children")
        before = await operator_requests(api)
        metrics0 = await api.metrics()
        latency = await children_latency(api, args.count, args.rate, floor=False, timeout=timeout)
        latency["apiserver_ms"] = write_latencies(metrics0, await api.metrics())
        latency["requests"] = await operator_requests(api) - before
        results["operator_children"] = latency
        log(f"operator: p50 {latency['p50']:.3f}s p99 {latency['p99']:.3f}s wall {latency['wall']:.1f}s")
        took = await delete_namespace(api, latency["namespace"], timeout)
        log(f"deleted {latency['namespace']} in {took}s")

        results["ready"] = []
        for n in counts:
            log(f"operator: {n} ModelAPIs bulk-created ({args.concurrency} in flight), until all Ready")
            cpu0, req0 = operator.cpu_seconds(), await operator_requests(api)
            entry = await ready_run(api, n, args.concurrency, floor=False, timeout=timeout, sampler=sampler)
            entry["operator_cpu_s"] = operator.cpu_seconds() - cpu0
            entry["requests"] = await operator_requests(api) - req0
            entry["load_after"] = loadavg()
            entry["rss_kb_after"] = operator.proc_status()["VmRSS"]
            results["ready"].append(entry)
            log(f"operator: {n} Ready after {entry['all_ready_s']}s ({entry})")
            if n != counts[-1]:
                took = await delete_namespace(api, entry["namespace"], timeout)
                entry["delete_s"] = took
                log(f"deleted {entry['namespace']} in {took}s")

        # 3. idle, with the largest count present and Ready
        log(f"idle: settling {args.settle_seconds}s, then measuring {args.idle_seconds}s")
        await asyncio.sleep(args.settle_seconds)
        metrics0 = await api.metrics()
        cpu0, wall0 = operator.cpu_seconds(), time.monotonic()
        await asyncio.sleep(args.idle_seconds)
        metrics1 = await api.metrics()
        cpu1, wall1 = operator.cpu_seconds(), time.monotonic()
        span = wall1 - wall0

        def delta(name: str, **labels: str) -> float:
            return metric_sum(metrics1, name, **labels) - metric_sum(metrics0, name, **labels)

        status = operator.proc_status()
        results["idle"] = {
            "modelapis": counts[-1],
            "seconds": span,
            "cpu_percent": 100 * (cpu1 - cpu0) / span,
            "rss_kb": status["VmRSS"],
            "hwm_kb": status["VmHWM"],
            "operator_requests_per_s": delta("apiserver_flowcontrol_dispatched_requests_total", flow_schema=FLOW_SCHEMA)
            / span,
            "all_requests_per_s": delta("apiserver_flowcontrol_dispatched_requests_total") / span,
            "load": loadavg(),
        }
        log(f"idle: {results['idle']}")
        results["rss_max_kb"] = max(sampler.rss_max_kb, status["VmHWM"])
        results["load_max_1m"] = sampler.load_max
        results["load_mean_1m"] = statistics.fmean(sampler.load_samples) if sampler.load_samples else None
        results["bench_cpu_s"] = (
            resource.getrusage(resource.RUSAGE_SELF).ru_utime + resource.getrusage(resource.RUSAGE_SELF).ru_stime
        )
        if not args.keep:
            for entry in results["ready"][-1:]:
                took = await delete_namespace(api, entry["namespace"], timeout)
                entry["delete_s"] = took
                log(f"deleted {entry['namespace']} ({entry['count']} ModelAPIs) in {took}s")
        # 4. the harness floor again, the operator stopped: a shared machine's pace drifts over the ten minutes
        # between the two (the same floor measured 62 s and 82 s an hour apart), so Ready is compared with both
        if args.ready_floor and not args.keep:
            operator.stop()
            results["floor_ready_after"] = await harness_floor(
                api, counts[-1], args.concurrency, timeout, "floor again (the operator stopped)"
            )
    finally:
        sampler_task.cancel()
        operator.stop()
        results["operator_log"] = str(operator.log_path)
        await api.close()
    return results


def fmt(value: float | None, unit: str = "s", digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f} {unit}".strip()


def report(r: dict[str, Any]) -> str:
    m, fl, op, idle = r["machine"], r["floor_children"], r["operator_children"], r["idle"]
    lines = [
        f"### Run of {r['date']} (commit {r.get('commit', '?')})",
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), Linux {m['kernel']}, Python {m['python']}; "
        f"Kubernetes {r['kubernetes']} (local harness, kwok nodes). Load average before: {r['load_before']}; "
        f"1-min during: mean {r.get('load_mean_1m') or 0:.2f}, max {r['load_max_1m']:.2f}; after idle: {idle['load']}.",
        f"Settings: `{' '.join(sys.argv[1:]) or '(defaults)'}`; cluster changes: "
        f"{'; '.join(r['capacity']) or 'unchanged'}.",
        "",
        f"**Apply → all children** ({op['n']} ModelAPIs, created at {r['args']['rate']}/s; "
        "from the create's return until the watches saw Deployment, both Services, HPA and PDB):",
        "",
        "| who | p50 | p90 | p99 | max | wall for all | complete |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, x in (("modelapi-operator", op), ("floor: one client, SSA, no operator", fl)):
        lines.append(
            f"| {label} | {fmt(x['p50'], 's', 3)} | {fmt(x['p90'], 's', 3)} | {fmt(x['p99'], 's', 3)} "
            f"| {fmt(x['max'], 's', 3)} | {fmt(x['wall'], 's', 1)} | {x['complete']}/{x['n']} |"
        )
    lines += [
        "",
        f"Ratio operator/floor: p50 {op['p50'] / fl['p50']:.1f}x, p99 {op['p99'] / fl['p99']:.1f}x, "
        f"wall {op['wall'] / fl['wall']:.2f}x. Operator API requests in this phase: {op['requests']:.0f} "
        f"({op['requests'] / max(op['n'], 1):.1f} per ModelAPI).",
        "",
        "Mean apiserver latency of the writes during each phase (all clients, ms): operator phase "
        + ", ".join(f"{k} {v}" for k, v in op.get("apiserver_ms", {}).items())
        + "; floor phase "
        + ", ".join(f"{k} {v}" for k, v in fl.get("apiserver_ms", {}).items())
        + ".",
        "",
        "**Bulk create → Ready** (seconds from the start of the bulk create):",
        "",
        "| ModelAPIs | all created | all children | all Deployments available | all endpoints listed | all Ready "
        "| operator CPU | operator requests |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for e in r["ready"]:
        lines.append(
            f"| {e['count']} | {fmt(e['created_s'], 's', 1)} | {fmt(e['all_children_s'], 's', 1)} "
            f"| {fmt(e['all_available_s'], 's', 1)} | {fmt(e.get('all_listed_s'), 's', 1)} "
            f"| {fmt(e['all_ready_s'], 's', 1)} "
            f"| {fmt(e['operator_cpu_s'], 's', 1)} | {e['requests']:.0f} |"
        )
    floors = [(key, when) for key, when in (("floor_ready", "before"), ("floor_ready_after", "after")) if key in r]
    for key, when in floors:
        f = r[key]
        lines.append(
            f"| {f['count']} (floor {when} the operator's run: children applied directly, no operator) "
            f"| {fmt(f['created_s'], 's', 1)} | {fmt(f['all_children_s'], 's', 1)} "
            f"| {fmt(f['all_available_s'], 's', 1)} | {fmt(f.get('all_listed_s'), 's', 1)} | — | — | — |"
        )
    if floors and r["ready"]:
        largest = r["ready"][-1]
        ratios = "; ".join(
            f"{when}: all children {largest['all_children_s'] / r[key]['all_children_s']:.2f}x, "
            f"Ready {largest['all_ready_s'] / r[key]['all_available_s']:.2f}x"
            for key, when in floors
        )
        lines += ["", f"Operator / floor ({largest['count']} ModelAPIs), floor {ratios}."]
    lines += [
        "",
        f"**Operator process**: RSS at start {r['startup']['rss_kb'] / 1024:.0f} MB; peak (VmHWM) "
        f"{r['rss_max_kb'] / 1024:.0f} MB; at idle with {idle['modelapis']} ModelAPIs {idle['rss_kb'] / 1024:.0f} MB. "
        f"Idle CPU {idle['cpu_percent']:.1f} % of one core over {idle['seconds']:.0f} s. Idle apiserver requests "
        f"by the operator: {idle['operator_requests_per_s']:.2f}/s (all clients: {idle['all_requests_per_s']:.1f}/s).",
        "",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100, help="ModelAPIs for the children latency (default 100)")
    parser.add_argument(
        "--ready-counts",
        type=lambda s: [int(x) for x in s.split(",") if x],
        default=[500, 1000],
        help="bulk sizes timed to Ready (default 500,1000)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: --count 20 --ready-counts 50, idle 20 s")
    parser.add_argument("--rate", type=float, default=10, help="creates per second for the latency (0: sequential)")
    parser.add_argument("--concurrency", type=int, default=16, help="create requests in flight in the bulk create")
    parser.add_argument("--ready-floor", action="store_true", help="also time the largest count without operator")
    parser.add_argument("--idle-seconds", type=float, default=60)
    parser.add_argument("--settle-seconds", type=float, default=15, help="wait after Ready before measuring idle")
    parser.add_argument("--startup-seconds", type=float, default=5, help="wait after starting the operator")
    parser.add_argument("--timeout", type=float, default=600, help="limit of each wait")
    parser.add_argument("--verbose", action="store_true", help="run the operator with --verbose (costs CPU)")
    parser.add_argument("--keep", action="store_true", help="leave the largest ModelAPI namespace in place")
    parser.add_argument(
        "--cluster-dir",
        type=Path,
        default=Path(os.environ.get("MODELAPI_CLUSTER_DIR", ROOT / "tests" / "e2e" / "cluster" / ".run")),
        help="run dir of the local cluster (brought up when not running)",
    )
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    parser.add_argument("--markdown", type=Path, help="append the report to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.count, args.ready_counts, args.idle_seconds, args.settle_seconds = 20, [50], 20, 5
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env, started = cluster_up(args.cluster_dir)
    workdir = Path(tempfile.mkdtemp(prefix="modelapi-bench-"))
    log(f"cluster {env['KUBE_APISERVER_URL']} ({env.get('KUBE_VERSION')}); work dir {workdir}")
    try:
        results = asyncio.run(run(args, env, workdir))
    finally:
        if started and os.environ.get("MODELAPI_KEEP_CLUSTER") != "1":
            cluster_down(args.cluster_dir)
    text = report(results)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    if args.markdown:
        with args.markdown.open("a") as out:
            out.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
