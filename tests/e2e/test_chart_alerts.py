"""The chart's alerts, rendered by helm and evaluated by promtool on made-up series: ModelAPINoReadyReplicas fires
for a ModelAPI with no ready replica and stays quiet for one at zero replicas on purpose (Ready reason ScaledToZero).

helm and promtool are the ones the e2e harness builds (cluster.sh); the cluster itself is not used.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from .conftest import Cluster

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "modelapi"

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
    values = "monitoring.prometheusRule.enabled=true"
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
