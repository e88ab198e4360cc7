"""Chart.yaml's kubeVersion names the oldest Kubernetes minor a test runs on: the one `make test-compat` builds from
tests/e2e/cluster/gomod-compat/ (the kwok tier's usual control plane, gomod/, is newer)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]
CLUSTER = ROOT / "tests" / "e2e" / "cluster"


def _required_minor(gomod: Path) -> tuple[int, int]:
    found = re.search(r"^require k8s\.io/kubernetes v(\d+)\.(\d+)\.\d+$", gomod.read_text(), re.MULTILINE)
    assert found, f"{gomod} requires no k8s.io/kubernetes version"
    return int(found[1]), int(found[2])


def test_kube_version_is_the_minor_make_test_compat_runs_on() -> None:
    claim = yaml.safe_load((ROOT / "charts" / "modelapi" / "Chart.yaml").read_text())["kubeVersion"]
    found = re.fullmatch(r">=(\d+)\.(\d+)\.0-0", claim)
    assert found, f"kubeVersion {claim!r} is not a lower bound '>=X.Y.0-0'"
    oldest = int(found[1]), int(found[2])
    assert _required_minor(CLUSTER / "gomod-compat" / "go.mod") == oldest
    assert _required_minor(CLUSTER / "gomod" / "go.mod") >= oldest
    assert "MODELAPI_GOMOD_DIR=$(CURDIR)/tests/e2e/cluster/gomod-compat" in (ROOT / "Makefile").read_text()
