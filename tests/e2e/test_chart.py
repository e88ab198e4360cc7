"""The Helm chart (charts/modelapi) on the real local cluster.

- `helm lint` and `helm template` for the default values and for every optional feature, and properties of what they
  render (no RBAC wildcard, no Secret access, Pod Security "restricted" for the operator);
- the rendered manifests accepted by the API server (server-side dry-run, in a namespace that warns on "restricted");
- the chart installed for real and the operator process run with the chart's ServiceAccount token (not admin), with
  the arguments and environment of the chart's Deployment: iris becomes Ready, rolls to a new revision and is deleted
  with its children, and the operator's log shows no refused request. That proves the RBAC is enough;
- a `kubectl auth can-i --as=system:serviceaccount:...` matrix proves it is not more than needed.

No container runs on the kwok nodes, so the operator's pod is admitted and marked Running but does nothing: the
operator runs as a local process with the pod's identity, arguments and environment.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelapi_operator.names import INFLIGHT_METRIC
from modelapi_operator.settings import OperatorSettings

from .conftest import Cluster, wait_until
from .processes import free_port, sa_kubeconfig, terminate

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "modelapi"
IRIS = ROOT / "examples" / "iris" / "model.yaml"
KOPF_CRDS = CHART / "crds" / "kopf-peerings.yaml"
CHART_META = yaml.safe_load((CHART / "Chart.yaml").read_text())
RUNBOOKS = "https://wiki.example/modelapi/runbooks"  # monitoring.runbookBaseUrl, needed with the alerts
MONITORING = {
    "monitoring": {
        "podMonitor": {"enabled": True},
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "runbookBaseUrl": RUNBOOKS,
        "grafanaDashboard": {"enabled": True},
        "kubeStateMetrics": {"enabled": True},
        "prometheusAdapterRules": {"enabled": True},
    }
}


# ---- helpers ---------------------------------------------------------------------------------------------------------
def helm(cluster: Cluster, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [cluster.env["HELM"], *args],
        env=cluster.subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}\n{proc.stdout}")
    return proc


def values_file(tmp_path: Path, values: dict[str, Any]) -> str:
    path = tmp_path / f"values-{secrets.token_hex(3)}.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def render(cluster: Cluster, tmp_path: Path, namespace: str, values: dict[str, Any]) -> list[dict[str, Any]]:
    out = helm(
        cluster,
        "template",
        "modelapi",
        str(CHART),
        "--namespace",
        namespace,
        "--kube-version",
        cluster.env["KUBE_VERSION"],
        "--values",
        values_file(tmp_path, values),
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def rules_of(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [rule for doc in docs if doc["kind"] in {"Role", "ClusterRole"} for rule in doc["rules"]]


@dataclass
class Release:
    cluster: Cluster
    name: str
    namespace: str
    account: str

    def deployment(self) -> dict[str, Any]:
        result: dict[str, Any] = self.cluster.get_json(
            "deployment", f"{self.name}-modelapi-operator", namespace=self.namespace
        )
        return result

    def can_i(self, verb: str, resource: str, *, namespace: str | None = None, extra: tuple[str, ...] = ()) -> bool:
        args = ["auth", "can-i", verb, resource, f"--as=system:serviceaccount:{self.namespace}:{self.account}"]
        args += ["--namespace", namespace] if namespace else ["--all-namespaces"]
        proc = self.cluster.kubectl(*args, *extra, check=False)
        assert proc.stdout.strip() in {"yes", "no"}, proc.stderr
        return proc.stdout.strip() == "yes"


@pytest.fixture
def install(cluster: Cluster, tmp_path: Path) -> Iterator[Any]:
    """Install the chart into a namespace (labelled to enforce Pod Security "restricted"); uninstalled afterwards."""
    releases: list[Release] = []

    def _install(namespace: str, values: dict[str, Any]) -> Release:
        cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted", "--overwrite")
        name = f"m{secrets.token_hex(3)}"
        helm(
            cluster,
            "install",
            name,
            str(CHART),
            "--namespace",
            namespace,
            "--values",
            values_file(tmp_path, values),
            "--wait",
            "--timeout",
            "90s",
        )
        release = Release(cluster, name, namespace, f"{name}-modelapi-operator")
        releases.append(release)
        return release

    yield _install
    for release in releases:
        helm(cluster, "uninstall", release.name, "--namespace", release.namespace, "--wait", check=False)


class OperatorUnderServiceAccount:
    """`modelapi-operator` started with the chart Deployment's args and env, authenticated as its ServiceAccount."""

    def __init__(self, release: Release, workdir: Path, replica: int = 0) -> None:
        self.release = release
        suffix = f"-{replica}" if replica else ""
        self.log_path = release.cluster.logs_dir / f"modelapi-operator-{release.name}{suffix}.log"
        container = release.deployment()["spec"]["template"]["spec"]["containers"][0]
        self.port = free_port()
        self.args = [
            arg.replace(":8080/", f":{self.port}/").replace("0.0.0.0", "127.0.0.1") for arg in container["args"]
        ]
        # the API server drops `value: ""`: an entry without value nor valueFrom is the empty string
        chart_env = {item["name"]: item.get("value", "") for item in container["env"] if "valueFrom" not in item}
        self.env = {key: value for key, value in os.environ.items() if not key.startswith("MODELAPI_OPERATOR_")}
        self.env.pop("KUBECONFIG", None)
        kubeconfig = sa_kubeconfig(
            release.cluster, release.namespace, release.account, workdir / f"sa-kubeconfig{suffix}"
        )
        self.env.update(chart_env, KUBECONFIG=str(kubeconfig))
        self.chart_env = chart_env
        self.metrics_url = ""
        if chart_env.get("MODELAPI_OPERATOR_METRICS_ADDRESS"):  # the pod's 0.0.0.0:8081, on a free local port here
            metrics_port = free_port()
            self.env["MODELAPI_OPERATOR_METRICS_ADDRESS"] = f"127.0.0.1:{metrics_port}"
            self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> OperatorUnderServiceAccount:
        script = Path(sys.executable).parent / "modelapi-operator"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(script), *self.args, "--verbose"], env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    def __exit__(self, *_: object) -> None:
        terminate(self.process)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def refusals(self) -> list[str]:
        """Requests RBAC refused (not e.g. a namespace being terminated, which is also a 403)."""
        account = f'User "system:serviceaccount:{self.release.namespace}:{self.release.account}" cannot'
        return [line for line in self.log().splitlines() if account in line]


