"""Every query of the chart's Grafana dashboard, and every alert's signal, returns data from the harness's Prometheus
after traffic to a ModelAPI with a canary.

The queries come out of the chart as helm renders it (the dashboard's ConfigMap, the PrometheusRule), so a new panel
or alert is tested without a change here. Each alert is ``<recording rule> <comparison> <threshold>`` or
``absent(<recording rule> == 1)`` (prometheusrule.yaml says so, and this test holds it to it): the recording rules are
the signals, evaluated here as plain queries; promtool checks the rendered rules. Prometheus scrapes the model pods
(role pod), the kubelet's cAdvisor (role node) and the operator (a file_sd target named as the chart's ServiceMonitor
would have it, release ``m`` in namespace ``default``).
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.conftest import Cluster, wait_until
from e2e.processes import OperatorProcess, free_port

from .load import ConstantLoad
from .test_real_node import FLOWERS, Models, _apply, _manifest, _predict_url, _wait_ready

pytestmark = pytest.mark.node

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "charts" / "modelapi"
RELEASE, RELEASE_NAMESPACE = "m", "default"
CADVISOR_UP = 'up{job="kubelet-cadvisor"}'
# an alert: a recorded signal against a number, or the absence of a recorded signal at 1
RULE = r"[a-z0-9_:]+"
ALERT = re.compile(rf"^\s*(?:absent\((?P<absent>{RULE}) == 1\)|(?P<signal>{RULE}) (?:[<>]=?|==|!=) [0-9.e-]+)\s*$")


@pytest.fixture(scope="module")
def scraped_operator(cluster: Cluster, node: dict[str, str]) -> Iterator[OperatorProcess]:
    """The operator (as the other real-node tests run it) with its metrics endpoint, scraped as the chart's
    ServiceMonitor would have it: job ``<release>-modelapi-operator-metrics``, the release's namespace."""
    port = free_port()
    process = OperatorProcess(
        cluster,
        {
            "MODELAPI_OPERATOR_CPU_IMAGE": node["NODE_RUNTIME_IMAGE"],
            "MODELAPI_OPERATOR_RESYNC_SECONDS": "5",
            "MODELAPI_OPERATOR_CANARY_TICK_SECONDS": "1",
            "MODELAPI_OPERATOR_PROMETHEUS_URL": cluster.prometheus_url,
            "MODELAPI_OPERATOR_METRICS_ADDRESS": f"127.0.0.1:{port}",
        },
    )
    process.start()
    labels = {"job": f"{RELEASE}-modelapi-operator-metrics", "namespace": RELEASE_NAMESPACE, "pod": "operator-0"}
    sd_path = cluster.prometheus_file_sd_dir / "modelapi-operator.json"
    tmp = sd_path.with_suffix(".tmp")  # Prometheus must never read a half-written file
    tmp.write_text(json.dumps([{"targets": [f"127.0.0.1:{port}"], "labels": labels}]))
    tmp.rename(sd_path)
    yield process
    sd_path.unlink(missing_ok=True)
    process.stop()


def _render(cluster: Cluster, template: str) -> dict[str, Any]:
    command = [cluster.env["HELM"], "template", RELEASE, str(CHART), "--kube-version", "1.30.0"]
    command += ["--namespace", RELEASE_NAMESPACE, "--show-only", f"templates/{template}"]
    command += ["--set", "monitoring.prometheusRule.enabled=true,monitoring.runbookBaseUrl=https://wiki.example/rb"]
    rendered: dict[str, Any] = yaml.safe_load(
        subprocess.run(command, capture_output=True, text=True, check=True).stdout
    )
    return rendered


def dashboard_queries(cluster: Cluster) -> dict[str, str]:
    """Every panel target's expression, by "panel title / refId"."""
    configmap = _render(cluster, "grafana-dashboard.yaml")
    (text,) = configmap["data"].values()
    panels = json.loads(text)["panels"]
    queries = {
        f"{panel['title']} / {target['refId']}": target["expr"]
        for panel in panels
        for target in panel.get("targets", [])
    }
    assert len(queries) >= 20, sorted(queries)
    return queries


