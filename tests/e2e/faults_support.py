"""Helpers for tests/e2e/test_faults.py: an operator process with its own log, ModelAPI manifests, and the checks
that every fault test ends with (converged status, exactly the expected children, nothing orphaned)."""

from __future__ import annotations

import copy
import re
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .conftest import Cluster, wait_until
from .processes import OperatorProcess

API_VERSION = "serving.modelapi.io/v1alpha1"
LABEL_NAME = "serving.modelapi.io/name"
ROLE_ANNOTATION = "serving.modelapi.io/role"
MODEL_URI_ANNOTATION = "serving.modelapi.io/model-uri"
MANAGED_BY = "app.kubernetes.io/managed-by=modelapi-operator"
CHILD_KINDS = ("deployments", "services", "horizontalpodautoscalers", "poddisruptionbudgets", "httproutes")
# What an unhandled exception looks like in the operator's log (kopf's wording, or Python's own).
UNHANDLED = re.compile(r"Traceback \(most recent call last\)|failed with an exception|Unhandled exception")


class FaultOperator(OperatorProcess):
    """``modelapi-operator`` with its own log file, so several tests (or operators) never share one."""

    def __init__(self, cluster: Cluster, settings: Mapping[str, str], log_name: str) -> None:
        super().__init__(cluster, dict(settings))
        self.log_path = cluster.logs_dir / log_name
        self.log_path.write_bytes(b"")
        self.starts = 0

    def start(self) -> None:
        super().start()
        self.starts += 1

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def unhandled(self) -> list[str]:
        """Lines of the log that show an unhandled exception, with the line before each for context."""
        lines = self.log().splitlines()
        return [f"{lines[i - 1] if i else ''}\n{line}" for i, line in enumerate(lines) if UNHANDLED.search(line)]

    def exited(self) -> bool:
        return self.process is not None and self.process.poll() is not None