@pytest.fixture
def models_namespace(cluster: Cluster) -> Iterator[str]:
    """A second namespace for the models (the chart's release lives in the `namespace` fixture's)."""
    name = f"e2e-chart-models-{secrets.token_hex(3)}"
    cluster.kubectl("create", "namespace", name)
    wait_until(
        lambda: cluster.kubectl("get", "serviceaccount", "default", namespace=name, check=False).returncode == 0,
        timeout=30,
        what=f"ServiceAccount default in {name}",
    )
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


def wait_ready(cluster: Cluster, namespace: str, name: str, timeout: float = 90) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        body: dict[str, Any] = cluster.get_json("modelapi", name, namespace=namespace)
        status = body.get("status", {})
        condition = next((c for c in status.get("conditions", []) if c["type"] == "Ready"), {})
        current = condition.get("observedGeneration") == body["metadata"]["generation"]
        return body if current and condition.get("status") == "True" else None

    result: dict[str, Any] = wait_until(ready, timeout=timeout, interval=1, what=f"ModelAPI {name} Ready")
    return result


def deployments(cluster: Cluster, namespace: str) -> set[str]:
    items = cluster.get_json("deployments", "-l", "serving.modelapi.io/name", namespace=namespace)["items"]
    return {item["metadata"]["name"] for item in items}


# ---- lint, template, dry-run -------------------------------------------------------------------------------------
VARIANTS: dict[str, dict[str, Any]] = {
    "plain-values": {},
    "cluster-wide-everything": {
        **MONITORING,
        "peering": {"enabled": True},
        "prometheusUrl": "http://prometheus.monitoring:9090",
        "policy": {
            "allowedImagePrefixes": ["registry.example/team", "*"],
            "allowHandlers": False,
            "requireSha256": True,
            "allowedTolerationKeys": [],
            "allowedNodeSelectorKeys": ["pool", "zone"],
        },
    },
    "namespaced-everything": {**MONITORING, "peering": {"enabled": True}, "watchNamespaces": ["WATCHED"]},
    "activator-off": {"activator": {"enabled": False}},
    # the node cache agent: host network and a hostPath, so its namespace needs Pod Security "privileged"
    "node-cache": {
        "nodeCache": {"enabled": True, "allowedEndpoints": ["https://*.amazonaws.com", "http://10.0.0.5:9000"]},
        "maxArtifactSize": "20Gi",
    },
}
# what Pod Security "restricted" is expected to refuse in a variant (the node cache agent, by design)
PRIVILEGED_BY_DESIGN = {"node-cache": 1}


def variant(name: str, watched: str) -> dict[str, Any]:
    values = json.loads(json.dumps(VARIANTS[name]))
    if "watchNamespaces" in values:
        values["watchNamespaces"] = [watched]
    return values


@pytest.mark.parametrize("name", list(VARIANTS))
def test_helm_lint(cluster: Cluster, tmp_path: Path, name: str) -> None:
    proc = helm(cluster, "lint", str(CHART), "--strict", "--values", values_file(tmp_path, variant(name, "models")))
    assert "0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("name", list(VARIANTS))
