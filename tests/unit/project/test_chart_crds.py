"""The Helm chart installs the same ModelAPI CRD as crds/modelapi.yaml (generated from the pydantic API).

Helm installs a chart's crds/ directory verbatim and cannot template it. charts/modelapi/crds/modelapi.yaml is a
relative symlink to crds/modelapi.yaml, so `make crds` updates both at once; Helm follows it (and `helm package`
stores the file's contents), and Argo CD accepts it since it stays inside the repository. These tests fail if it
is ever replaced by a stale copy.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry

from modelapi_operator.metrics import OperatorMetrics
from modelapi_runtime.metrics import Metrics

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "charts" / "modelapi"


def test_chart_crd_is_the_generated_one() -> None:
    link = CHART / "crds" / "modelapi.yaml"
    assert link.is_symlink(), "keep it a symlink: ln -sf ../../../crds/modelapi.yaml charts/modelapi/crds/modelapi.yaml"
    assert link.resolve() == (ROOT / "crds" / "modelapi.yaml").resolve()
    assert link.read_text() == (ROOT / "crds" / "modelapi.yaml").read_text()


def test_chart_crds_dir_holds_the_modelapi_crd_and_kopfs_peering_crds() -> None:
    """kopf's peering CRDs are shared with every kopf operator: in crds/, Helm installs them when missing, skips them
    when another operator's install made them, and never deletes them (charts/modelapi/README.md)."""
    files = sorted(path.name for path in (CHART / "crds").iterdir())
    assert files == ["kopf-peerings.yaml", "modelapi.yaml"]
    (crd,) = list(yaml.safe_load_all((CHART / "crds" / "modelapi.yaml").read_text()))
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == "modelapis.serving.modelapi.io"
    kopf = list(yaml.safe_load_all((CHART / "crds" / "kopf-peerings.yaml").read_text()))
    assert {doc["metadata"]["name"]: doc["spec"]["scope"] for doc in kopf} == {
        "clusterkopfpeerings.kopf.dev": "Cluster",
        "kopfpeerings.kopf.dev": "Namespaced",
    }
    assert not list((CHART / "templates").glob("*peering.yaml")), "no templated CRD: uninstall would delete it"


def test_dashboard_queries_only_metrics_the_runtime_exports() -> None:
    """Every modelapi_* series in the Grafana dashboard and the alerts is one the runtime or the operator (its own
    and the ModelAPI status series) defines: a renamed metric must not leave an empty panel behind."""
    exported = set()
    for family in Metrics("m", "r", max_batch_size=4).registry.collect():
        exported |= {family.name, *(sample.name for sample in family.samples)}
        if family.type == "counter":  # no sample before the first request; the series is <name>_total
            exported.add(family.name + "_total")
    operator = OperatorMetrics(CollectorRegistry())
    with contextlib.suppress(ValueError), operator.reconciling(str):  # a sample of every labelled series
        operator.watch_restarts.labels(cause="gone").inc()
        raise ValueError
    for family in operator.registry.collect():
        exported |= {family.name, *(sample.name for sample in family.samples)}
    texts = [(CHART / "files" / "modelapi-dashboard.json").read_text()]
    texts.append((CHART / "templates" / "prometheusrule.yaml").read_text())
    used = {name for text in texts for name in re.findall(r"\bmodelapi_[a-z0-9_]+", text)}
    used -= {"modelapi_runtime", "modelapi_operator"}  # a package, a job prefix: not series
    missing = sorted(name for name in used if name not in exported)
    assert not missing, f"not exported by the runtime: {missing}"
    assert {"modelapi_requests_total", "modelapi_request_duration_seconds_bucket", "modelapi_model_ready"} <= used
    assert {"modelapi_operator_reconciles_total", "modelapi_operator_watch_restarts_total"} <= used
