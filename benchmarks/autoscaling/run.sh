#!/usr/bin/env bash
# The autoscaling benchmarks, one command: takes the machine's real-node lock, brings the real-node cluster up
# (tests/e2e/cluster, MODELAPI_NODE=real), runs bench_autoscaling.py, and brings the cluster down inside the lock.
#   bash benchmarks/autoscaling/run.sh                 # everything (about 30 minutes)
#   bash benchmarks/autoscaling/run.sh -k iris         # only iris's first answers from zero (pytest -k)
# MODELAPI_BENCH_JSON=FILE keeps the figures (default /tmp/modelapi-autoscaling-bench-<time>.json);
# MODELAPI_BENCH_RUNS / MODELAPI_BENCH_LARGE_RUNS: first answers per model (3 / 2); MODELAPI_BENCH_FIXED=0 skips
# the step load on a fixed maxReplicas Deployment; MODELAPI_BENCH_IRIS_CPU: iris's CPU values (250m,500m).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
export MODELAPI_NODE=real
export MODELAPI_CLUSTER_DIR=${MODELAPI_CLUSTER_DIR:-$ROOT/tests/e2e/cluster/.run-node}
export MODELAPI_BENCH_JSON=${MODELAPI_BENCH_JSON:-/tmp/modelapi-autoscaling-bench-$(date -u +%Y%m%dT%H%M%SZ).json}
make -s venv

echo "==> machine: $(nproc) CPUs, $(free -g | awk '/^Mem:/ {print $2}') GiB, $(uname -sr), $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "==> commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo ' (with uncommitted changes)')"
echo "==> load average (1, 5, 15 min) before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "==> versions: $(.venv/bin/python --version 2>&1); $(.venv/bin/pip freeze 2>/dev/null \
  | grep -iE '^(onnxruntime|onnx|numpy|fastapi|uvicorn|aiohttp|kopf|pydantic)==' | tr '\n' ' ')"
# the whole environment next to the figures (the runtime image installs the same constraints.txt pins)
.venv/bin/pip freeze --all >"${MODELAPI_BENCH_JSON%.json}.pip-freeze.txt"
echo "==> pip freeze: ${MODELAPI_BENCH_JSON%.json}.pip-freeze.txt"

# shellcheck disable=SC2016
flock /tmp/modelapi-real-node.lock bash -c '
  status=0
  .venv/bin/pytest benchmarks/autoscaling/bench_autoscaling.py -o python_files="bench_*.py" -p no:cacheprovider \
    -s -v "$@" || status=$?
  bash tests/e2e/cluster/cluster.sh down || true
  exit $status
' run.sh "$@"
echo "==> load average (1, 5, 15 min) after: $(cut -d' ' -f1-3 /proc/loadavg)"
