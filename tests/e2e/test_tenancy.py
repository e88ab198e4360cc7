"""Tenancy boundaries on the real API server (kwok tier): the operator never takes over an object it does not control,
two ModelAPIs cannot claim one child, the cluster policy refuses what it must (and applies nothing of it), presigned
URLs stay out of annotations, status, Events and logs, and the model pod's disk is bounded.

One operator process for the module, run with a cluster policy: no handlers, sha256 required, tolerations only for
the taint key ``dedicated``, nodeSelector only on ``pool``, images only from the operator's own runtime repositories
(the default).
"""

from __future__ import annotations

import json
import secrets
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
SHA = "a" * 64  # kwok pods never download: any well-formed digest satisfies the policy
POLICY = {
    "MODELAPI_OPERATOR_RESYNC_SECONDS": "5",
    "MODELAPI_OPERATOR_POLICY_ALLOW_HANDLERS": "false",
    "MODELAPI_OPERATOR_POLICY_REQUIRE_SHA256": "true",
    "MODELAPI_OPERATOR_POLICY_ALLOWED_TOLERATION_KEYS": "dedicated",
    "MODELAPI_OPERATOR_POLICY_ALLOWED_NODE_SELECTOR_KEYS": "pool",
}


@pytest.fixture(scope="module")
def operator(cluster: Cluster) -> Iterator[OperatorProcess]:
    # the CRD of this checkout (a cluster that was up before may hold an older one)
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds" / "modelapi.yaml"))
    process = OperatorProcess(cluster, POLICY)
    process.start()
    yield process
    process.stop()


def _apply(cluster: Cluster, namespace: str, manifest: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-f", "-", namespace=namespace, input=yaml.safe_dump(manifest))


def _iris(name: str = "iris", **spec: Any) -> dict[str, Any]:
    manifest: dict[str, Any] = yaml.safe_load(IRIS.read_text())
    manifest["metadata"]["name"] = name
    manifest["spec"]["model"]["sha256"] = SHA
    for key, value in spec.items():
        manifest["spec"][key] = {**manifest["spec"].get(key, {}), **value}
    return manifest


def _condition(cluster: Cluster, namespace: str, name: str, kind: str) -> dict[str, Any]:
    body = cluster.get_json("modelapi", name, namespace=namespace)
    return next((c for c in body.get("status", {}).get("conditions", []) if c["type"] == kind), {})


def _wait_reason(cluster: Cluster, namespace: str, name: str, reason: str, timeout: float = 60) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        condition = _condition(cluster, namespace, name, "Degraded")
        return condition if condition.get("reason") == reason and condition.get("status") == "True" else None

    result: dict[str, Any] = wait_until(found, timeout=timeout, interval=1, what=f"{name}: Degraded {reason}")
    return result


def _wait_ready(cluster: Cluster, namespace: str, name: str, timeout: float = 90) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        body = cluster.get_json("modelapi", name, namespace=namespace)
        conditions = {c["type"]: c for c in body.get("status", {}).get("conditions", [])}
        condition = conditions.get("Ready", {})
        current = condition.get("observedGeneration") == body["metadata"]["generation"]
        return body if current and condition.get("status") == "True" else None

    result: dict[str, Any] = wait_until(ready, timeout=timeout, interval=1, what=f"ModelAPI {name} Ready")
    return result


def _children(cluster: Cluster, namespace: str, name: str) -> list[str]:
    found = []
    for kind in ("deployments", "services", "hpa", "pdb"):
        items = cluster.get_json(kind, "-l", f"serving.modelapi.io/name={name}", namespace=namespace)["items"]
        found += [f"{item['kind']}/{item['metadata']['name']}" for item in items]
    return found


def _events(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.get_json("events", namespace=namespace)["items"]
    return items


# -- 1. never adopt or overwrite an object the ModelAPI does not control --------------------------------------------
FOREIGN: list[dict[str, Any]] = [
    {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "iris", "labels": {"team": "web"}},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 8081, "targetPort": 8081}]},
    },
    {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "iris"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "minReplicas": 2,
            "maxReplicas": 4,
        },
    },
    {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "iris"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}},
    },
    {  # the name of iris's ConfigMap with spec.monitoring.predictionLog (its revisions' roles)
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "iris-arms", "labels": {"team": "web"}},
        "data": {"setting": "web's own"},
    },
]
RESOURCE = {
    "Service": "service",
    "HorizontalPodAutoscaler": "hpa",
    "PodDisruptionBudget": "pdb",
    "ConfigMap": "configmap",
}