def test_rendered_chart_is_least_privilege_and_restricted(cluster: Cluster, tmp_path: Path, name: str) -> None:
    docs = render(cluster, tmp_path, "modelapi-system", variant(name, "models"))
    rules = rules_of(docs)
    assert rules
    for rule in rules:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], rule
            assert not any("*" in item for item in rule[field]), rule
        assert "secrets" not in rule["resources"], rule
        assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), rule
        assert not ({"pods"} & set(rule["resources"]) and {"create", "update", "patch", "delete"} & set(rule["verbs"]))
    (deployment,) = [
        doc for doc in docs if doc["kind"] == "Deployment" and doc["metadata"]["name"].endswith("-operator")
    ]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["args"][:2] == ["--liveness", "http://0.0.0.0:8080/healthz"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["resources"]["limits"]["memory"]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["MODELAPI_OPERATOR_CPU_IMAGE"] == "modelapi/runtime:0.1.0"
    assert env["MODELAPI_OPERATOR_GPU_IMAGE"] == "modelapi/runtime-gpu:0.1.0"
    kinds = {doc["kind"] for doc in docs}
    activators = [doc for doc in docs if doc["kind"] == "Deployment" and doc["metadata"]["name"].endswith("-activator")]
    if name == "activator-off":
        assert not activators
        assert "MODELAPI_OPERATOR_ACTIVATOR_SERVICE" not in env
    else:
        (activator,) = activators
        assert activator["spec"]["replicas"] == 2
        activator_pod = activator["spec"]["template"]["spec"]
        (proxy,) = activator_pod["containers"]
        assert proxy["command"] == ["/opt/modelapi/bin/modelapi-activator"]
        assert proxy["image"] == "modelapi/runtime:0.1.0", "the activator ships in the runtime image"
        assert activator_pod["securityContext"]["runAsNonRoot"] is True
        # release "modelapi" has a Service modelapi-activator: its link variable MODELAPI_ACTIVATOR_PORT=tcp://... would
        # be read as the activator's port setting (make demo's activator crash-looped on it)
        assert activator_pod["enableServiceLinks"] is False
        assert activator_pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert proxy["securityContext"]["readOnlyRootFilesystem"] is True
        assert proxy["securityContext"]["allowPrivilegeEscalation"] is False
        assert proxy["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert proxy["resources"]["limits"]["memory"]
        assert env["MODELAPI_OPERATOR_ACTIVATOR_SERVICE"] == "modelapi-system/modelapi-activator"
        assert {doc["metadata"]["name"] for doc in docs if doc["kind"] == "Service"} == {
            "modelapi-activator",
            "modelapi-operator-metrics",
        }
    if name == "plain-values":
        assert deployment["spec"]["strategy"] == {"type": "Recreate"}  # never two operators without peering
        assert env["MODELAPI_OPERATOR_NAMESPACES"] == ""
        assert "MODELAPI_OPERATOR_PEERING" not in env
        # the default policy: the runtime images' repositories (settings derive them from ""), everything else open
        assert env["MODELAPI_OPERATOR_POLICY_ALLOWED_IMAGE_PREFIXES"] == ""
        assert env["MODELAPI_OPERATOR_POLICY_ALLOW_HANDLERS"] == "true"
        assert env["MODELAPI_OPERATOR_POLICY_REQUIRE_SHA256"] == "false"
        assert env["MODELAPI_OPERATOR_POLICY_ALLOWED_TOLERATION_KEYS"] == "*"
        assert env["MODELAPI_OPERATOR_POLICY_ALLOWED_NODE_SELECTOR_KEYS"] == "*"
        # cluster-wide: one Role only, for the operator to read the activator's EndpointSlices in its own namespace
        assert [doc["metadata"]["name"] for doc in docs if doc["kind"] == "Role"] == ["modelapi-activator-endpoints"]
        assert not {"PodMonitor", "PrometheusRule", "CustomResourceDefinition"} & kinds
    if name == "cluster-wide-everything":
        assert env["MODELAPI_OPERATOR_PEERING"] == "modelapi-operator"
        assert env["MODELAPI_OPERATOR_PEERING_LIFETIME_SECONDS"] == "60"
        assert "MODELAPI_OPERATOR_PEERING_PRIORITY" not in env  # each replica draws its own
        assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
        assert env["MODELAPI_OPERATOR_PROMETHEUS_URL"] == "http://prometheus.monitoring:9090"
        policy_env = {key: value for key, value in env.items() if key.startswith("MODELAPI_OPERATOR_POLICY_")}
        settings = OperatorSettings.model_validate(
            {key.removeprefix("MODELAPI_OPERATOR_").lower(): value for key, value in policy_env.items()}
        )
        assert settings.policy_allowed_image_prefixes == ["registry.example/team", "*"]
        assert (settings.policy_allow_handlers, settings.policy_require_sha256) == (False, True)
        assert settings.policy_allowed_toleration_keys == []
        assert settings.policy_allowed_node_selector_keys == ["pool", "zone"]
        assert {"ClusterKopfPeering", "PodMonitor", "PrometheusRule", "ServiceMonitor"} <= kinds
        # kopf's peering CRDs come from the chart's crds/, never from a template (uninstall would delete them)
        assert "CustomResourceDefinition" not in kinds
    if name == "namespaced-everything":
        assert env["MODELAPI_OPERATOR_NAMESPACES"] == "models"
        roles = [doc for doc in docs if doc["kind"] == "Role" and doc["metadata"]["name"] == "modelapi-operator"]
        assert [role["metadata"]["namespace"] for role in roles] == ["models"]
        activator_roles = [
            doc for doc in docs if doc["kind"] == "Role" and doc["metadata"]["name"] == "modelapi-activator"
        ]
        assert [role["metadata"]["namespace"] for role in activator_roles] == ["models"]
        (cluster_role,) = [doc for doc in docs if doc["kind"] == "ClusterRole"]
        # cluster-wide, the operator may only read CRDs and namespaces: every namespaced grant is in the Role
        cluster_resources = {r for rule in cluster_role["rules"] for r in rule["resources"]}
        assert cluster_resources == {"customresourcedefinitions", "namespaces"}
        assert all(set(rule["verbs"]) <= {"get", "list", "watch"} for rule in cluster_role["rules"])
        assert "KopfPeering" in kinds


def test_more_than_one_replica_needs_peering(cluster: Cluster) -> None:
    version = cluster.env["KUBE_VERSION"]
    args = ["--set", "replicaCount=2", "--set", "peering.enabled=false"]
    proc = helm(cluster, "template", "m", str(CHART), "--kube-version", version, *args, check=False)
    assert proc.returncode != 0
    assert "replicaCount > 1 needs peering.enabled=true" in proc.stderr


def test_replicas_with_peering_roll_one_at_a_time_with_a_short_lifetime(cluster: Cluster, tmp_path: Path) -> None:
    values = {"replicaCount": 3, "peering": {"enabled": True, "lifetimeSeconds": 15}}
    docs = render(cluster, tmp_path, "ops", values)
    (deployment,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-operator")]
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    env = {item["name"]: item.get("value") for item in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MODELAPI_OPERATOR_PEERING_LIFETIME_SECONDS"] == "15"
    assert "MODELAPI_OPERATOR_PEERING_PRIORITY" not in env


def test_node_cache_is_a_daemonset_on_the_node_network_that_the_operator_points_model_pods_at(
    cluster: Cluster, tmp_path: Path
) -> None:
    assert not [d for d in render(cluster, tmp_path, "ops", {}) if d["kind"] == "DaemonSet"], "off by default"
    values = {
        "nodeCache": {"enabled": True, "port": 9123, "maxSizeMiB": 2048, "allowedEndpoints": ["http://s3:9000"]},
        "maxArtifactSize": "20Gi",
    }
    docs = render(cluster, tmp_path, "ops", values)
    (daemonset,) = [d for d in docs if d["kind"] == "DaemonSet"]
    pod = daemonset["spec"]["template"]["spec"]
    (agent,) = pod["containers"]
    assert agent["command"] == ["/opt/modelapi/bin/modelapi-cache"]
    assert agent["image"] == "modelapi/runtime:0.1.0", "the agent ships in the runtime image"
    assert pod["hostNetwork"] is True
    assert pod["automountServiceAccountToken"] is False
    assert agent["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert agent["securityContext"]["allowPrivilegeEscalation"] is False
    env = {item["name"]: item.get("value") or item.get("valueFrom") for item in agent["env"]}
    assert env["MODELAPI_CACHE_HOST"] == {"fieldRef": {"fieldPath": "status.hostIP"}}
    assert (env["MODELAPI_CACHE_PORT"], env["MODELAPI_CACHE_MAX_MIB"]) == ("9123", "2048")
    assert env["MODELAPI_CACHE_ALLOWED_ENDPOINTS"] == "http://s3:9000"
    # placement "link" (default): the kubelet's root in one mount, the cache under it, so a hard link can join them
    assert pod["volumes"][0] == {"name": "kubelet", "hostPath": {"path": "/var/lib/kubelet", "type": "Directory"}}
    assert [v["name"] for v in pod["volumes"]] == ["kubelet", "tmp"]
    assert (env["MODELAPI_CACHE_DIR"], env["MODELAPI_CACHE_PODS_DIR"]) == ("/kubelet/modelapi-cache", "/kubelet/pods")
    for placement, volumes, pods_dir in (("copy", ["cache", "kubelet-pods", "tmp"], "/kubelet-pods"),
                                         ("stream", ["cache", "tmp"], None)):  # fmt: skip
        other = {"nodeCache": {**values["nodeCache"], "placement": placement, "hostPath": "/srv/cache"}}
        (ds,) = [d for d in render(cluster, tmp_path, "ops", other) if d["kind"] == "DaemonSet"]
        spec = ds["spec"]["template"]["spec"]
        assert [v["name"] for v in spec["volumes"]] == volumes
        assert spec["volumes"][0]["hostPath"] == {"path": "/srv/cache", "type": "DirectoryOrCreate"}
        agent_env = {item["name"]: item.get("value") for item in spec["containers"][0]["env"]}
        assert (agent_env["MODELAPI_CACHE_DIR"], agent_env.get("MODELAPI_CACHE_PODS_DIR")) == ("/cache", pods_dir)
        if pods_dir:
            assert spec["volumes"][1]["hostPath"] == {"path": "/var/lib/kubelet/pods", "type": "Directory"}
    # a link cannot cross two mounts: a cache outside the kubelet's root is refused with what to change
    outside = {"nodeCache": {**values["nodeCache"], "hostPath": "/srv/cache"}}
    refused = helm(cluster, "template", "modelapi", str(CHART), "--kube-version", cluster.env["KUBE_VERSION"],
                   "--values", values_file(tmp_path, outside), check=False)  # fmt: skip
    assert refused.returncode != 0
    assert "nodeCache.hostPath under nodeCache.kubeletRootDir" in refused.stderr
    assert "placement to copy" in refused.stderr
    # its metrics are scraped as the model pods' are: the annotations, and a PodMonitor with monitoring.podMonitor
    annotations = daemonset["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "9123",
        "prometheus.io/path": "/metrics",
    }
    assert not [d for d in docs if d["kind"] == "PodMonitor"]
    monitored = render(cluster, tmp_path, "ops", {**values, "monitoring": {"podMonitor": {"enabled": True}}})
    monitors = {d["metadata"]["name"]: d["spec"] for d in monitored if d["kind"] == "PodMonitor"}
    assert monitors["modelapi-node-cache"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/instance": "modelapi",
        "app.kubernetes.io/component": "node-cache",
    }
    assert monitors["modelapi-node-cache"]["podMetricsEndpoints"][0]["port"] == "http"
    assert set(monitors) == {"modelapi-models", "modelapi-node-cache"}
    (deployment,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-operator")]
    operator_env = {i["name"]: i.get("value") for i in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert operator_env["MODELAPI_OPERATOR_NODE_CACHE_PORT"] == "9123"
    assert operator_env["MODELAPI_OPERATOR_MAX_ARTIFACT_SIZE"] == "20Gi"
    assert OperatorSettings.model_validate({"max_artifact_size": "20Gi", "node_cache_port": 9123})
    proc = helm(cluster, "lint", str(CHART), "--strict", "--values", values_file(tmp_path, values))
    assert "0 chart(s) failed" in proc.stdout


def test_alert_rules_are_valid_promql(cluster: Cluster, tmp_path: Path) -> None:
    promtool = cluster.env["PROMTOOL"]  # built with Prometheus by cluster.sh
    docs = render(cluster, tmp_path, "modelapi-system", variant("cluster-wide-everything", "models"))
    (rule,) = [doc for doc in docs if doc["kind"] == "PrometheusRule"]
    # alerts compare recording rules (each one's signal, a series per ModelAPI) with their thresholds
    alerts = {r["alert"] for group in rule["spec"]["groups"] for r in group["rules"] if "alert" in r}
    assert all("alert" in r or "record" in r for group in rule["spec"]["groups"] for r in group["rules"])
    assert alerts == {
        "ModelAPICanaryAborted",
        "ModelAPIHighErrorRate",
        "ModelAPINoReadyReplicas",
        "ModelAPIOperatorDown",
        "ModelAPIOperatorReconcileErrors",
        "ModelAPIOperatorBacklog",
        "ModelAPIOperatorWatchRestarts",
    }
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    proc = subprocess.run([promtool, "check", "rules", str(rules_file)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_prometheus_adapter_rule_for_in_flight_ships_as_a_config_map_in_the_adapters_namespace(
    cluster: Cluster, tmp_path: Path
) -> None:
    values = {"monitoring": {"prometheusAdapterRules": {"enabled": True, "namespace": "monitoring"}}}
    docs = render(cluster, tmp_path, "modelapi-system", values)
    (config_map,) = [d for d in docs if d["kind"] == "ConfigMap" and "prometheus-adapter" in d["metadata"]["name"]]
    assert config_map["metadata"]["name"] == "modelapi-prometheus-adapter-rules"
    assert config_map["metadata"]["namespace"] == "monitoring"
    config = yaml.safe_load(config_map["data"]["config.yaml"])
    # the file the test cluster's prometheus-adapter runs with (tests/e2e/cluster/metrics.sh)
    assert config == yaml.safe_load((CHART / "files" / "prometheus-adapter-rules.yaml").read_text())
    (rule,) = config["rules"]
    assert rule["name"]["as"] == INFLIGHT_METRIC  # the Pods metric the operator's HPA asks for
    assert INFLIGHT_METRIC in rule["seriesQuery"]
    assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
    off = render(cluster, tmp_path, "modelapi-system", {})
    assert not [d for d in off if "prometheus-adapter" in d["metadata"]["name"]], "off by default"


@pytest.mark.parametrize("name", list(VARIANTS))
def test_rendered_manifests_pass_server_side_dry_run(
    cluster: Cluster, namespace: str, tmp_path: Path, name: str
) -> None:
    cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/warn=restricted", "--overwrite")
    docs = render(cluster, tmp_path, namespace, variant(name, namespace))
    # kopf's peering CRDs (the chart's crds/, which helm install applies before the templates) are created for real
    # first: a dry-run does not create a CRD, and the chart's peering object is of that kind. Those this test
    # created are deleted afterwards.
    kopf_crds = list(yaml.safe_load_all(KOPF_CRDS.read_text()))
    crds = [c for c in kopf_crds if cluster.kubectl("get", "crd", c["metadata"]["name"], check=False).returncode]
    try:
        for crd in crds:
            cluster.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(crd))
            cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd['metadata']['name']}", "--timeout=30s")
        text = yaml.safe_dump_all(docs)
        proc = cluster.kubectl("apply", "--server-side", "--dry-run=server", "-f", "-", input=text, check=False)
        assert proc.returncode == 0, proc.stderr
        violations = [line for line in proc.stderr.splitlines() if "violate PodSecurity" in line]
        assert len(violations) == PRIVILEGED_BY_DESIGN.get(name, 0), violations
        assert all('container "agent"' in line for line in violations), violations  # only the node cache agent
        applied = [line for line in proc.stdout.splitlines() if "(server dry run)" in line]
        assert len(applied) == len(docs), proc.stdout
    finally:
        for crd in crds:
            cluster.kubectl("delete", "crd", crd["metadata"]["name"], "--ignore-not-found", check=False)


# ---- installed for real, the operator under the chart's identity ----------------------------------------------------
def exercise_iris(cluster: Cluster, models: str, before_delete: Callable[[], None] | None = None) -> None:
    """Create, roll to a new revision, delete: every verb the operator uses on every kind of child."""
    cluster.kubectl("apply", "-f", str(IRIS), namespace=models)
    first = wait_ready(cluster, models, "iris")["status"]["revisions"][0]["name"]
    manifest = yaml.safe_load(IRIS.read_text())
    manifest["spec"]["model"]["uri"] = "s3://models/iris/2/model.onnx"
    cluster.kubectl("apply", "-f", "-", namespace=models, input=yaml.safe_dump(manifest))
    body = wait_ready(cluster, models, "iris")
    revision = next(r for r in body["status"]["revisions"] if r["role"] == "stable")
    assert revision["name"] != first
    assert body["status"]["lastKnownGood"]["revision"] == first
    wait_until(
        lambda: deployments(cluster, models) == {revision["name"], first},
        timeout=30,
        what="the old revision kept as last-known-good",
    )
    events = cluster.get_json("events", "--field-selector", "involvedObject.kind=ModelAPI", namespace=models)
    assert "Serving" in {event["reason"] for event in events["items"]}
    if before_delete:
        before_delete()
    cluster.kubectl("delete", "modelapi", "iris", "--wait=true", namespace=models, timeout=60)
    wait_until(lambda: not deployments(cluster, models), timeout=60, what="children garbage-collected")


def test_operator_runs_cluster_wide_under_the_chart_service_account(
    cluster: Cluster, namespace: str, models_namespace: str, install: Any, tmp_path: Path
) -> None:
    release = install(namespace, {**MONITORING, "resyncSeconds": 5})
    pods = cluster.get_json("pods", "-l", "app.kubernetes.io/name=modelapi-operator", namespace=namespace)["items"]
    assert len(pods) == 1, "the operator pod was admitted under Pod Security 'restricted'"
    with OperatorUnderServiceAccount(release, tmp_path) as operator:
        assert operator.chart_env["MODELAPI_OPERATOR_NAMESPACES"] == ""
        assert operator.metrics_url, "metrics.enabled is the default"
        metrics_url = operator.metrics_url
        exercise_iris(
            cluster,
            models_namespace,
            before_delete=lambda: wait_until(
                lambda: iris_status_series(metric_samples(metrics_url)),
                timeout=30,
                what="iris's modelapi_status_* series",
            ),
        )
        assert operator.process is not None
        assert operator.process.poll() is None, operator.log()[-4000:]
        assert urlopen_ok(f"http://127.0.0.1:{operator.port}/healthz"), "kopf's liveness endpoint answers"
        # the chart's metrics setting: the operator counted iris's reconciles (create, new revision, deletion)
        scraped = metric_samples(operator.metrics_url)
        assert scraped[("modelapi_operator_reconciles_total", (("result", "success"),))] >= 2
        assert scraped[("modelapi_operator_reconcile_duration_seconds_count", ())] >= 2
        assert ("modelapi_operator_reconciles_waiting", ()) in scraped
        version = (("version", CHART_META["appVersion"]),)
        assert scraped[("modelapi_operator_build_info", version)] == 1
        # iris was deleted (no finalizer: gone at once): its status series went with it
        wait_until(
            lambda: not iris_status_series(metric_samples(operator.metrics_url)),
            timeout=30,
            what="the deleted ModelAPI's modelapi_status_* series to go",
        )
    assert not operator.refusals(), "\n".join(operator.refusals()[:10])

    ns, other = models_namespace, namespace
    allowed = [
        ("list", "modelapis.serving.modelapi.io", ns),
        ("watch", "modelapis.serving.modelapi.io", ns),
        ("patch", "modelapis.serving.modelapi.io", ns),
        ("patch", "modelapis.serving.modelapi.io/status", ns),
        ("create", "deployments.apps", ns),
        ("patch", "deployments.apps/scale", ns),
        ("delete", "deployments.apps", ns),
        ("create", "services", ns),
        ("delete", "horizontalpodautoscalers.autoscaling", ns),
        ("patch", "poddisruptionbudgets.policy", ns),
        ("create", "httproutes.gateway.networking.k8s.io", ns),
        ("get", "gateways.gateway.networking.k8s.io", ns),  # spec.expose: GatewayNotFound, status.url's scheme/port
        ("watch", "pods", ns),
        ("create", "events", ns),
        ("list", "events", ns),
        ("list", "endpointslices.discovery.k8s.io", ns),
        ("watch", "endpointslices.discovery.k8s.io", ns),  # its own (the activator's slices at zero), by label
        ("get", "serviceaccounts", ns),
        ("list", "deployments.apps", None),
        # spec.monitoring.predictionLog: the <name>-arms ConfigMap, watched by label, written and deleted
        ("watch", "configmaps", ns),
        ("create", "configmaps", ns),
        ("patch", "configmaps", ns),
        ("delete", "configmaps", ns),
    ]
    denied = [
        ("get", "secrets", ns),
        ("list", "secrets", ns),
        ("watch", "secrets", None),
        ("get", "secrets", other),
        ("create", "pods", ns),
        ("delete", "pods", ns),
        ("create", "pods/exec", ns),
        ("update", "deployments.apps", ns),
        ("patch", "gateways.gateway.networking.k8s.io", ns),  # a Gateway is only read
        ("create", "modelapis.serving.modelapi.io", ns),
        ("delete", "modelapis.serving.modelapi.io", ns),
        ("update", "modelapis.serving.modelapi.io/status", ns),
        ("create", "serviceaccounts/token", ns),
        ("create", "serviceaccounts", ns),
        ("delete", "events", ns),
        ("create", "customresourcedefinitions.apiextensions.k8s.io", None),
        ("delete", "customresourcedefinitions.apiextensions.k8s.io", None),
        ("list", "namespaces", None),
        ("list", "nodes", None),
        ("create", "rolebindings.rbac.authorization.k8s.io", ns),
        ("escalate", "clusterroles.rbac.authorization.k8s.io", None),
        ("impersonate", "users", None),
        ("*", "*", ns),
    ]
    wrong = [(v, r, n, "expected yes") for v, r, n in allowed if not release.can_i(v, r, namespace=n)]
    wrong += [(v, r, n, "expected no") for v, r, n in denied if release.can_i(v, r, namespace=n)]
    assert release.can_i("get", "customresourcedefinitions.apiextensions.k8s.io/httproutes.gateway.networking.k8s.io")
    assert not wrong, wrong
    # the operator finds the activator's pods through its Service's EndpointSlices, in the release namespace
    assert release.can_i("list", "endpointslices.discovery.k8s.io", namespace=release.namespace)
    assert release.can_i("create", "endpointslices.discovery.k8s.io", namespace=ns)
    assert release.can_i("delete", "endpoints", namespace=ns)
    assert not release.can_i("create", "endpoints", namespace=ns)

    # the activator: only what it needs to hold a request (list a model's pods, write the demand annotation)
    activator = Release(cluster, release.name, release.namespace, f"{release.name}-modelapi-activator")
    activator_allowed = [("list", "pods", ns), ("list", "services", ns), ("patch", "modelapis.serving.modelapi.io", ns)]
    activator_denied = [
        ("get", "secrets", ns),
        ("create", "pods", ns),
        ("delete", "pods", ns),
        ("watch", "pods", ns),
        ("patch", "deployments.apps", ns),
        ("patch", "deployments.apps/scale", ns),
        ("delete", "modelapis.serving.modelapi.io", ns),
        ("patch", "services", ns),
        ("create", "endpointslices.discovery.k8s.io", ns),
    ]
    wrong = [(v, r, n, "expected yes") for v, r, n in activator_allowed if not activator.can_i(v, r, namespace=n)]
    wrong += [(v, r, n, "expected no") for v, r, n in activator_denied if activator.can_i(v, r, namespace=n)]
    assert not wrong, wrong
    status = ("--subresource=status",)
    assert not activator.can_i("patch", "modelapis.serving.modelapi.io", namespace=ns, extra=status)
    assert not activator.can_i("patch", "deployments.apps", namespace=ns, extra=("--subresource=scale",))


def test_operator_runs_namespaced_under_roles_only_in_watched_namespaces(
    cluster: Cluster, namespace: str, models_namespace: str, install: Any, tmp_path: Path
) -> None:
    release = install(namespace, {"watchNamespaces": [models_namespace], "resyncSeconds": 5})
    with OperatorUnderServiceAccount(release, tmp_path) as operator:
        assert operator.chart_env["MODELAPI_OPERATOR_NAMESPACES"] == models_namespace
        exercise_iris(cluster, models_namespace)
        assert operator.process is not None
        assert operator.process.poll() is None, operator.log()[-4000:]
    assert not operator.refusals(), "\n".join(operator.refusals()[:10])
    assert release.can_i("create", "deployments.apps", namespace=models_namespace)
    assert not release.can_i("list", "deployments.apps", namespace=namespace)
    assert not release.can_i("list", "deployments.apps")
    assert not release.can_i("list", "modelapis.serving.modelapi.io")
    assert not release.can_i("get", "secrets", namespace=models_namespace)
    assert release.can_i("watch", "namespaces")
    assert not release.can_i("get", "namespaces")


def test_two_replicas_with_peering_one_acts_the_other_stands_by(
    cluster: Cluster, namespace: str, models_namespace: str, install: Any, tmp_path: Path
) -> None:
    """replicaCount: 2 with peering: two operator processes with the chart Deployment's args and env (each draws its
    own priority) heartbeat into the ClusterKopfPeering; exactly one acts, the other stands by (its resync loops too)
    and still answers its liveness probe. The hand-over on kill -9 is tests/e2e/test_faults.py's."""
    peering_name = f"p{secrets.token_hex(3)}"
    release = install(
        namespace, {"replicaCount": 2, "peering": {"enabled": True, "name": peering_name}, "resyncSeconds": 5}
    )
    assert release.deployment()["spec"]["replicas"] == 2
    assert cluster.get_json("clusterkopfpeering", peering_name)["metadata"]["name"] == peering_name
    with (
        OperatorUnderServiceAccount(release, tmp_path, replica=1) as one,
        OperatorUnderServiceAccount(release, tmp_path, replica=2) as two,
    ):

        def heartbeats() -> dict[str, Any]:
            return dict(cluster.get_json("clusterkopfpeering", peering_name).get("status") or {})

        wait_until(lambda: len(heartbeats()) == 2, timeout=60, what="both replicas in the ClusterKopfPeering status")
        priorities = sorted(peer["priority"] for peer in heartbeats().values())
        assert priorities[0] != priorities[1], "two replicas of a tied priority would both pause"
        cluster.kubectl("apply", "-f", str(IRIS), namespace=models_namespace)
        wait_ready(cluster, models_namespace, "iris")

        def roles() -> list[str] | None:
            """What each replica's resync loops last said (a replica alone for a moment at start acts, then yields)."""
            last = [re.findall(r"resync loops (act|stand by)", op.log())[-1:] for op in (one, two)]
            return (
                [said[0] for said in last] if all(last) and sorted(s[0] for s in last) == ["act", "stand by"] else None
            )

        said = wait_until(roles, timeout=30, what="one replica's resync loops acting, the other's standing by")
        standby = one if said[0] == "stand by" else two
        assert "Handler 'reconcile_modelapi'" not in standby.log(), "the standby reconciled iris"
        for op in (one, two):
            assert op.process is not None
            assert op.process.poll() is None, op.log()[-4000:]
            assert urlopen_ok(f"http://127.0.0.1:{op.port}/healthz"), "a standby replica is live, not restarted"
    refusals = one.refusals() + two.refusals()
    assert not refusals, "\n".join(refusals[:10])


def urlopen_ok(url: str) -> bool:
    from urllib.request import urlopen

    with urlopen(url, timeout=5) as response:  # the operator's own loopback endpoint
        return bool(response.status == 200)


def iris_status_series(scraped: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> list[str]:
    """The names of the modelapi_status_* series that still carry name="iris"."""
    return [name for name, labels in scraped if name.startswith("modelapi_status_") and ("name", "iris") in labels]


def metric_samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics page: (name, sorted labels) -> value."""
    from urllib.request import urlopen

    from prometheus_client.parser import text_string_to_metric_families

    with urlopen(url, timeout=5) as response:  # the operator's own loopback endpoint
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


# ---- the conventions of a well-kept chart ------------------------------------------------------------------------
RECOMMENDED_LABELS = {
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/component",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_object_carries_the_recommended_labels(cluster: Cluster, tmp_path: Path, name: str) -> None:
    docs = render(cluster, tmp_path, "modelapi-system", variant(name, "models"))
    assert len(docs) > 5
    wrong = []
    for doc in docs:
        objects = [(doc["kind"], doc["metadata"])]
        if doc["kind"] == "Deployment":  # its pods too; the selector must stay a subset of their labels
            objects.append(("pod of " + doc["metadata"]["name"], doc["spec"]["template"]["metadata"]))
            assert (
                doc["spec"]["selector"]["matchLabels"].items() <= doc["spec"]["template"]["metadata"]["labels"].items()
            )
        for kind, meta in objects:
            labels = meta.get("labels") or {}
            expected = {
                "app.kubernetes.io/instance": "modelapi",
                "app.kubernetes.io/version": CHART_META["appVersion"],
                "app.kubernetes.io/managed-by": "Helm",
                "helm.sh/chart": f"modelapi-{CHART_META['version']}",
                "app.kubernetes.io/name": f"modelapi-{labels.get('app.kubernetes.io/component')}",
            }
            if not labels.keys() >= RECOMMENDED_LABELS or any(labels.get(k) != v for k, v in expected.items()):
                wrong.append((kind, meta.get("name"), labels))
            if labels.get("app.kubernetes.io/component") not in {"operator", "activator", "monitoring", "node-cache"}:
                wrong.append((kind, meta.get("name"), "component"))
    assert not wrong, wrong


BAD_VALUES = [
    ({"replicaCount": "two"}, "at '/replicaCount': got string, want integer"),
    ({"replicaCont": 2}, "additional properties 'replicaCont' not allowed"),  # a typo is refused, not ignored
    ({"image": {"pullPolicy": "Sometimes"}}, "at '/image/pullPolicy'"),
    ({"activator": {"queueLimit": 0}}, "at '/activator/queueLimit': minimum: got 0, want 1"),
    ({"watchNamespaces": ["Team_A"]}, "at '/watchNamespaces/0'"),
    ({"runtimeImages": {"pullSecrets": [{"name": "regcred"}]}}, "at '/runtimeImages/pullSecrets/0'"),  # names
    ({"imagePullSecrets": ["regcred"]}, "at '/imagePullSecrets/0': got string, want object"),  # references
    ({"prometheusUrl": "prometheus:9090"}, "at '/prometheusUrl'"),
    ({"monitoring": {"prometheusRule": {"errorRateFor": "5 minutes"}}}, "at '/monitoring/prometheusRule/errorRateFor'"),
    ({"metrics": {"port": 70000}}, "at '/metrics/port'"),
    ({"nodeCache": {"allowedEndpoints": ["s3.example.com"]}}, "at '/nodeCache/allowedEndpoints/0'"),  # an origin
    ({"nodeCache": {"placement": "hardlink"}}, "at '/nodeCache/placement'"),
    ({"maxArtifactSize": "20 GB"}, "at '/maxArtifactSize'"),
    ({"logFormat": "xml"}, "at '/logFormat'"),
    ({"tracing": {"otlpEndpoint": "otel-collector:4318"}}, "at '/tracing/otlpEndpoint'"),
    ({"tracing": {"sampleRate": 101}}, "at '/tracing/sampleRate'"),
]


@pytest.mark.parametrize(("values", "path"), BAD_VALUES, ids=[next(iter(values)) for values, _ in BAD_VALUES])
def test_the_schema_refuses_bad_values_naming_the_value(
    cluster: Cluster, namespace: str, tmp_path: Path, values: dict[str, Any], path: str
) -> None:
    file = values_file(tmp_path, values)
    lint = helm(cluster, "lint", str(CHART), "--strict", "--values", file, check=False)
    assert lint.returncode != 0
    assert "schema" in lint.stdout + lint.stderr
    assert path in lint.stdout + lint.stderr
    release = f"bad{secrets.token_hex(3)}"
    install = helm(cluster, "install", release, str(CHART), "--namespace", namespace, "--values", file, check=False)
    assert install.returncode != 0
    assert "values don't meet the specifications of the schema" in install.stderr
    assert path in install.stderr, install.stderr
    assert helm(cluster, "status", release, "--namespace", namespace, check=False).returncode != 0, "nothing installed"


def test_the_schema_accepts_the_defaults_and_every_documented_variant(cluster: Cluster, tmp_path: Path) -> None:
    """The defaults, the variants above, and what make demo and the real-node tier set."""
    sets = ["--set", "replicaCount=0", "--set", "runtimeImages.cpu=localhost/modelapi/runtime:dev"]
    sets += [
        "--set",
        "serviceAccount.name=modelapi-demo",
        "--set",
        "resyncSeconds=10",
        "--set",
        "image.pullPolicy=Never",
    ]
    assert "0 chart(s) failed" in helm(cluster, "lint", str(CHART), "--strict", *sets).stdout


def test_alerts_link_to_the_runbooks_where_the_installer_serves_them(cluster: Cluster, tmp_path: Path) -> None:
    def runbook_urls(values: dict[str, Any]) -> set[str]:
        docs = render(cluster, tmp_path, "modelapi-system", values)
        (rule,) = [doc for doc in docs if doc["kind"] == "PrometheusRule"]
        return {
            r["annotations"]["runbook_url"] for group in rule["spec"]["groups"] for r in group["rules"] if "alert" in r
        }

    on = {"monitoring": {"prometheusRule": {"enabled": True}, "runbookBaseUrl": "https://wiki.example/modelapi"}}
    urls = runbook_urls(on)
    assert len(urls) == 7
    assert all(url.startswith("https://wiki.example/modelapi#") for url in urls), urls
    assert "https://wiki.example/modelapi#modelapioperatordown" in urls
    # the chart names no source repository (no guessed address): without a base the install stops and says why
    values = tmp_path / "no-runbooks.yaml"
    values.write_text(yaml.safe_dump({"monitoring": {"prometheusRule": {"enabled": True}}}))
    kube = ["--kube-version", cluster.env["KUBE_VERSION"]]
    refused = helm(cluster, "template", "m", str(CHART), *kube, "--values", str(values), check=False)
    assert refused.returncode != 0
    assert "monitoring.prometheusRule.enabled needs monitoring.runbookBaseUrl" in refused.stderr, refused.stderr
    assert f"modelapi v{CHART_META['appVersion']}" in refused.stderr
    without_metrics = runbook_urls({**on, "metrics": {"enabled": False}})
    assert not any("modelapioperator" in url for url in without_metrics), "no operator alerts without its metrics"


def test_log_format_reaches_the_operator_which_passes_it_on(cluster: Cluster, tmp_path: Path) -> None:
    def operator_env(values: dict[str, Any]) -> dict[str, Any]:
        docs = render(cluster, tmp_path, "ops", values)
        (operator,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-operator")]
        (container,) = operator["spec"]["template"]["spec"]["containers"]
        return {item["name"]: item.get("value") for item in container["env"]}

    assert operator_env({})["MODELAPI_OPERATOR_LOG_FORMAT"] == "text"
    env = operator_env({"logFormat": "json"})
    assert OperatorSettings(log_format=env["MODELAPI_OPERATOR_LOG_FORMAT"]).log_format == "json"


def test_tracing_values_reach_the_operator_only_when_an_endpoint_is_set(cluster: Cluster, tmp_path: Path) -> None:
    def operator_env(values: dict[str, Any]) -> dict[str, Any]:
        docs = render(cluster, tmp_path, "ops", values)
        (operator,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-operator")]
        (container,) = operator["spec"]["template"]["spec"]["containers"]
        return {item["name"]: item.get("value") for item in container["env"]}

    assert not [name for name in operator_env({}) if "TRACING" in name]
    env = operator_env({"tracing": {"otlpEndpoint": "http://otel.obs:4318", "sampleRate": 2.5}})
    settings = OperatorSettings(
        tracing_endpoint=env["MODELAPI_OPERATOR_TRACING_ENDPOINT"],
        tracing_sample_rate=env["MODELAPI_OPERATOR_TRACING_SAMPLE_RATE"],
    )
    assert (settings.tracing_endpoint, settings.tracing_sample_rate) == ("http://otel.obs:4318", 2.5)


def test_operator_metrics_service_and_service_monitor(cluster: Cluster, tmp_path: Path) -> None:
    docs = render(cluster, tmp_path, "ops", {"monitoring": {"serviceMonitor": {"enabled": True}}})
    (operator,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-operator")]
    (container,) = operator["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["MODELAPI_OPERATOR_METRICS_ADDRESS"] == "0.0.0.0:8081"
    assert OperatorSettings(metrics_address=env["MODELAPI_OPERATOR_METRICS_ADDRESS"]).metrics_address
    assert {"name": "metrics", "containerPort": 8081, "protocol": "TCP"} in container["ports"]
    (service,) = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "modelapi-operator-metrics"]
    assert service["spec"]["selector"].items() <= operator["spec"]["template"]["metadata"]["labels"].items()
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    (monitor,) = [d for d in docs if d["kind"] == "ServiceMonitor"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    # the ModelAPI status series carry the ModelAPI's namespace, not the operator's (docs/metrics.md)
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["ops"]}
    off = render(
        cluster, tmp_path, "ops", {"metrics": {"enabled": False}, "monitoring": {"serviceMonitor": {"enabled": True}}}
    )
    assert not [d for d in off if d["kind"] in {"ServiceMonitor"} or d["metadata"]["name"].endswith("-metrics")]


def test_pull_secrets_for_model_pods_and_for_the_charts_own_pods(cluster: Cluster, tmp_path: Path) -> None:
    values = {"imagePullSecrets": [{"name": "chart-pull"}], "runtimeImages": {"pullSecrets": ["regcred", "mirror"]}}
    docs = render(cluster, tmp_path, "ops", values)
    deployments = {d["metadata"]["name"]: d["spec"]["template"]["spec"] for d in docs if d["kind"] == "Deployment"}
    assert set(deployments) == {"modelapi-operator", "modelapi-activator"}
    for pod in deployments.values():
        assert pod["imagePullSecrets"] == [{"name": "chart-pull"}]
    env = {item["name"]: item.get("value") for item in deployments["modelapi-operator"]["containers"][0]["env"]}
    settings = OperatorSettings.model_validate({"image_pull_secrets": env["MODELAPI_OPERATOR_IMAGE_PULL_SECRETS"]})
    assert settings.image_pull_secrets == ["regcred", "mirror"]  # the builder puts them in every model pod
    plain = render(cluster, tmp_path, "ops", {})
    for doc in plain:
        if doc["kind"] == "Deployment":
            assert "imagePullSecrets" not in doc["spec"]["template"]["spec"]
            assert all(
                e["name"] != "MODELAPI_OPERATOR_IMAGE_PULL_SECRETS"
                for e in doc["spec"]["template"]["spec"]["containers"][0]["env"]
            )


# ---- install, upgrade, uninstall as the chart's README says ------------------------------------------------------
def test_install_upgrade_with_crds_and_uninstall_as_documented(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    release = f"l{secrets.token_hex(3)}"
    installed = helm(
        cluster, "install", release, str(CHART), "--namespace", namespace,
        "--values", values_file(tmp_path, {"resyncSeconds": 30}), "--wait", "--timeout", "90s",
    )  # fmt: skip
    notes = installed.stdout
    assert "kubectl -n ml apply -f examples/iris/model.yaml" in notes, notes
    assert "/v1/models/iris:predict" in notes
    assert "/v2/models/iris/infer" in notes
    assert "WARNINGS" in notes
    assert "prometheusUrl is not set" in notes
    assert "image.repository is modelapi/operator, a name no registry publishes" in notes
    assert "runtimeImages.cpu/.gpu (modelapi/runtime:" in notes
    assert "activator.enabled is false" not in notes
    try:
        # Helm never upgrades crds/: the script applies them first. A CRD missing from the cluster (as a changed one
        # would be stale) is there after it.
        kopf_crd = "kopfpeerings.kopf.dev"
        cluster.kubectl("delete", "crd", kopf_crd, "--ignore-not-found", "--wait=true", timeout=60)
        env = {**cluster.subprocess_env(), "HELM": cluster.env["HELM"], "KUBECTL": cluster.kubectl_bin}
        values = values_file(tmp_path, {"resyncSeconds": 45, "prometheusUrl": "http://prometheus.monitoring:9090"})
        upgraded = subprocess.run(
            ["bash", str(ROOT / "scripts" / "chart-upgrade.sh"), release, namespace, "--values", values, "--wait"],
            env=env, capture_output=True, text=True, timeout=180, check=False,
        )  # fmt: skip
        assert upgraded.returncode == 0, upgraded.stderr + upgraded.stdout
        crd = cluster.get_json("crd", kopf_crd)
        assert any(c["type"] == "Established" and c["status"] == "True" for c in crd["status"]["conditions"])
        assert "prometheusUrl is not set" not in upgraded.stdout, "the upgrade's NOTES see the new values"
        history = json.loads(helm(cluster, "history", release, "--namespace", namespace, "-o", "json").stdout)
        assert [entry["revision"] for entry in history] == [1, 2]
        deployment = cluster.get_json("deployment", f"{release}-modelapi-operator", namespace=namespace)
        env_now = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env_now["MODELAPI_OPERATOR_RESYNC_SECONDS"] == "45"
        assert env_now["MODELAPI_OPERATOR_PROMETHEUS_URL"] == "http://prometheus.monitoring:9090"
    finally:
        helm(cluster, "uninstall", release, "--namespace", namespace, "--wait", "--timeout", "90s")
    selector = f"app.kubernetes.io/instance={release}"
    left = cluster.kubectl(
        "get", "deployments,services,serviceaccounts,roles,rolebindings,poddisruptionbudgets,configmaps",
        "-l", selector, "-o", "name", namespace=namespace,
    ).stdout.split()  # fmt: skip
    left += cluster.kubectl("get", "clusterroles,clusterrolebindings", "-l", selector, "-o", "name").stdout.split()
    assert not left, f"left behind by helm uninstall: {left}"
    for crd_name in ("modelapis.serving.modelapi.io", "kopfpeerings.kopf.dev", "clusterkopfpeerings.kopf.dev"):
        assert cluster.kubectl("get", "crd", crd_name, check=False).returncode == 0, f"{crd_name} kept on uninstall"
