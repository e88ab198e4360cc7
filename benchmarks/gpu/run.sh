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
#   3. GPU vs CPU on the same load;
#   4. the cold start of a 1 GiB model (COLD_MIB) on CUDA: the artifact's check, session creation, warm-up (first
#      run) and a steady run timed apart, twice in one process (benchmarks/gpu/cold_start.py), then a fresh
#      `modelapi-runtime serve` timed from its start to ready.
# CPU_DRY_RUN=1 runs every step without a GPU (the project's .venv, --device cpu, small models, short loads): the
# check that this script works, made before a device is lent (its output says it is a dry run).
set -euo pipefail
cd "$(dirname "$0")/../.."
WHEELS=${WHEELS:-gpu-wheels}
OUT=${OUT:-$(mktemp -d)}
DRY=${CPU_DRY_RUN:-0}
DURATION=${DURATION:-$([ "$DRY" = 1 ] && echo 2 || echo 20)}
COLD_MIB=${COLD_MIB:-$([ "$DRY" = 1 ] && echo 64 || echo 1024)}
DEV=$([ "$DRY" = 1 ] && echo cpu || echo cuda) # what the "cuda" cases ask for
VENV=$(mktemp -d)/venv
log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if [ "$DRY" = 1 ]; then
	VENV=$PWD/.venv
	log "CPU dry run: $VENV, --device cpu, a ${COLD_MIB} MiB cold-start model, ${DURATION} s loads"
	GPU="none (CPU dry run)"
else
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
fi
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

serve_ready() { # pid port tries interval log: poll the server's readiness (at most tries times); fails, with its log,
	# when it exits first
	local pid=$1 port=$2 tries=$3 interval=$4 logfile=$5
	for _ in $(seq 1 "$tries"); do
		curl -sf "http://127.0.0.1:$port/v2/health/ready" >/dev/null && return 0
		kill -0 "$pid" 2>/dev/null || {
			cat "$logfile" >&2
			return 1
		}
		sleep "$interval"
	done
}

measure() { # label device max_batch
	local label=$1 device=$2 batch=$3 port=18090
	local logfile="$WORK/${label//[^A-Za-z0-9-]/_}.log" # a label may hold a "/" (32/2ms)
	"$VENV/bin/modelapi-runtime" serve --model-uri "file://$WORK/big.onnx" --name m --port $port --host 127.0.0.1 \
		--device "$device" --max-batch-size "$batch" --max-latency-ms 2 --model-dir "$WORK/cache" \
		--termination-log "$WORK/term" >"$logfile" 2>&1 &
	local pid=$!
	serve_ready $pid $port 240 0.5 "$logfile" || return 1
	local info
	info=$(curl -s "http://127.0.0.1:$port/metrics" | grep '^modelapi_model_info' || true)
	local cold
	cold=$(curl -s "http://127.0.0.1:$port/metrics" | grep -E '^modelapi_cold_start_(load|warmup)_seconds' | awk '{print $2}' | paste -sd/ -)
	"$VENV/bin/python" benchmarks/gpu/load.py "http://127.0.0.1:$port/v2/models/m/infer" "$WORK/body.bin" \
		--connections 4 --duration 3 --header-length "$HLEN" >/dev/null # warm-up
	local r
	r=$("$VENV/bin/python" benchmarks/gpu/load.py "http://127.0.0.1:$port/v2/models/m/infer" "$WORK/body.bin" \
		--connections 16 --duration "$DURATION" --header-length "$HLEN")
	kill -TERM $pid
	wait $pid || true
	echo "| $label | $r | $info | load/warm-up s $cold |"
}

cold_serve() { # model device: a fresh `serve` process from its start to ready, with its own cold-start gauges
	local model=$1 device=$2 port=18092 started pid ready gauges
	started=$(date +%s.%N)
	"$VENV/bin/modelapi-runtime" serve --model-uri "file://$model" --name cold --port $port --host 127.0.0.1 \
		--device "$device" --model-dir "$WORK/cold-serve" --termination-log "$WORK/term3" >"$WORK/cold-serve.log" 2>&1 &
	pid=$!
	serve_ready $pid $port 1200 0.1 "$WORK/cold-serve.log" || return 1
	ready=$(date +%s.%N)
	gauges=$(curl -s "http://127.0.0.1:$port/metrics" | grep -E '^modelapi_(cold_start_[a-z]+_seconds|model_info)' |
		sed -E 's/^(modelapi_model_info)\{.*(device="[a-z]+").*\}/\1{\2}/; s/^(modelapi_cold_start_[a-z_]+)\{[^}]*\}/\1/' |
		tr '\n' ' ')
	kill -TERM $pid
	wait $pid || true
	echo "- a fresh \`modelapi-runtime serve --device $device\` on it: ready $(awk "BEGIN { printf \"%.2f\", $ready - $started }") s after" \
		"its start (imports and server included; polled every 0.1 s); its gauges: $gauges"
}

{
	if [ "$DRY" = 1 ]; then
		echo "**CPU dry run (CPU_DRY_RUN=1): no GPU, every \"cuda\" case ran on the CPU.**"
		echo
	fi
	echo "### GPU run of $(date -u +'%Y-%m-%d %H:%M UTC')"
	echo
	echo "GPU: $GPU. Model: MLP 2048-4096-4096-1000, binary v2, 16 connections, ${DURATION} s, stdlib closed-loop load generator (benchmarks/gpu/load.py)."
	echo
	echo "| case | result | provider check | cold start |"
	echo "|---|---|---|---|"
	measure "cuda batch-1" "$DEV" 1
	measure "cuda dynamic batching 32/2ms" "$DEV" 32
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
	echo
	echo "### Cold start of a ${COLD_MIB} MiB model on $DEV"
	echo
	"$VENV/bin/python" benchmarks/gpu/cold_start.py --mib "$COLD_MIB" --device "$DEV" --workdir "$WORK/cold"
	echo
	cold_serve "$WORK/cold/cold-$COLD_MIB.onnx" "$DEV"
} | tee "$OUT/gpu-results.md"
