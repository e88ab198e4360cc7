# modelapi — every target installs what it needs. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
# cluster-up/cluster-down: kwok (two fake nodes) or real (kubelet + containerd + runc; tests/e2e/cluster/node.sh)
NODE ?= kwok
# the real-node cluster of test-e2e-node has a run directory of its own, so both tiers can be up at once
NODE_CLUSTER_DIR ?= $(CURDIR)/tests/e2e/cluster/.run-node
STAMP := $(VENV)/.installed

.PHONY: help venv lint types layers test test-unit test-e2e crds demo cluster-up cluster-down clean
.PHONY: chart-test demo-down test-e2e-node constraints images test-compat

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 18

$(STAMP): pyproject.toml constraints.txt
	@echo "==> creating $(VENV) and installing modelapi[dev]"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP) ## create the virtualenv and install the project with its dev extras

# every shell file (by extension or shebang) that git tracks, or would, under these folders: the test harness, the
# demo, the benchmarks, CI (not the clusters' run directories: git ignores them, and their image layers hold shell)
SHELL_DIRS := .ci benchmarks scripts tests
SHELL_FILES = git ls-files --cached --others --exclude-standard $(SHELL_DIRS) | xargs $(BIN)/shfmt -f

lint: $(STAMP) ## ruff lint and format check; shellcheck and shfmt on every shell file
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(SHELL_FILES) | xargs $(BIN)/shellcheck
	$(SHELL_FILES) | xargs $(BIN)/shfmt -d

# Every folder of unit tests, each checked in a run of its own: pytest imports a test folder's conftest.py and helper
# modules as top-level modules (no __init__.py), so two folders' conftest.py would be one module twice in one run.
UNIT_TEST_DIRS = $(sort $(dir $(shell find tests/unit -name '*.py')))

# the demo's Python programs (make demo runs them)
TYPED_SCRIPTS := scripts/demo_local.py scripts/demo_steps.py

types: $(STAMP) ## mypy --strict on both packages, on every unit test and on the demo's Python
	$(BIN)/mypy -p modelapi_operator -p modelapi_runtime
	for dir in $(UNIT_TEST_DIRS); do $(BIN)/mypy $$dir*.py || exit 1; done
	$(BIN)/mypy $(TYPED_SCRIPTS)

layers: $(STAMP) ## import-linter contracts (.importlinter)
	$(BIN)/lint-imports

test-unit: $(STAMP) ## unit tests (pure code, no cluster)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

test-e2e: $(STAMP) ## e2e tests on the local cluster (brought up if needed); PYTEST_ARGS=... passes through
	$(BIN)/pytest tests/e2e --ignore=tests/e2e/node $(PYTEST_ARGS)

test-e2e-node: $(STAMP) ## tier B: real pods on a real node (its own cluster in NODE_CLUSTER_DIR, brought up if needed)
	MODELAPI_NODE=real MODELAPI_CLUSTER_DIR=$(NODE_CLUSTER_DIR) $(BIN)/pytest tests/e2e/node $(PYTEST_ARGS)

test: lint types layers test-unit test-e2e test-e2e-node ## everything CI runs

# The oldest Kubernetes minor Chart.yaml's kubeVersion claims: its control plane built from gomod-compat/ (its own
# cache key), a cluster in its own run directory, brought down at the end. Not part of `make test` (a second cold
# control-plane build and a second kwok-tier run); its last run is recorded in tests/e2e/cluster/README.md.
COMPAT_CLUSTER_DIR ?= $(CURDIR)/tests/e2e/cluster/.run-compat
test-compat: $(STAMP) ## the kwok tier on the oldest Kubernetes minor the chart claims (gomod-compat/; PYTEST_ARGS=... passes through)
	MODELAPI_GOMOD_DIR=$(CURDIR)/tests/e2e/cluster/gomod-compat MODELAPI_CLUSTER_DIR=$(COMPAT_CLUSTER_DIR) \
		MODELAPI_KEEP_CLUSTER=$(or $(MODELAPI_KEEP_CLUSTER),0) $(BIN)/pytest tests/e2e --ignore=tests/e2e/node $(PYTEST_ARGS)

crds: $(STAMP) ## regenerate crds/modelapi.yaml from the pydantic API
	$(BIN)/python -m modelapi_operator.crd > crds/modelapi.yaml.tmp
	mv crds/modelapi.yaml.tmp crds/modelapi.yaml
	@echo "wrote crds/modelapi.yaml"

chart-test: $(STAMP) ## the Helm chart: lint, schema, labels, dry-run, install/upgrade/uninstall, the operator under its ServiceAccount, can-i, alerts
	$(BIN)/pytest tests/e2e/test_chart.py tests/e2e/test_chart_alerts.py $(PYTEST_ARGS)

demo: $(STAMP) ## the main job: local cluster, chart, operator, iris uploaded to S3, Ready, a real prediction
	bash scripts/demo.sh

demo-down: ## stop what make demo started (processes by PID, the demo namespace, the chart; the cluster if it started it)
	bash scripts/demo.sh down

cluster-up: ## start the local cluster (etcd, apiserver, kwok, S3, Prometheus; NODE=real: a real node, a registry, the images pushed to it); prints KUBECONFIG=...
	MODELAPI_NODE=$(NODE) $(if $(filter real,$(NODE)),MODELAPI_CLUSTER_DIR=$(NODE_CLUSTER_DIR)) bash tests/e2e/cluster/cluster.sh up

images: ## real-node tier: build the Dockerfile's operator, runtime and runtime-gpu targets (and the pause image) with buildah, no container engine, and push them to the running cluster's registry
	MODELAPI_NODE=real MODELAPI_CLUSTER_DIR=$(NODE_CLUSTER_DIR) bash tests/e2e/cluster/cluster.sh images

cluster-down: ## stop every process cluster-up started (NODE=real: the real-node cluster)
	$(if $(filter real,$(NODE)),MODELAPI_CLUSTER_DIR=$(NODE_CLUSTER_DIR)) bash tests/e2e/cluster/cluster.sh down

constraints: ## re-resolve constraints.txt from pyproject.toml in a scratch venv (then run make test and the benchmarks)
	rm -rf .constraints-venv && $(PYTHON) -m venv .constraints-venv
	.constraints-venv/bin/pip install -q --upgrade pip && .constraints-venv/bin/pip install -q -e '.[dev]'
	{ sed -n '/^#/p' constraints.txt | sed '/CUDA build/,$$d'; .constraints-venv/bin/pip freeze --exclude-editable | grep -vi '^modelapi'; \
	  sed -n '/CUDA build/,$$p' constraints.txt; } > constraints.txt.new && mv constraints.txt.new constraints.txt && rm -rf .constraints-venv
	@echo "wrote constraints.txt (the CUDA section is kept: re-pin onnxruntime-gpu and the nvidia-* wheels of its [cuda,cudnn] extras by hand)"

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
