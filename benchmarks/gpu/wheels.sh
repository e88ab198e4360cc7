#!/usr/bin/env bash
# Prepares the wheels benchmarks/gpu/run.sh installs on a device machine without a package registry: modelapi's own
# wheel and `modelapi[gpu]` with onnx, at the versions of constraints.txt (the pins the runtime-gpu image installs),
# for the device's Python. Usage: benchmarks/gpu/wheels.sh [DIR (gpu-wheels)] [PYTHON_VERSION (this python3's)]
set -euo pipefail
cd "$(dirname "$0")/../.."
DIR=${1:-gpu-wheels}
PY=${2:-$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')}
mkdir -p "$DIR"
python3 -m pip wheel -q --no-deps -w "$DIR" .
wheel="$(find "$DIR" -maxdepth 1 -name 'modelapi-*.whl' -printf '%T@ %p\n' | sort -rn | head -1 | cut -d' ' -f2-)"
platforms=()
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux_2_12 manylinux_2_5 manylinux2014 manylinux2010 \
	manylinux1; do platforms+=(--platform "${tag}_x86_64"); done
python3 -m pip download -q -d "$DIR" -c constraints.txt --only-binary=:all: --python-version "$PY" \
	--implementation cp "${platforms[@]}" "${wheel}[gpu]" onnx
du -sh "$DIR"
