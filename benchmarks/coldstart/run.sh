#!/usr/bin/env bash
# The cold-start benchmark, one command: takes the machine's real-node lock, brings the real-node cluster up
# (tests/e2e/cluster, MODELAPI_NODE=real), runs bench_coldstart.py with the chart's node cache enabled, and brings the
# cluster down inside the lock.
#   bash benchmarks/coldstart/run.sh                  # 256 MiB and 1 GiB models, and the capped-link download
#   bash benchmarks/coldstart/run.sh -k link          # only the capped-link download (pytest -k)
# MODELAPI_BENCH_MIBS: model sizes in MiB (256,1024); MODELAPI_BENCH_TRANSFER_MIBS: sizes of the capped-link download
# (512); MODELAPI_BENCH_LINK_MIB_S: each connection's caps (16,64); MODELAPI_BENCH_JSON=FILE keeps the figures (default
# /tmp/modelapi-coldstart-bench-<time>.json, with the whole pip freeze next to it).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
export MODELAPI_NODE=real
export MODELAPI_CLUSTER_DIR=${MODELAPI_CLUSTER_DIR:-$ROOT/tests/e2e/cluster/.run-node}
export MODELAPI_BENCH_JSON=${MODELAPI_BENCH_JSON:-/tmp/modelapi-coldstart-bench-$(date -u +%Y%m%dT%H%M%SZ).json}
make -s venv

echo "==> machine: $(nproc) CPUs, $(free -g | awk '/^Mem:/ {print $2}') GiB, $(uname -sr), $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "==> disk free under /tmp: $(df -h --output=avail /tmp | tail -1 | tr -d ' ')"
echo "==> commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo ' (with uncommitted changes)')"
echo "==> load average (1, 5, 15 min) before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "==> versions: $(.venv/bin/python --version 2>&1); $(.venv/bin/pip freeze 2>/dev/null \
  | grep -iE '^(onnxruntime|onnx|numpy|boto3|botocore|fastapi|uvicorn|kopf|pydantic)==' | tr '\n' ' ')"
# the whole environment next to the figures (the runtime image installs the same constraints.txt pins)
.venv/bin/pip freeze --all >"${MODELAPI_BENCH_JSON%.json}.pip-freeze.txt"
echo "==> pip freeze: ${MODELAPI_BENCH_JSON%.json}.pip-freeze.txt"

# shellcheck disable=SC2016
flock /tmp/modelapi-real-node.lock bash -c '
  status=0
  .venv/bin/pytest benchmarks/coldstart/bench_coldstart.py -o python_files="bench_*.py" -p no:cacheprovider \
    -s -v "$@" || status=$?
  bash tests/e2e/cluster/cluster.sh down || true
  exit $status
' run.sh "$@"
echo "==> load average (1, 5, 15 min) after: $(cut -d' ' -f1-3 /proc/loadavg)"