def _snapshot(cluster: Cluster, namespace: str) -> dict[str, Any]:
    """What a takeover would change. The Service's resourceVersion moves with any write; the HPA's and the PDB's
    move with their controllers' status updates too, so for them the generation (spec writes) counts."""
    shot = {}
    for item in FOREIGN:
        body = cluster.get_json(RESOURCE[item["kind"]], item["metadata"]["name"], namespace=namespace)
        meta = body["metadata"]
        by_version = item["kind"] in ("Service", "ConfigMap")  # no controller writes their status
        shot[item["kind"]] = {
            "version": meta["resourceVersion"] if by_version else meta.get("generation"),
            "uid": meta["uid"],
            "labels": meta.get("labels"),
            "annotations": meta.get("annotations"),
            "ownerReferences": meta.get("ownerReferences"),
            "managers": sorted({field["manager"] for field in meta.get("managedFields", [])}),
            "spec": body.get("spec", body.get("data")),
        }
    return shot


def test_objects_the_modelapi_does_not_control_are_left_untouched(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    for item in FOREIGN:
        _apply(cluster, namespace, item)
    before = _snapshot(cluster, namespace)
    _apply(cluster, namespace, _iris(monitoring={"predictionLog": {"sampleRate": 10}}))

    condition = _wait_reason(cluster, namespace, "iris", "NameConflict")
    for item in FOREIGN:
        name = f"{item['kind']} {namespace}/{item['metadata']['name']}"
        assert f"{name} exists and is not controlled by this ModelAPI" in condition["message"]
    assert _condition(cluster, namespace, "iris", "Ready")["reason"] == "NameConflict"
    events = [e for e in _events(cluster, namespace) if e["reason"] == "NameConflict"]
    assert events
    assert f"Service {namespace}/iris" in events[0]["message"]
    # the children with free names exist; the taken names are left alone over several resyncs (5 s each)
    assert "Service/iris-stable" in _children(cluster, namespace, "iris")
    time.sleep(12)
    after = _snapshot(cluster, namespace)
    assert after == before
    assert all("modelapi-operator" not in shot["managers"] for shot in after.values())
    operator.assert_alive()

    for item in FOREIGN:
        cluster.kubectl("delete", RESOURCE[item["kind"]], item["metadata"]["name"], namespace=namespace)
    body = _wait_ready(cluster, namespace, "iris")
    service = cluster.get_json("service", "iris", namespace=namespace)
    assert service["metadata"]["ownerReferences"][0]["uid"] == body["metadata"]["uid"]

    def arms_of_iris() -> dict[str, Any] | None:
        proc = cluster.kubectl("get", "configmap", "iris-arms", "-o", "json", namespace=namespace, check=False)
        found: dict[str, Any] | None = json.loads(proc.stdout) if proc.returncode == 0 else None
        return found if found and controlled_by_iris(found) else None

    def controlled_by_iris(item: dict[str, Any]) -> bool:
        return any(ref.get("uid") == body["metadata"]["uid"] for ref in item["metadata"].get("ownerReferences", []))

    arms = wait_until(arms_of_iris, timeout=30, what="iris-arms, once its name is free")
    assert list(arms["data"].values()) == ["stable"]
    assert _condition(cluster, namespace, "iris", "Degraded")["status"] == "False"


# -- 2. two ModelAPIs cannot claim one child ----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["iris-stable", "iris-canary", "iris-expose"])
def test_a_name_that_claims_another_modelapis_child_is_refused(
    cluster: Cluster, namespace: str, operator: OperatorProcess, name: str
) -> None:
    """``iris``'s stable and canary Services are ``iris-stable`` and ``iris-canary``, its spec.expose HTTPRoute
    ``iris-expose``: ModelAPIs named so are refused by the API server itself (the only child names two ModelAPIs
    could share)."""
    proc = cluster.kubectl("apply", "-f", "-", namespace=namespace, input=yaml.safe_dump(_iris(name)), check=False)
    assert proc.returncode != 0
    assert "metadata.name must not end with -stable, -canary or -expose" in proc.stderr
    assert cluster.get_json("modelapis", namespace=namespace)["items"] == []


# -- 3. the cluster policy ----------------------------------------------------------------------------------------
VIOLATIONS: dict[str, tuple[dict[str, Any], str, str]] = {
    "image": ({"runtime": {"image": "evil.example/miner:1"}}, "policy.allowedImagePrefixes", "evil.example/miner:1"),
    "handler": ({"model": {"handler": "s3://models/iris/1/handler.py"}}, "policy.allowHandlers", "handler"),
    "sha256": ({}, "policy.requireSha256", "spec.model.sha256"),
    "toleration": (
        {"runtime": {"tolerations": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}]}},
        "policy.allowedTolerationKeys",
        "node-role.kubernetes.io/control-plane",
    ),
    "node-selector": (
        {"runtime": {"nodeSelector": {"kubernetes.io/hostname": "node-0"}}},
        "policy.allowedNodeSelectorKeys",
        "kubernetes.io/hostname",
    ),
}


