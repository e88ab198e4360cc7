"""The chart's alerts, rendered by helm and evaluated by promtool on made-up series: ModelAPINoReadyReplicas fires
for a ModelAPI with no ready replica and stays quiet for one at zero replicas on purpose (Ready reason ScaledToZero);
the operator's alerts fire on its own series alone and stay quiet below their thresholds.

helm and promtool are the ones the e2e harness builds (cluster.sh); the cluster itself is not used.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from .conftest import Cluster

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "modelapi"
# the alerts need a runbook base (the chart names no source repository)
ALERTS_ON = "monitoring.prometheusRule.enabled=true,monitoring.runbookBaseUrl=https://wiki.example/runbooks"

PARKED = 'modelapi_status_condition{namespace="ml",name="parked",type="Ready",reason="ScaledToZero"}'
BROKEN = 'modelapi_status_condition{namespace="ml",name="broken",type="Ready",reason="CrashLooping"}'
NO_READY_TEST = {
    "rule_files": ["rules.yaml"],
    "evaluation_interval": "1m",
    "tests": [
        {
            "interval": "1m",
            "input_series": [
                {"series": 'modelapi_status_ready_replicas{namespace="ml",name="parked"}', "values": "0x10"},
                {"series": PARKED, "values": "1x10"},
                {"series": 'modelapi_status_ready_replicas{namespace="ml",name="broken"}', "values": "0x10"},
                {"series": BROKEN, "values": "0x10"},
                {"series": 'modelapi_status_ready_replicas{namespace="ml",name="fine"}', "values": "2x10"},
            ],
            "alert_rule_test": [
                {
                    "eval_time": "8m",
                    "alertname": "ModelAPINoReadyReplicas",
                    "exp_alerts": [{"exp_labels": {"namespace": "ml", "name": "broken", "severity": "critical"}}],
                }
            ],
        }
    ],
}


def test_no_ready_replicas_fires_for_a_broken_model_but_not_for_one_at_zero(cluster: Cluster, tmp_path: Path) -> None:
    helm, promtool = cluster.env["HELM"], cluster.env["PROMTOOL"]
    values = ALERTS_ON
    only = "templates/prometheusrule.yaml"
    command = [helm, "template", "m", str(CHART), "--kube-version", "1.30.0", "--set", values, "--show-only", only]
    rendered = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rule = yaml.safe_load(rendered)
    for group in rule["spec"]["groups"]:
        for item in group["rules"]:
            item.pop("annotations", None)  # promtool compares annotations too; the labels say which alert fired
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(NO_READY_TEST))
    proc = subprocess.run(
        [promtool, "test", "rules", "test.yaml"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# The operator's alerts read only its own series (no kube-state-metrics). Release "m" in namespace "default", as
# rendered below: the metrics Service, and so the scrape job, is m-modelapi-operator-metrics.
OPS = 'namespace="default",pod="m-modelapi-operator-0"'
UP = f'up{{job="m-modelapi-operator-metrics",{OPS}}}'
OPERATOR_TESTS = [
    # down: scraped and 0, or not scraped at all; up: quiet
    ([{"series": UP, "values": "0x10"}], "8m", "ModelAPIOperatorDown", [{"severity": "critical"}]),
    ([], "8m", "ModelAPIOperatorDown", [{"severity": "critical"}]),
    ([{"series": UP, "values": "1x10"}], "8m", "ModelAPIOperatorDown", []),
    # 3 of 13 reconciles a minute fail (> 0.1) for longer than 15m; 1 of 21 does not
    (
        [
            {"series": f'modelapi_operator_reconciles_total{{result="error",{OPS}}}', "values": "0+3x40"},
            {"series": f'modelapi_operator_reconciles_total{{result="success",{OPS}}}', "values": "0+10x40"},
        ],
        "35m",
        "ModelAPIOperatorReconcileErrors",
        [{"namespace": "default", "severity": "warning"}],
    ),
    (
        [
            {"series": f'modelapi_operator_reconciles_total{{result="error",{OPS}}}', "values": "0+1x40"},
            {"series": f'modelapi_operator_reconciles_total{{result="success",{OPS}}}', "values": "0+20x40"},
        ],
        "35m",
        "ModelAPIOperatorReconcileErrors",
        [],
    ),
    # reconciles waiting without a break for 15m fire; a queue that drains now and then does not
    (
        [{"series": f"modelapi_operator_reconciles_waiting{{{OPS}}}", "values": "2x20"}],
        "18m",
        "ModelAPIOperatorBacklog",
        [{"namespace": "default", "pod": "m-modelapi-operator-0", "severity": "warning"}],
    ),
    (
        [
            {
                "series": f"modelapi_operator_reconciles_waiting{{{OPS}}}",
                "values": "2 2 2 2 2 0 2 2 2 2 2 0 2 2 2 2 2 0 2 2",
            }
        ],
        "18m",
        "ModelAPIOperatorBacklog",
        [],
    ),
    # a watch restarted every minute for 30 minutes; every ten minutes is fine
    (
        [{"series": f'modelapi_operator_watch_restarts_total{{cause="inactive",{OPS}}}', "values": "0+1x40"}],
        "35m",
        "ModelAPIOperatorWatchRestarts",
        [{"namespace": "default", "pod": "m-modelapi-operator-0", "severity": "warning"}],
    ),
    (
        [{"series": f'modelapi_operator_watch_restarts_total{{cause="gone",{OPS}}}', "values": "0+0.1x40"}],
        "35m",
        "ModelAPIOperatorWatchRestarts",
        [],
    ),
]


def test_operator_alerts_fire_on_the_operators_own_series_only(cluster: Cluster, tmp_path: Path) -> None:
    helm, promtool = cluster.env["HELM"], cluster.env["PROMTOOL"]
    command = [helm, "template", "m", str(CHART), "--kube-version", "1.30.0", "--namespace", "default"]
    command += ["--set", ALERTS_ON, "--show-only", "templates/prometheusrule.yaml"]
    rule = yaml.safe_load(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
    (group,) = [g for g in rule["spec"]["groups"] if g["name"] == "modelapi-operator.rules"]
    for item in group["rules"]:
        item.pop("annotations", None)
        assert "modelapi_status" not in item["expr"], "no kube-state-metrics series in the operator's alerts"
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": [group]}))
    tests = [
        {
            "interval": "1m",
            "input_series": series,
            "alert_rule_test": [
                {"eval_time": at, "alertname": alert, "exp_alerts": [{"exp_labels": labels} for labels in expected]}
            ],
        }
        for series, at, alert, expected in OPERATOR_TESTS
    ]
    (tmp_path / "test.yaml").write_text(
        yaml.safe_dump({"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests})
    )
    proc = subprocess.run(
        [promtool, "test", "rules", "test.yaml"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
