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
# shellcheck source=SCRIPTDIR/../real-node-bench.sh
source "$(dirname "${BASH_SOURCE[0]}")/../real-node-bench.sh"
real_node_bench coldstart benchmarks/coldstart/bench_coldstart.py 'onnxruntime|onnx|numpy|boto3|botocore|fastapi|uvicorn|kopf|pydantic' "$@"
