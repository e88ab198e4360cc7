#!/usr/bin/env bash
# make demo: from a fresh machine to a real prediction through a ModelAPI, one step at a time.
#
# Two modes, chosen by MODELAPI_DEMO_NODE (auto, the default: real when this machine can run a real node, else
# kwok), and printed at the start and the end:
#   real  the cluster has a real node (kubelet + containerd + runc, tests/e2e/cluster/node.sh) and a local OCI
#         registry holding the images built from our Dockerfile: the chart is packaged, pushed to that registry and
#         installed from it (helm install oci://...); the operator runs as the chart's pod under its ServiceAccount,
#         the model in a real pod, every image pulled from the registry; predictions go through the Service's ClusterIP
#   kwok  the cluster has fake (kwok) nodes: the model's pod runs nothing, so step 6 runs the runtime as a local
#         process with exactly the args and env of the pod template the operator created
#
#   1. the local cluster (tests/e2e/cluster/cluster.sh up: kube-apiserver, controller-manager, scheduler, kwok
#      or a real node, versitygw S3, Prometheus)
#   2. the Helm chart (CRD, operator Deployment, ServiceAccount, RBAC); real: packaged, pushed, installed from the registry
#   3. real: the operator's pod; kwok: the operator as a local process with the chart's ServiceAccount token
#   4. the iris model built and uploaded to the local S3; the s3-creds Secret
#   5. examples/iris/model.yaml applied (storage.endpoint pointed at the local S3), waited for Ready
#   6. real: the pod the operator's Deployment made; kwok: the runtime as a local process
#   7. a prediction, KServe v1 and Open Inference Protocol v2
#
# `make demo-down` (scripts/demo.sh down) stops what this started.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON_BIN:-$ROOT/.venv/bin/python}
DEMO_DIR=${MODELAPI_DEMO_DIR:-$ROOT/.work/demo}
DEMO_NS=${MODELAPI_DEMO_NAMESPACE:-demo}
RELEASE=modelapi
RELEASE_NS=modelapi-system
SA=modelapi-operator
# the harness's libraries: log and die, process supervision (the local operator and runtime: PID files and logs in
# the demo dir), kubeconfigs
LOG_TAG=demo
# shellcheck source=SCRIPTDIR/../tests/e2e/cluster/lib/log.sh
source tests/e2e/cluster/lib/log.sh
# shellcheck source=SCRIPTDIR/../tests/e2e/cluster/lib/proc.sh
source tests/e2e/cluster/lib/proc.sh
# shellcheck source=SCRIPTDIR/../tests/e2e/cluster/lib/pki.sh
source tests/e2e/cluster/lib/pki.sh
PROC_DIR=$DEMO_DIR PROC_LOG_DIR=$DEMO_DIR

step=0
say() {
	step=$((step + 1))
	printf '\n\033[1m==> [%d] %s\033[0m\n' "$step" "$*"
}
note() { printf '    %s\n' "$*"; }

MODE=${MODELAPI_DEMO_NODE:-auto}
if [[ -f $DEMO_DIR/mode ]]; then
	MODE=$(cat "$DEMO_DIR/mode") # demo-down and a rerun keep the mode of the run
elif [[ $MODE == auto && -n ${MODELAPI_CLUSTER_DIR:-} && -f $MODELAPI_CLUSTER_DIR/env ]]; then
	MODE=$(sed -n 's/^MODELAPI_NODE=//p' "$MODELAPI_CLUSTER_DIR/env") # the running cluster's own mode
	MODE=${MODE:-kwok}
elif [[ $MODE == auto ]]; then
	# the harness's own check (root, br_netfilter, overlayfs, containerd or apt-get); it prints why not
	if why=$(bash tests/e2e/cluster/cluster.sh preflight); then
		MODE=real
	else
		MODE=kwok MODE_WHY=$why
	fi
fi
[[ $MODE == real || $MODE == kwok ]] || die "MODELAPI_DEMO_NODE must be auto, real or kwok, not '$MODE'"
if [[ $MODE == real ]]; then
	CLUSTER_DIR=${MODELAPI_CLUSTER_DIR:-$ROOT/tests/e2e/cluster/.run-node}
else
	CLUSTER_DIR=${MODELAPI_CLUSTER_DIR:-$ROOT/tests/e2e/cluster/.run}
fi
export MODELAPI_CLUSTER_DIR=$CLUSTER_DIR MODELAPI_NODE=$MODE

wait_not_terminating() { # a namespace left by a previous demo-down may still be finalizing
	local ns=$1
	if [[ -n $(kubectl get namespace "$ns" -o jsonpath='{.metadata.deletionTimestamp}' 2>/dev/null) ]]; then
		note "namespace $ns is still being deleted (previous demo-down): waiting"
		kubectl wait --for=delete "namespace/$ns" --timeout=180s >/dev/null
	fi
}

