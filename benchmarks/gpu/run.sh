#!/usr/bin/env bash
# The prepared GPU check (runtime/README.md, "GPU"). Finishes in a few minutes on one GPU.
#
# Needs: the runtime-gpu image's environment as wheels in a git-ignored folder, by default ./gpu-wheels (override:
# WHEELS=DIR), since the device machine has no package registry: modelapi's wheel and `modelapi[gpu]` at the versions
# of constraints.txt (onnxruntime-gpu and the NVIDIA CUDA/cuDNN wheels of its [cuda,cudnn] extras, the same pins the
# image installs), plus onnx for the test model. Prepare them on a connected machine for the device's Python with
#   benchmarks/gpu/wheels.sh gpu-wheels 3.12
# The CUDA libraries are found as in the image: the wheels' site-packages/nvidia/*/lib folders, first on the
# library path (the image lists them in ld.so.conf.d); only the driver comes from the machine.
# What it checks and measures (results: $OUT/gpu-results.md and stdout):
#   1. the runtime started with --device cuda reports the CUDA provider active (modelapi_model_info{device="cuda"});
#   2. a 2048-4096-4096-1000 MLP: batch-1 vs dynamic batching at 16 connections (goal >= 3x req/s, p95 no worse);
#   3. GPU vs CPU on the same load.
set -euo pipefail
cd "$(dirname "$0")/../.."
WHEELS=${WHEELS:-gpu-wheels}
OUT=${OUT:-$(mktemp -d)}
DURATION=${DURATION:-20}
VENV=$(mktemp -d)/venv
log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

log "venv from $WHEELS"
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --no-index --find-links "$WHEELS" -c constraints.txt 'modelapi[gpu]' onnx
LD_LIBRARY_PATH="$(find "$VENV/lib" -type d -path '*/site-packages/nvidia/*/lib' | sort | paste -sd:)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LD_LIBRARY_PATH
"$VENV/bin/python" - <<'PY'
import onnxruntime as ort
print("onnxruntime", ort.__version__, "providers:", ort.get_available_providers())
assert "CUDAExecutionProvider" in ort.get_available_providers(), "onnxruntime-gpu without the CUDA provider"
PY
GPU=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -1)
log "GPU: $GPU"

WORK=$(mktemp -d)
"$VENV/bin/python" - "$WORK" <<'PY'
import json, sys
from pathlib import Path
sys.path.insert(0, "tests/unit/runtime")
import numpy as np
import onnx_models
work = Path(sys.argv[1])
onnx_models.mlp(work / "big.onnx", (2048, 4096, 4096, 1000))
x = np.random.default_rng(0).standard_normal((1, 2048)).astype(np.float32)
header = json.dumps({"inputs": [{"name": "x", "shape": [1, 2048], "datatype": "FP32",
                                 "parameters": {"binary_data_size": x.nbytes}}],
                     "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}).encode()
(work / "body.bin").write_bytes(header + x.tobytes())
(work / "header_len").write_text(str(len(header)))
PY
HLEN=$(cat "$WORK/header_len")

measure() {  # label device max_batch
  local label=$1 device=$2 batch=$3 port=18090
  "$VENV/bin/modelapi-runtime" serve --model-uri "file://$WORK/big.onnx" --name m --port $port --host 127.0.0.1 \
    --device "$device" --max-batch-size "$batch" --max-latency-ms 2 --model-dir "$WORK/cache" \
    --termination-log "$WORK/term" > "$WORK/$label.log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 240); do
    curl -sf "http://127.0.0.1:$port/v2/health/ready" >/dev/null && break
    kill -0 $pid 2>/dev/null || { cat "$WORK/$label.log" >&2; return 1; }
    sleep 0.5
  done
  local info
  info=$(curl -s "http://127.0.0.1:$port/metrics" | grep '^modelapi_model_info' || true)
  local cold
  cold=$(curl -s "http://127.0.0.1:$port/metrics" | grep -E '^modelapi_cold_start_(load|warmup)_seconds' | awk '{print $2}' | paste -sd/ -)
  "$VENV/bin/python" benchmarks/gpu/load.py "http://127.0.0.1:$port/v2/models/m/infer" "$WORK/body.bin" \
    --connections 4 --duration 3 --header-length "$HLEN" >/dev/null  # warm-up
  local r
  r=$("$VENV/bin/python" benchmarks/gpu/load.py "http://127.0.0.1:$port/v2/models/m/infer" "$WORK/body.bin" \
    --connections 16 --duration "$DURATION" --header-length "$HLEN")
  kill -TERM $pid; wait $pid || true
  echo "| $label | $r | $info | load/warm-up s $cold |"
}

{
  echo "### GPU run of $(date -u +'%Y-%m-%d %H:%M UTC')"
  echo
  echo "GPU: $GPU. Model: MLP 2048-4096-4096-1000, binary v2, 16 connections, ${DURATION} s, stdlib closed-loop load generator (benchmarks/gpu/load.py)."
  echo
  echo "| case | result | provider check | cold start |"
  echo "|---|---|---|---|"
  measure "cuda batch-1" cuda 1
  measure "cuda dynamic batching 32/2ms" cuda 32
  measure "cpu batch-1" cpu 1
  measure "cpu dynamic batching 32/2ms" cpu 32
  echo
  # The loud failure: CUDA hidden -> --device cuda must exit non-zero.
  if CUDA_VISIBLE_DEVICES=-1 "$VENV/bin/modelapi-runtime" serve --model-uri "file://$WORK/big.onnx" --device cuda \
      --model-dir "$WORK/cache" --termination-log "$WORK/term2" --port 18091 >/dev/null 2>&1; then
    echo "- FAIL: --device cuda with CUDA hidden did not exit non-zero"
  else
    echo "- --device cuda with CUDA_VISIBLE_DEVICES=-1 exits non-zero: $(cat "$WORK/term2")"
  fi
} | tee "$OUT/gpu-results.md"