def alert_signals(cluster: Cluster, tmp_path: Path) -> dict[str, str]:
    """Every recording rule's expression (the alerts' signals), by its name; checks that every alert compares one
    of them, and the rules with promtool."""
    groups = _render(cluster, "prometheusrule.yaml")["spec"]["groups"]
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": groups}))
    check = subprocess.run(
        [cluster.env["PROMTOOL"], "check", "rules", str(rules_file)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    rules = [rule for group in groups for rule in group["rules"]]
    signals = {rule["record"]: rule["expr"] for rule in rules if "record" in rule}
    alerts = {rule["alert"]: rule["expr"] for rule in rules if "alert" in rule}
    assert len(alerts) >= 7, sorted(alerts)
    for alert, expr in alerts.items():
        match = ALERT.match(expr)
        assert match, f"{alert}: {expr!r} is not `<recording rule> <comparison> <number>` nor `absent(<rule> == 1)`"
        assert (match["absent"] or match["signal"]) in signals, f"{alert} compares {expr!r}: no such recording rule"
    return signals


def query(cluster: Cluster, promql: str) -> list[dict[str, Any]]:
    url = f"{cluster.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=10) as response:  # loopback only
        payload = json.load(response)
    assert payload["status"] == "success", payload
    return list(payload["data"]["result"])


def test_every_dashboard_query_and_alert_signal_returns_data_for_a_canary(
    cluster: Cluster, node: dict[str, str], scraped_operator: OperatorProcess, restricted: str, models: Models,
    tmp_path: Path,
) -> None:  # fmt: skip
    panels = dashboard_queries(cluster)
    signals = alert_signals(cluster, tmp_path)
    name = "watched"
    canary = {"steps": [{"weight": 50, "pauseSeconds": 600}], "trafficRouting": "replicas"}
    # an HPA (min < max) for its desired count; requests == limits, so the containers have a CPU quota (throttling)
    spec = {
        "autoscaling": {"minReplicas": 1, "maxReplicas": 2},
        "runtime": {"resources": {"cpu": "200m", "memory": "384Mi"}},
        "rollout": {"strategy": "Canary", "canary": canary},
    }
    _apply(cluster, restricted, _manifest(name, models.put("v1", 0.0), node, **spec))
    _wait_ready(cluster, restricted, name)
    _apply(cluster, restricted, _manifest(name, models.put("v2", 5.0), node, **spec))

    def canary_serving() -> bool:
        status = cluster.get_json("modelapi", name, namespace=restricted).get("status", {})
        return bool((status.get("canary") or {}).get("weight"))

    wait_until(canary_serving, timeout=180, interval=1, what="the canary serving")
    load = ConstantLoad(
        _predict_url(cluster, restricted, name), {"instances": FLOWERS}, models.classify, rate=40, keepalive=False
    )
    with load:
        threading.Event().wait(20)  # a few scrapes (every 2 s) of both arms under load
        variables = {"$namespace": restricted, "$model": name, "$__rate_interval": "1m"}
        missing: dict[str, str] = {}
        for title, template in panels.items():
            expr = template
            for variable, value in variables.items():
                expr = expr.replace(variable, value)
            series = _series(cluster, expr, lambda found: _roles(found) in (set(), {"stable", "canary"}))
            if not series:
                missing[f"panel {title}"] = expr
        for record, expr in signals.items():
            series = _series(
                cluster, expr, lambda found: any(_namespace(s) in (restricted, RELEASE_NAMESPACE) for s in found)
            )
            if not series:
                missing[f"signal {record}"] = expr
    if missing:  # what the scrapes brought, to tell a missing scrape from a query that matches nothing
        for probe in (CADVISOR_UP, "count by (namespace, container) (container_cpu_usage_seconds_total)"):
            print(f"[dashboard] {probe}: {[(s['metric'], s['value'][1]) for s in query(cluster, probe)]}")
    assert not missing, "queries without data:\n" + "\n".join(f"{k}: {v}" for k, v in missing.items())
    scraped_operator.assert_alive()
    assert not load.report.failed, load.report.summary()


def _roles(series: list[dict[str, Any]]) -> set[str]:
    return {s["metric"]["role"] for s in series if "role" in s["metric"]}


def _namespace(series: dict[str, Any]) -> str:
    return str(series["metric"].get("namespace", ""))


def _series(
    cluster: Cluster, expr: str, complete: Callable[[list[dict[str, Any]]], bool], timeout: float = 30
) -> list[dict[str, Any]]:
    """The query's series once there are some and they are ``complete`` (a rate needs two scrapes, the operator
    publishes after a reconcile), or none after ``timeout`` seconds; what it last saw is printed."""
    seen: list[dict[str, Any]] = []

    def answered() -> list[dict[str, Any]] | None:
        nonlocal seen
        seen = query(cluster, expr)
        return seen if seen and complete(seen) else None

    try:
        series: list[dict[str, Any]] = wait_until(answered, timeout=timeout, interval=2, what=expr)
    except AssertionError:
        print(f"[dashboard] no complete answer to {expr}: {[s['metric'] for s in seen]}")
        return []
    return series