stop_local_processes() { # the operator and the runtime the kwok mode runs on this machine (each waited for)
	local name
	for name in runtime operator; do
		proc_stop "$name"
		rm -f "$DEMO_DIR/$name.pid" "$DEMO_DIR/$name.start"
	done
}

down() {
	printf '==> demo-down: stopping what make demo started\n'
	stop_local_processes
	if [[ -f $CLUSTER_DIR/env ]] && bash tests/e2e/cluster/cluster.sh status >/dev/null 2>&1; then
		# shellcheck disable=SC1091
		source "$CLUSTER_DIR/env"
		export KUBECONFIG
		kubectl delete namespace "$DEMO_NS" --ignore-not-found --wait=false >/dev/null || true
		"$HELM" uninstall "$RELEASE" -n "$RELEASE_NS" >/dev/null 2>&1 || true
		kubectl delete namespace "$RELEASE_NS" --ignore-not-found --wait=false >/dev/null || true
		if [[ -f $DEMO_DIR/cluster-started ]]; then
			bash tests/e2e/cluster/cluster.sh down
		else
			note "the cluster was running before make demo: left running (make cluster-down stops it)"
		fi
	fi
	rm -rf "$DEMO_DIR"
	printf '==> demo-down: done\n'
}

if [[ ${1:-} == down ]]; then
	down
	exit 0
fi

mkdir -p "$DEMO_DIR"
echo "$MODE" >"$DEMO_DIR/mode"
if [[ $MODE == real ]]; then
	printf '==> mode: real node (kubelet + containerd + runc; cluster dir %s)\n' "$CLUSTER_DIR"
else
	printf '==> mode: kwok nodes%s (cluster dir %s)\n' "${MODE_WHY:+ (no real node: $MODE_WHY)}" "$CLUSTER_DIR"
fi
stop_local_processes # a previous demo's, if any

# ---------------------------------------------------------------------------------------------------------------------
say "local cluster: bash tests/e2e/cluster/cluster.sh up (first run builds Kubernetes from source: tens of minutes)"
if bash tests/e2e/cluster/cluster.sh status >/dev/null 2>&1; then
	note "already running ($CLUSTER_DIR)"
else
	bash tests/e2e/cluster/cluster.sh up
	touch "$DEMO_DIR/cluster-started"
fi
set -a # every KEY=VALUE of the env file, exported (S3 endpoint and credentials, KUBECONFIG, HELM)
# shellcheck disable=SC1091
source "$CLUSTER_DIR/env"
set +a
kubectl get nodes

# ---------------------------------------------------------------------------------------------------------------------
if [[ $MODE == real ]]; then
	CHART_VERSION=$(sed -n 's/^version: *//p' charts/modelapi/Chart.yaml)
	CHART_REF=oci://$NODE_REGISTRY/charts/modelapi
	say "Helm chart: helm package, helm push to the cluster's registry, helm install $CHART_REF --version $CHART_VERSION"
	rm -rf "$DEMO_DIR/chart" && mkdir -p "$DEMO_DIR/chart"
	"$HELM" package charts/modelapi -d "$DEMO_DIR/chart" | sed 's/^/    /'
	# the harness's registry speaks plain HTTP (it listens on the node's bridge address only)
	"$HELM" push "$DEMO_DIR/chart/modelapi-$CHART_VERSION.tgz" "oci://$NODE_REGISTRY/charts" --plain-http 2>&1 | sed 's/^/    /'
	wait_not_terminating "$RELEASE_NS"
	# the runtime-gpu image too, when the cluster's registry has it (cluster.sh images builds it): a GPU ModelAPI's
	# pod then pulls it from there (it stays Pending without a GPU on the node, but its image is a real one)
	GPU_IMAGE_VALUES=()
	if [[ -n ${NODE_RUNTIME_GPU_IMAGE:-} ]]; then GPU_IMAGE_VALUES=(--set runtimeImages.gpu="$NODE_RUNTIME_GPU_IMAGE"); fi
	"$HELM" upgrade --install "$RELEASE" "$CHART_REF" --version "$CHART_VERSION" --plain-http -n "$RELEASE_NS" \
		--create-namespace --set serviceAccount.name="$SA" --set resyncSeconds=10 \
		--set image.repository="${NODE_OPERATOR_IMAGE%:*}" --set image.tag="${NODE_OPERATOR_IMAGE##*:}" \
		--set runtimeImages.cpu="$NODE_RUNTIME_IMAGE" "${GPU_IMAGE_VALUES[@]}" --wait --timeout 300s >/dev/null
	kubectl -n "$RELEASE_NS" get deployment,serviceaccount -l app.kubernetes.io/instance="$RELEASE"

	# -----------------------------------------------------------------------------------------------------------------
	say "operator: the chart's pod, as ServiceAccount $RELEASE_NS/$SA, reaching the API server through the kubernetes Service"
	OPERATOR_PODS=(-n "$RELEASE_NS" get pod -l "app.kubernetes.io/instance=$RELEASE,app.kubernetes.io/name=modelapi-operator")
	kubectl "${OPERATOR_PODS[@]}" -o wide
	kubectl "${OPERATOR_PODS[@]}" -o jsonpath='{range .items[*]}    {.metadata.name}: serviceAccount {.spec.serviceAccountName}, pulled {.status.containerStatuses[0].imageID}{"\n"}{end}'
	note "Service default/kubernetes $(kubectl -n default get service kubernetes -o jsonpath='{.spec.clusterIP}'):443 -> endpoint $(kubectl -n default get endpoints kubernetes -o jsonpath='{.subsets[0].addresses[0].ip}:{.subsets[0].ports[0].port}') (the API server)"
