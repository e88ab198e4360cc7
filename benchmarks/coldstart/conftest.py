"""The real-node tier's fixtures (tests/e2e), shared with the benchmark: the cluster (reused, or brought up), a fresh
namespace per benchmark with Pod Security "restricted" and the S3 credentials, the chart's node cache DaemonSet and
the operator pointing model pods at it (tests/e2e/node/test_node_cache.py); on a failure, the components' log
tails."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))

from e2e.conftest import cluster, namespace, pytest_runtest_makereport, s3
from e2e.node.test_node_cache import cache_agent, cache_operator
from e2e.node.test_real_node import node, restricted

__all__ = [
    "cache_agent",
    "cache_operator",
    "cluster",
    "namespace",
    "node",
    "pytest_runtest_makereport",
    "restricted",
    "s3",
]
