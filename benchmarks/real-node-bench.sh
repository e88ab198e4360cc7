# shellcheck shell=bash
# What the real-node benchmarks' run.sh share, sourced by them: the real-node cluster's env (MODELAPI_NODE=real, its
# own run directory), the machine, commit, load and versions printed before the run, the whole pip freeze next to the
# figures, and the bench itself inside the machine's real-node lock, the cluster brought down inside that lock.

# real_node_bench NAME BENCH_FILE PACKAGES [pytest args...]: NAME names the default figures file
# (/tmp/modelapi-NAME-bench-<time>.json, MODELAPI_BENCH_JSON overrides it); PACKAGES is a regex of the package names
# whose versions are printed
real_node_bench() {
	local name="$1" bench="$2" packages="$3" root
	shift 3
	root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
	cd "$root" || return
	export MODELAPI_NODE=real
	export MODELAPI_CLUSTER_DIR=${MODELAPI_CLUSTER_DIR:-$root/tests/e2e/cluster/.run-node}
	export MODELAPI_BENCH_JSON=${MODELAPI_BENCH_JSON:-/tmp/modelapi-$name-bench-$(date -u +%Y%m%dT%H%M%SZ).json}
	make -s venv

	echo "==> machine: $(nproc) CPUs, $(free -g | awk '/^Mem:/ {print $2}') GiB, $(uname -sr), $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "==> disk free under /tmp: $(df -h --output=avail /tmp | tail -1 | tr -d ' ')"
	echo "==> commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo ' (with uncommitted changes)')"
	echo "==> load average (1, 5, 15 min) before: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "==> versions: $(.venv/bin/python --version 2>&1); $(.venv/bin/pip freeze 2>/dev/null |
		grep -iE "^($packages)==" | tr '\n' ' ')"
	# the whole environment next to the figures (the runtime image installs the same constraints.txt pins)
	.venv/bin/pip freeze --all >"${MODELAPI_BENCH_JSON%.json}.pip-freeze.txt"
	echo "==> pip freeze: ${MODELAPI_BENCH_JSON%.json}.pip-freeze.txt"

	local status=0
	# shellcheck disable=SC2016 # expanded by the inner shell
	flock /tmp/modelapi-real-node.lock bash -c '
		status=0
		.venv/bin/pytest "$0" -o python_files="bench_*.py" -p no:cacheprovider -s -v "$@" || status=$?
		bash tests/e2e/cluster/cluster.sh down || true
		exit $status
	' "$bench" "$@" || status=$?
	echo "==> load average (1, 5, 15 min) after: $(cut -d' ' -f1-3 /proc/loadavg)"
	return $status
}