else
	say "Helm chart: helm upgrade --install $RELEASE charts/modelapi -n $RELEASE_NS"
	wait_not_terminating "$RELEASE_NS"
	"$HELM" upgrade --install "$RELEASE" charts/modelapi -n "$RELEASE_NS" --create-namespace \
		--set serviceAccount.name="$SA" --set resyncSeconds=10 --wait --timeout 120s >/dev/null
	kubectl -n "$RELEASE_NS" get deployment,serviceaccount -l app.kubernetes.io/instance="$RELEASE"
	note "the operator's pod is scheduled on a kwok node, where nothing really runs: the next step runs the operator"

	# -----------------------------------------------------------------------------------------------------------------
	say "operator: a local process with the chart Deployment's args and env, as ServiceAccount $RELEASE_NS/$SA (not admin)"
	TOKEN=$(kubectl -n "$RELEASE_NS" create token "$SA" --duration=24h)
	pki_kubeconfig "$DEMO_DIR/operator.kubeconfig" "$KUBE_APISERVER_URL" "$KUBE_CA_FILE" "$SA" "$TOKEN"
	OPERATOR_DEPLOYMENT=$(kubectl -n "$RELEASE_NS" get deployment -l app.kubernetes.io/instance="$RELEASE",app.kubernetes.io/name=modelapi-operator -o name)
	kubectl -n "$RELEASE_NS" get "$OPERATOR_DEPLOYMENT" -o json >"$DEMO_DIR/operator-deployment.json"
	OPERATOR_PORT=$(free_ports 1)
	proc_start operator "$PY" scripts/demo_local.py operator --deployment "$DEMO_DIR/operator-deployment.json" \
		--kubeconfig "$DEMO_DIR/operator.kubeconfig" --port "$OPERATOR_PORT"
	proc_wait_for operator 60 curl -fsS "http://127.0.0.1:$OPERATOR_PORT/healthz"
	grep -E '^    (command|substituted|env MODELAPI)' "$DEMO_DIR/operator.log" || true
	note "operator log: $DEMO_DIR/operator.log"
fi

# ---------------------------------------------------------------------------------------------------------------------
say "model: python examples/iris/build_model.py, uploaded to s3://$S3_BUCKET/iris/1/model.onnx on the local S3"
"$PY" examples/iris/build_model.py "$DEMO_DIR/model.onnx"
"$PY" scripts/demo_steps.py upload-model "$DEMO_DIR/model.onnx" iris/1/model.onnx

say "namespace $DEMO_NS and Secret s3-creds (the local S3's credentials)"
wait_not_terminating "$DEMO_NS"
kubectl create namespace "$DEMO_NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl -n "$DEMO_NS" create secret generic s3-creds \
	--from-literal=AWS_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID" \
	--from-literal=AWS_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY" \
	--dry-run=client -o yaml | kubectl apply -f - >/dev/null
note "secret/s3-creds applied"

# ---------------------------------------------------------------------------------------------------------------------
MODEL_S3=$S3_ENDPOINT_URL
if [[ $MODE == real ]]; then MODEL_S3=$NODE_S3_ENDPOINT_URL; fi # the same bucket, on the address pods reach
say "kubectl apply examples/iris/model.yaml (spec.storage.endpoint -> $MODEL_S3, the local S3)"
"$PY" scripts/demo_steps.py point-storage examples/iris/model.yaml "$MODEL_S3" >"$DEMO_DIR/iris.yaml"
kubectl -n "$DEMO_NS" apply -f "$DEMO_DIR/iris.yaml"
kubectl -n "$DEMO_NS" wait --for=condition=Ready modelapi/iris --timeout=180s
printf '\n'
kubectl -n "$DEMO_NS" get mapi
printf '\n'
kubectl -n "$DEMO_NS" get deployment,service,hpa,pdb,pod -l serving.modelapi.io/name=iris