def modelapi(
    name: str,
    uri: str,
    *,
    min_replicas: int = 1,
    max_replicas: int = 3,
    canary: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A small ModelAPI: kwok pods run nothing, so the artifact need not exist."""
    spec: dict[str, Any] = {
        "model": {"uri": uri},
        "runtime": {"resources": {"cpu": "50m", "memory": "64Mi"}},
        "autoscaling": {"minReplicas": min_replicas, "maxReplicas": max_replicas},
    }
    if canary is not None:
        spec["rollout"] = {"strategy": "Canary", "canary": dict(canary)}
    return {"apiVersion": API_VERSION, "kind": "ModelAPI", "metadata": {"name": name}, "spec": spec}


def apply_all(cluster: Cluster, namespace: str, manifests: Iterable[Mapping[str, Any]]) -> None:
    """One kubectl call for many objects."""
    text = yaml.safe_dump_all([dict(m) for m in manifests])
    cluster.kubectl("apply", "-f", "-", namespace=namespace, input=text, timeout=120)


def condition(body: Mapping[str, Any], kind: str) -> dict[str, Any]:
    conditions = (body.get("status") or {}).get("conditions") or []
    return next((dict(c) for c in conditions if c.get("type") == kind), {})


def modelapis(cluster: Cluster, namespace: str) -> dict[str, dict[str, Any]]:
    return {item["metadata"]["name"]: item for item in cluster.get_json("modelapis", namespace=namespace)["items"]}


def children(cluster: Cluster, namespace: str, kinds: Sequence[str] = CHILD_KINDS) -> list[dict[str, Any]]:
    """Every object the operator manages in the namespace (by its managed-by label)."""
    listed = cluster.get_json(",".join(kinds), "-l", MANAGED_BY, namespace=namespace)
    return list(listed["items"])


@dataclass(frozen=True)
class Expected:
    """What a converged ModelAPI looks like."""

    uri: str
    replicas: int
    pdb: bool = True
    last_known_good: str | None = None  # the previous model URI kept at 0 replicas after a promotion


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)

    def add(self, text: str) -> None:
        self.problems.append(text)


def convergence_problems(body: Mapping[str, Any], expected: Expected) -> list[str]:
    """Why a ModelAPI's status is not (yet) the converged one; empty when it is."""
    name = body["metadata"]["name"]
    status = body.get("status") or {}
    problems = []
    generation = body["metadata"].get("generation")
    ready = condition(body, "Ready")
    if status.get("observedGeneration") != generation or ready.get("observedGeneration") != generation:
        problems.append(f"{name}: observedGeneration {status.get('observedGeneration')} != generation {generation}")
    if ready.get("status") != "True":
        problems.append(f"{name}: Ready={ready.get('status')} {ready.get('reason')}: {ready.get('message')}")
    if condition(body, "Progressing").get("status") != "False":
        problems.append(f"{name}: still Progressing ({condition(body, 'Progressing').get('reason')})")
    if condition(body, "Degraded").get("status") != "False":
        problems.append(f"{name}: Degraded ({condition(body, 'Degraded').get('reason')})")
    if status.get("canary"):
        problems.append(f"{name}: status.canary still set: {status['canary']}")
    revisions = status.get("revisions") or []
    stable = [r for r in revisions if r.get("role") == "stable"]
    if len(stable) != 1 or stable[0].get("modelUri") != expected.uri:
        problems.append(f"{name}: stable revisions {stable}, expected one serving {expected.uri}")
    elif stable[0].get("weight") != 100 or stable[0].get("readyReplicas") != expected.replicas:
        problems.append(f"{name}: stable {stable[0]}, expected weight 100 and {expected.replicas} ready")
    others = [(r.get("role"), r.get("modelUri")) for r in revisions if r.get("role") != "stable"]
    wanted = [("lastKnownGood", expected.last_known_good)] if expected.last_known_good else []
    if others != wanted:
        problems.append(f"{name}: other revisions {others}, expected {wanted}")
    if status.get("readyReplicas") != expected.replicas or status.get("replicas") != expected.replicas:
        problems.append(f"{name}: replicas {status.get('readyReplicas')}/{status.get('replicas')}")
    return problems


def child_problems(cluster: Cluster, namespace: str, expected: Mapping[str, Expected]) -> list[str]:
    """Duplicates, orphans and missing children: every child is owned by an existing ModelAPI, each ModelAPI has
    exactly one stable Deployment (plus its last-known-good after a promotion), its Services, HPA and PDB, and as many
    pods as its stable revision wants."""
    problems = []
    bodies = modelapis(cluster, namespace)
    uids = {body["metadata"]["uid"]: name for name, body in bodies.items()}
    by_model: dict[str, list[dict[str, Any]]] = {name: [] for name in bodies}
    for item in children(cluster, namespace):
        meta = item["metadata"]
        what = f"{item['kind']} {meta['name']}"
        owners = [ref for ref in meta.get("ownerReferences") or [] if ref.get("kind") == "ModelAPI"]
        if len(owners) != 1 or owners[0]["uid"] not in uids:
            problems.append(f"orphan: {what} owned by {owners} (ModelAPIs: {sorted(uids.values())})")
            continue
        model = uids[owners[0]["uid"]]
        if meta.get("labels", {}).get(LABEL_NAME) != model:
            problems.append(f"{what}: label {LABEL_NAME}={meta.get('labels', {}).get(LABEL_NAME)} but owner {model}")
        by_model[model].append(item)
    pods = cluster.get_json("pods", "-l", LABEL_NAME, namespace=namespace)["items"]
    for name, want in expected.items():
        if name not in bodies:
            problems.append(f"{name}: ModelAPI missing")
            continue
        mine = by_model[name]
        deployments = [i for i in mine if i["kind"] == "Deployment"]
        roles = sorted(i["metadata"].get("annotations", {}).get(ROLE_ANNOTATION, "?") for i in deployments)
        wanted_roles = sorted(["stable", *(["lastKnownGood"] if want.last_known_good else [])])
        if roles != wanted_roles:
            problems.append(f"{name}: Deployments with roles {roles}, expected {wanted_roles}")
        stable = [i for i in deployments if i["metadata"].get("annotations", {}).get(ROLE_ANNOTATION) == "stable"]
        if len(stable) == 1:
            served = stable[0]["metadata"].get("annotations", {}).get(MODEL_URI_ANNOTATION)
            if served != want.uri:
                problems.append(f"{name}: stable Deployment serves {served}, expected {want.uri}")
            if stable[0]["spec"].get("replicas") != want.replicas:
                problems.append(f"{name}: stable Deployment has {stable[0]['spec'].get('replicas')} replicas")
            hpa = [i for i in mine if i["kind"] == "HorizontalPodAutoscaler"]
            if len(hpa) != 1 or hpa[0]["spec"]["scaleTargetRef"]["name"] != stable[0]["metadata"]["name"]:
                problems.append(f"{name}: HPAs {[h['metadata']['name'] for h in hpa]} not one on the stable revision")
        services = sorted(i["metadata"]["name"] for i in mine if i["kind"] == "Service")
        if services != sorted([name, f"{name}-stable"]):
            problems.append(f"{name}: Services {services}")
        pdbs = [i["metadata"]["name"] for i in mine if i["kind"] == "PodDisruptionBudget"]
        if pdbs != ([name] if want.pdb else []):
            problems.append(f"{name}: PDBs {pdbs}")
        running = [p for p in pods if p["metadata"]["labels"].get(LABEL_NAME) == name]
        live = [p for p in running if not p["metadata"].get("deletionTimestamp")]
        if len(live) != want.replicas:
            problems.append(f"{name}: {len(live)} pods, expected {want.replicas}")
    return problems


def wait_converged(
    cluster: Cluster, namespace: str, expected: Mapping[str, Expected], timeout: float, what: str
) -> dict[str, dict[str, Any]]:
    """Wait until every ModelAPI's status and children are the converged ones; fail with what is still wrong."""
    last: list[str] = []

    def converged() -> dict[str, dict[str, Any]] | None:
        nonlocal last
        bodies = modelapis(cluster, namespace)
        last = [
            p for name, want in expected.items() for p in convergence_problems(bodies.get(name, _empty(name)), want)
        ]
        if not last:
            last = child_problems(cluster, namespace, expected)
        return bodies if not last else None

    try:
        result: dict[str, dict[str, Any]] = wait_until(converged, timeout=timeout, interval=2, what=what)
    except AssertionError as error:
        shown = "\n  ".join(last[:25])
        raise AssertionError(f"{error}; {len(last)} problems left, e.g.:\n  {shown}") from None
    return result


def _empty(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "generation": -1}}