def test_each_policy_rule_refuses_its_spec_and_nothing_is_created(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    for case, (spec, _, _) in VIOLATIONS.items():
        manifest = _iris(f"bad-{case}", **spec)
        if case == "sha256":
            del manifest["spec"]["model"]["sha256"]
        _apply(cluster, namespace, manifest)
    # allowed: a toleration and a nodeSelector on the allowed keys, the default image
    fine = {"runtime": {"tolerations": [{"key": "dedicated", "operator": "Exists"}], "nodeSelector": {"pool": "m"}}}
    _apply(cluster, namespace, _iris("fine", **fine))
    for case, (_, rule, value) in VIOLATIONS.items():
        condition = _wait_reason(cluster, namespace, f"bad-{case}", "PolicyViolation")
        assert rule in condition["message"], case
        assert value in condition["message"], case
        assert _children(cluster, namespace, f"bad-{case}") == [], f"{case}: the operator created children"
    # (no kwok node has the label pool=m, so its pod stays Pending: what counts is that it was applied)
    wait_until(
        lambda: any(child.startswith("Deployment/") for child in _children(cluster, namespace, "fine")),
        timeout=30,
        what="the allowed spec applied",
    )
    assert _condition(cluster, namespace, "fine", "Degraded").get("reason") != "PolicyViolation"
    reasons = {(e["involvedObject"]["name"], e["reason"]) for e in _events(cluster, namespace)}
    assert {(f"bad-{case}", "PolicyViolation") for case in VIOLATIONS} <= reasons


def test_a_serving_modelapi_keeps_its_revision_when_a_violating_spec_arrives(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    _apply(cluster, namespace, _iris())
    body = _wait_ready(cluster, namespace, "iris")
    (serving,) = body["status"]["revisions"]
    before = cluster.get_json("deployment", serving["name"], namespace=namespace)

    # 5. the pod's disk is bounded: every volume has a sizeLimit, the container requests their sum
    pod = before["spec"]["template"]["spec"]
    assert {v["name"]: v["emptyDir"]["sizeLimit"] for v in pod["volumes"]} == {"models": "5Gi", "tmp": "512Mi"}
    assert pod["containers"][0]["resources"]["requests"]["ephemeral-storage"] == "5632Mi"

    _apply(cluster, namespace, _iris(runtime={"image": "evil.example/miner:1"}))
    condition = _wait_reason(cluster, namespace, "iris", "PolicyViolation")
    assert "policy.allowedImagePrefixes" in condition["message"]
    time.sleep(8)  # more than one resync
    deployments = cluster.get_json("deployments", namespace=namespace)["items"]
    assert [d["metadata"]["name"] for d in deployments] == [serving["name"]], "no rollout of the violating spec"
    after = deployments[0]
    assert after["spec"]["template"] == before["spec"]["template"]
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    status = cluster.get_json("modelapi", "iris", namespace=namespace)["status"]
    assert [(r["name"], r["role"]) for r in status["revisions"]] == [(serving["name"], "stable")]
    assert status["readyReplicas"] >= 1


# -- 4. presigned URLs: the query never reaches annotations, status, Events or logs ---------------------------------
def test_a_presigned_uri_query_is_redacted_everywhere_but_the_pod(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    token = secrets.token_hex(12)
    uri = f"https://models.example/iris/model.onnx?X-Amz-Signature={token}&X-Amz-Expires=3600"
    log_offset = operator.log_path.stat().st_size if operator.log_path.exists() else 0
    _apply(cluster, namespace, _iris(model={"uri": uri}))
    body = _wait_ready(cluster, namespace, "iris")
    (revision,) = body["status"]["revisions"]
    assert revision["modelUri"] == "https://models.example/iris/model.onnx?<redacted>"
    deployment = cluster.get_json("deployment", revision["name"], namespace=namespace)
    assert deployment["metadata"]["annotations"]["serving.modelapi.io/model-uri"] == revision["modelUri"]
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MODELAPI_MODEL_URI"] == uri, "the pod itself needs the whole URI"

    # a new presigned URL (only the query changes) is a new revision
    fresh = uri.replace(token, secrets.token_hex(12))
    _apply(cluster, namespace, _iris(model={"uri": fresh}))

    def rolled_out() -> bool:
        revisions = cluster.get_json("modelapi", "iris", namespace=namespace).get("status", {}).get("revisions", [])
        stable = [r["name"] for r in revisions if r["role"] == "stable"]
        return bool(stable) and stable != [revision["name"]]

    wait_until(rolled_out, timeout=90, interval=1, what="a new revision for the new query")
    status = cluster.get_json("modelapi", "iris", namespace=namespace)["status"]
    assert all(r["modelUri"].endswith("?<redacted>") for r in status["revisions"])
    deployments = cluster.get_json("deployments", namespace=namespace)["items"]
    dumped = json.dumps([status, [d["metadata"] for d in deployments], _events(cluster, namespace)])
    assert token not in dumped
    with operator.log_path.open(errors="replace") as log:
        log.seek(log_offset)
        text = log.read()
    assert "?<redacted>" in text, "the operator (run with --verbose) logged the body, redacted"
    assert token not in text
