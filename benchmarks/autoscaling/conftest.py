"""The real-node tier's fixtures (tests/e2e), shared with the benchmark: the cluster (reused, or brought up), a
fresh namespace per benchmark with Pod Security "restricted" and the S3 credentials, the chart's activator, the
operator as a local process, and the models in S3; on a failure, the components' log tails."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))

from e2e.conftest import cluster, namespace, pytest_runtest_makereport, s3
from e2e.node.test_autoscaling_zero_node import activator, operator
from e2e.node.test_real_node import models, node, restricted

__all__ = [
    "activator",
    "cluster",
    "models",
    "namespace",
    "node",
    "operator",
    "pytest_runtest_makereport",
    "restricted",
    "s3",
]