if [[ $MODE == real ]]; then
	say "runtime: the real pod of the operator's Deployment (image $NODE_RUNTIME_IMAGE, built from our Dockerfile)"
	kubectl -n "$DEMO_NS" get pod -l serving.modelapi.io/name=iris -o wide
	kubectl -n "$DEMO_NS" get pod -l serving.modelapi.io/name=iris \
		-o jsonpath='{range .items[*]}    {.metadata.name}: pulled {.status.containerStatuses[0].imageID}{"\n"}{end}'
	CLUSTER_IP=$(kubectl -n "$DEMO_NS" get service iris -o jsonpath='{.spec.clusterIP}')
	BASE="http://$CLUSTER_IP"
	note "Service iris: $BASE (ClusterIP, through kube-proxy's iptables rules)"
	# the EndpointSlice reaches kube-proxy a moment after the pod is ready
	wait_for_url "$BASE/v2/health/ready" 20 || note "not ready through the Service after 20 s: trying anyway"
else
	# -----------------------------------------------------------------------------------------------------------------
	say "runtime: a local process with exactly the args and env of the pod template the operator created"
	note "no container runs on the kwok nodes, so the runtime runs on this machine (MODELAPI_DEMO_NODE=real: a real pod)"
	REVISION=$(kubectl -n "$DEMO_NS" get modelapi iris -o jsonpath='{.status.revisions[0].name}')
	kubectl -n "$DEMO_NS" get deployment "$REVISION" -o json >"$DEMO_DIR/runtime-deployment.json"
	( # the Secret's values: readable by this user only, from the start
		umask 077
		kubectl -n "$DEMO_NS" get secret s3-creds -o json | "$PY" scripts/demo_steps.py decode-secret >"$DEMO_DIR/secrets.json"
	)
	RUNTIME_PORT=$(free_ports 1)
	proc_start runtime "$PY" scripts/demo_local.py runtime --deployment "$DEMO_DIR/runtime-deployment.json" \
		--secrets "$DEMO_DIR/secrets.json" --workdir "$DEMO_DIR/pod" --port "$RUNTIME_PORT"
	note "deployment/$REVISION, container runtime:"
	proc_wait_for runtime 60 curl -fsS "http://127.0.0.1:$RUNTIME_PORT/v2/health/ready"
	grep -E '^    (command|env|substituted)' "$DEMO_DIR/runtime.log" || true
	note "ready on http://127.0.0.1:$RUNTIME_PORT (log: $DEMO_DIR/runtime.log)"
	BASE="http://127.0.0.1:$RUNTIME_PORT"
fi

# ---------------------------------------------------------------------------------------------------------------------
say "prediction: KServe v1 POST /v1/models/iris:predict"
V1='{"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}'
note "request:  $V1"
printf '    response: '
curl -fsS -H 'Content-Type: application/json' -d "$V1" "$BASE/v1/models/iris:predict"
printf '\n'

say "prediction: Open Inference Protocol v2 POST /v2/models/iris/infer"
V2='{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.9, 3.0, 4.2, 1.5]}]}'
note "request:  $V2"
printf '    response: '
curl -fsS -H 'Content-Type: application/json' -d "$V2" "$BASE/v2/models/iris/infer"
printf '\n'

# The hint below is run here first, in a shell that has none of this script's variables, so it is known to work.
RESOURCES=$([[ $MODE == real ]] && echo mapi,pod || echo mapi)
HINT="set -a; source $CLUSTER_DIR/env; set +a; kubectl -n $DEMO_NS get $RESOURCES"
env -u KUBECONFIG -u HELM bash -c "$HINT" >/dev/null || die "the closing hint does not work: $HINT"
if [[ $MODE == real ]]; then
	printf '\n\033[1m==> done (mode: real node).\033[0m The operator and the model run in pods, every image pulled from the\n'
	printf '    registry %s. curl %s/metrics shows the runtime metrics. Then:\n      %s\n' "$NODE_REGISTRY" "$BASE" "$HINT"
else
	printf '\n\033[1m==> done (mode: kwok nodes).\033[0m The operator and the runtime keep running as local processes (PIDs in %s);\n' "$DEMO_DIR"
	printf '    curl %s/metrics shows the runtime metrics. Then:\n      %s\n' "$BASE" "$HINT"
fi
printf '    make demo-down stops them, removes the demo namespace and the chart (and the cluster if make demo started it).\n'