def chart_docs(cluster: Cluster, chart: Path, release: str, namespace: str, *sets: str) -> list[dict[str, Any]]:
    """Everything the chart renders (helm template) for an operator that watches ``namespace`` only, with extra
    ``--set`` values."""
    args = ["--set", f"watchNamespaces={{{namespace}}}"]
    for value in sets:
        args += ["--set", value]
    proc = subprocess.run(
        [
            cluster.env["HELM"],
            "template",
            release,
            str(chart),
            "--namespace",
            namespace,
            "--kube-version",
            cluster.env["KUBE_VERSION"],
            *args,
        ],
        env=cluster.subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


RBAC_KINDS = frozenset({"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"})


def chart_rbac(cluster: Cluster, chart: Path, release: str, namespace: str, *sets: str) -> list[dict[str, Any]]:
    """The chart's ServiceAccount and RBAC for an operator that watches ``namespace`` only (helm template)."""
    return [doc for doc in chart_docs(cluster, chart, release, namespace, *sets) if doc["kind"] in RBAC_KINDS]


# ---- hypothesis strategies for ModelAPI specs (issue 9, item 8) --------------------------------------------------
# One change that breaks (or, next to some other fields, may not break) a rule of the schema: a path and a value.
MUTATIONS: tuple[tuple[str, Any], ...] = (
    ("model.uri", "ftp://host/model.onnx"),
    ("model.uri", "s3://bucket-only"),
    ("model.uri", "s3://user:pw@models/iris/model.onnx"),
    ("model.uri", "s3://models/a key/model.onnx"),
    ("model.uri", ""),
    ("model.sha256", "abc"),
    ("model.format", "torch"),
    ("model.handler", "s3://models/iris/1/handler.txt"),
    ("model.handlerSha256", "0" * 64),
    ("storage.endpoint", "https://user:pw@s3.storage"),
    ("storage.region", "US East"),
    ("storage.credentialsSecret", "Bad_Name"),
    ("runtime.resources.cpu", "0"),
    ("runtime.resources.cpu", "-1"),
    ("runtime.resources.memory", "lots"),
    ("runtime.resources.gpu", 17),
    ("runtime.batching.maxBatchSize", 0),
    ("runtime.batching.maxLatencyMs", -1),
    ("runtime.threads", 5000),
    ("runtime.image", "has space"),
    ("runtime.env", [{"name": "MODELAPI_PORT", "value": "1"}]),
    ("runtime.env", [{"name": "DB_PASSWORD", "value": "hunter2"}]),
    ("runtime.env", [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]),
    ("runtime.env", [{"name": "A", "valueFrom": {}}]),
    ("runtime.env", [{"name": "1 X", "value": "1"}]),
    ("runtime.tolerations", [{"operator": "Exists", "value": "x"}]),
    ("runtime.nodeSelector", {"pool": "x" * 64}),
    ("autoscaling.minReplicas", 0),
    ("autoscaling.minReplicas", 5),
    ("autoscaling.maxReplicas", 0),
    ("autoscaling.metric", "gpu"),
    ("autoscaling.target", 0),
    ("autoscaling.scaleDownStabilizationSeconds", 4000),
    ("rollout.strategy", "BlueGreen"),
    ("rollout.strategy", "Canary"),
    ("rollout.maxSurge", "101%"),
    ("rollout.maxSurge", -1),
    ("rollout.maxUnavailable", "x"),
    ("rollout.canary.steps", [{"weight": 50}, {"weight": 20}]),
    ("rollout.canary.steps", [{"weight": 0}]),
    ("rollout.canary.steps", [{"weight": 30}, {"weight": 30}]),
    ("rollout.canary.trafficRouting", "gatewayAPI"),
    ("rollout.canary.trafficRouting", "mesh"),
    ("rollout.canary.analysis.intervalSeconds", 1),
    ("rollout.canary.analysis.maxErrorRate", 1.5),
    ("surprise", {"unknown": True}),
    ("runtime.gpus", 1),
)


def mutate(spec: Mapping[str, Any], mutations: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = copy.deepcopy(dict(spec))
    for path, value in mutations:
        *parents, leaf = path.split(".")
        node = result
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = copy.deepcopy(value)
    return result


def specs() -> Any:
    """ModelAPI specs: a valid one drawn from every field's range (small replica counts, so the kwok nodes never
    fill up), then zero to two of MUTATIONS, so about half are refused by the API server and half reach the
    operator, many of them unusual (canaries, gateways, GPUs, tolerations, env from Secrets)."""
    from hypothesis import strategies as st

    label = st.from_regex(r"\A[a-z][a-z0-9-]{0,8}[a-z0-9]\Z")
    hex64 = st.text("0123456789abcdef", min_size=64, max_size=64)
    model = st.fixed_dictionaries(
        {
            "uri": st.one_of(
                st.builds(lambda b, k: f"s3://{b}/{k}/model.onnx", label, label),
                st.sampled_from(["https://models.example/iris/model.onnx", "file:///models/iris/model.onnx"]),
            )
        },
        optional={"sha256": hex64, "handler": st.just("s3://models/iris/1/handler.py"), "format": st.just("onnx")},
    )
    storage = st.fixed_dictionaries(
        {},
        optional={
            "endpoint": st.sampled_from(["http://s3.storage:9000", "https://s3.example"]),
            "region": st.sampled_from(["us-east-1", "eu-west-3"]),
            "credentialsSecret": st.just("s3-creds"),
            "serviceAccountName": st.sampled_from(["default", "model-reader"]),
        },
    )
    env_var = st.one_of(
        st.fixed_dictionaries({"name": st.sampled_from(["FOO", "handler.opt", "_X"]), "value": st.text(max_size=8)}),
        st.fixed_dictionaries(
            {
                "name": st.sampled_from(["API_TOKEN", "BAR"]),
                "valueFrom": st.sampled_from(
                    [
                        {"secretKeyRef": {"name": "s", "key": "k", "optional": True}},
                        {"configMapKeyRef": {"name": "c", "key": "k"}},
                        {"fieldRef": {"fieldPath": "metadata.name"}},
                    ]
                ),
            }
        ),
    )
    toleration = st.fixed_dictionaries(
        {"key": st.sampled_from(["dedicated", "nvidia.com/gpu"])},
        optional={
            "operator": st.just("Exists"),
            "effect": st.sampled_from(["NoSchedule", "NoExecute"]),
            "tolerationSeconds": st.integers(0, 60),
        },
    )
    runtime = st.fixed_dictionaries(
        {},
        optional={
            "image": st.sampled_from(["", "registry.example/runtime:1"]),
            "resources": st.fixed_dictionaries(
                {},
                optional={
                    "cpu": st.sampled_from(["50m", "100m", "0.5"]),
                    "memory": st.sampled_from(["64Mi", "128Mi", "1Gi"]),
                    "gpu": st.integers(0, 1),
                },
            ),
            "batching": st.fixed_dictionaries(
                {},
                optional={
                    "maxBatchSize": st.integers(1, 4096),
                    "maxLatencyMs": st.floats(0, 10_000, allow_nan=False),
                },
            ),
            "threads": st.integers(0, 16),
            "env": st.lists(env_var, max_size=3, unique_by=lambda v: v["name"]),
            "nodeSelector": st.dictionaries(
                st.sampled_from(["pool", "type"]), st.sampled_from(["kwok", "gpu"]), max_size=1
            ),
            "tolerations": st.lists(toleration, max_size=2),
        },
    )
    autoscaling = st.integers(1, 3).flatmap(
        lambda low: st.fixed_dictionaries(
            {"minReplicas": st.just(low), "maxReplicas": st.integers(low, 4)},
            optional={
                "metric": st.sampled_from(["cpu", "memory", "inFlight"]),
                "target": st.integers(1, 10_000),
                "scaleUpStabilizationSeconds": st.integers(0, 3600),
                "scaleDownStabilizationSeconds": st.integers(0, 3600),
            },
        )
    )
    steps = st.lists(st.integers(1, 100), min_size=1, max_size=4, unique=True).flatmap(
        lambda weights: st.lists(st.integers(0, 30), min_size=len(weights), max_size=len(weights)).map(
            lambda pauses: [{"weight": w, "pauseSeconds": p} for w, p in zip(sorted(weights), pauses, strict=True)]
        )
    )
    canary = st.fixed_dictionaries(
        {"steps": steps},
        optional={
            "trafficRouting": st.sampled_from(["auto", "replicas"]),
            "gateway": st.fixed_dictionaries({"name": label}, optional={"namespace": label, "sectionName": label}),
            "analysis": st.fixed_dictionaries(
                {},
                optional={
                    "intervalSeconds": st.integers(10, 3600),
                    "maxErrorRate": st.floats(0, 1, allow_nan=False),
                    "maxLatencyP99Ms": st.floats(1, 600_000, allow_nan=False),
                    "failureLimit": st.integers(1, 100),
                },
            ),
        },
    )
    rollout = st.one_of(
        st.fixed_dictionaries(
            {"strategy": st.just("RollingUpdate")},
            optional={
                "maxSurge": st.one_of(st.integers(1, 3), st.sampled_from(["25%", "100%"])),
                "maxUnavailable": st.one_of(st.integers(0, 2), st.sampled_from(["0%", "50%"])),
            },
        ),
        st.fixed_dictionaries({"strategy": st.just("Canary"), "canary": canary}),
    )
    valid = st.fixed_dictionaries(
        {"model": model},
        optional={"storage": storage, "runtime": runtime, "autoscaling": autoscaling, "rollout": rollout},
    )
    return st.builds(mutate, valid, st.lists(st.sampled_from(MUTATIONS), max_size=2))
