#!/usr/bin/env bash
# The autoscaling benchmarks, one command: takes the machine's real-node lock, brings the real-node cluster up
# (tests/e2e/cluster, MODELAPI_NODE=real), runs bench_autoscaling.py, and brings the cluster down inside the lock.
#   bash benchmarks/autoscaling/run.sh                 # everything (about 30 minutes)
#   bash benchmarks/autoscaling/run.sh -k iris         # only iris's first answers from zero (pytest -k)
# MODELAPI_BENCH_JSON=FILE keeps the figures (default /tmp/modelapi-autoscaling-bench-<time>.json);
# MODELAPI_BENCH_RUNS / MODELAPI_BENCH_LARGE_RUNS: first answers per model (3 / 2); MODELAPI_BENCH_FIXED=0 skips
# the step load on a fixed maxReplicas Deployment; MODELAPI_BENCH_IRIS_CPU: iris's CPU values (250m,500m).
set -euo pipefail
# shellcheck source=SCRIPTDIR/../real-node-bench.sh
source "$(dirname "${BASH_SOURCE[0]}")/../real-node-bench.sh"
real_node_bench autoscaling benchmarks/autoscaling/bench_autoscaling.py 'onnxruntime|onnx|numpy|fastapi|uvicorn|aiohttp|kopf|pydantic' "$@"
