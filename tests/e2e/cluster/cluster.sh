#!/usr/bin/env bash
# Local Kubernetes for the e2e tests and the demo, without a container engine:
#   etcd (Debian) -> kube-apiserver -> kube-controller-manager -> kube-scheduler (built from the Go modules pinned
#   in gomod/) -> kwok with two fake nodes -> CRDs (ours, Gateway API, ServiceMonitor) -> versitygw (S3) -> Prometheus
#   (built from gomod-metrics/, metrics.sh). With MODELAPI_NODE=real, a real node instead of the fake ones:
#   containerd, kubelet, kube-proxy and a Gateway API data plane (node.sh, gateway.sh), then CoreDNS, metrics-server and prometheus-adapter (metrics.sh).
#
#   cluster.sh build   build (or find in the cache) every binary; prints the bin directory, then the metrics pipeline's
#                      (Prometheus, promtool; MODELAPI_NODE=real: also metrics-server, prometheus-adapter, CoreDNS) on
#                      a second line (MODELAPI_NODE=real: also the node's: kubelet, kube-proxy, crictl; a third line;
#                      the registry's, a fourth; the gateway's (Traefik, gateway.sh), a fifth; and it builds the
#                      images `images` pushes)
#   cluster.sh build-otel  build (or find in the cache) the OpenTelemetry Collector of the tracing tests (otel.sh);
#                      prints its bin directory
#   cluster.sh images [TARGET...]  MODELAPI_NODE=real: build the images (pause; Dockerfile targets runtime,
#                      operator, runtime-gpu; or only the targets named) and push them to the running cluster's
#                      registry (`up` does it too; this is for a rebuild while up, or for runtime-gpu after an `up`
#                      with MODELAPI_NODE_GPU_IMAGE=0, which leaves that image out)
#   cluster.sh up      start everything; a no-op when already up; the last line printed is KUBECONFIG=<path>
#   cluster.sh down    stop every process `up` started (by saved PID), wait until each has exited, remove the run state
#   cluster.sh status  exit 0 when the cluster is up and healthy
#   cluster.sh preflight  exit 0 when this machine can run a real node, else say why (for make demo's choice)
#   cluster.sh env     print the env file
#   cluster.sh logs [N] print the last N lines (default 60) of every component's log
#   cluster.sh restart NAME [DOWN_S]  stop one component (etcd, kube-apiserver, ...) and start it again with the same
#                      command line, ports and data after DOWN_S seconds (default 0); waits until healthy (fault tests)
#
# Everything binds to 127.0.0.1 on free ports (with MODELAPI_NODE=real the apiserver binds the node's bridge address
# instead, so that pods reach it too). Ports and credentials go to one env file: $RUN_DIR/env.
# Environment knobs: MODELAPI_CACHE (binary cache root, default ~/.cache/modelapi), MODELAPI_CLUSTER_DIR (run state,
# default tests/e2e/cluster/.run), MODELAPI_NODE (kwok, the default: two fake nodes; real: one real node, see
# node.sh), MODELAPI_NODE_GPU_IMAGE (real: 0 leaves the runtime-gpu image out of `build` and `up`; the e2e tests set
# it), GOCACHE / GOMODCACHE as usual for Go.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../../.." && pwd)"
# MODELAPI_GOMOD_DIR: another wrapper module, another Kubernetes version (make test-compat: gomod-compat/, the oldest
# minor the chart claims); its binaries get a cache directory of their own (the key hashes go.mod and go.sum)
GOMOD_DIR="${MODELAPI_GOMOD_DIR:-$HERE/gomod}"

# ---- pinned versions (the Kubernetes version is the one gomod/go.mod requires) ----------------------------------
K8S_VERSION="$(awk '$1=="require" && $2=="k8s.io/kubernetes" {print $3} $1=="k8s.io/kubernetes" && $2 ~ /^v1\./ {print $2}' "$GOMOD_DIR/go.mod" | head -1)"
KWOK_VERSION=v0.7.0
HELM_VERSION=v3.22.0
VERSITYGW_VERSION=v1.8.0
GATEWAY_API_VERSION=v1.4.0
PROM_OPERATOR_VERSION=v0.85.0

CACHE_ROOT="${MODELAPI_CACHE:-$HOME/.cache/modelapi}"
RUN_DIR="${MODELAPI_CLUSTER_DIR:-$HERE/.run}"
S3_BUCKET=models
S3_ACCESS_KEY=modelapi
S3_SECRET_KEY=modelapi-secret-key
S3_REGION=us-east-1
NODE_MODE="${MODELAPI_NODE:-kwok}"
SERVICE_CIDR=10.0.0.0/16

# the harness's libraries: log lines, process supervision, cached Go builds, certificates (node.sh adds networking)
LOG_TAG=cluster
# shellcheck source=SCRIPTDIR/lib/log.sh
source "$HERE/lib/log.sh"
# shellcheck source=SCRIPTDIR/lib/proc.sh
source "$HERE/lib/proc.sh"
# shellcheck source=SCRIPTDIR/lib/build.sh
source "$HERE/lib/build.sh"
# shellcheck source=SCRIPTDIR/lib/pki.sh
source "$HERE/lib/pki.sh"
# every component's PID file (and the start order) and log
PROC_DIR="$RUN_DIR/pids" PROC_LOG_DIR="$RUN_DIR/logs"

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false # the same binaries whatever the caller's GOFLAGS
GO_VERSION="$(go env GOVERSION 2>/dev/null || echo none)"
BIN_DIR="$(cache_bin_dir "" "k8s=$K8S_VERSION kwok=$KWOK_VERSION helm=$HELM_VERSION versitygw=$VERSITYGW_VERSION go=$GO_VERSION" \
	"$GOMOD_DIR/go.mod" "$GOMOD_DIR/go.sum")"
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kwok helm versitygw)
# shellcheck source=SCRIPTDIR/node.sh
source "$HERE/node.sh"
# shellcheck source=SCRIPTDIR/metrics.sh
source "$HERE/metrics.sh"
# shellcheck source=SCRIPTDIR/otel.sh
source "$HERE/otel.sh"

# ---- build --------------------------------------------------------------------------------------------------------
control_plane_builder() { # stage missing...: the control plane, kwok, helm and versitygw (cached_build's builder)
	local stage="$1"
	shift
	if one_of kube-apiserver "$@" || one_of kube-controller-manager "$@" || one_of kube-scheduler "$@"; then
		build_k8s "$stage" "$GOMOD_DIR" kube-apiserver kube-controller-manager kube-scheduler
	fi
	if one_of kwok "$@"; then
		go_install kwok sigs.k8s.io/kwok/cmd/kwok "$KWOK_VERSION" \
			"-X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v} -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=${K8S_VERSION#v}" "$stage"
	fi
	if one_of helm "$@"; then
		go_install helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION" \
			"-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean" "$stage"
	fi
	if one_of versitygw "$@"; then
		go_install versitygw github.com/versity/versitygw/cmd/versitygw "$VERSITYGW_VERSION" \
			"-X main.Version=$VERSITYGW_VERSION -X main.Build=module -X main.BuildTime=$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$stage"
	fi
}

build() { cached_build "$BIN_DIR" control_plane_builder "${BINARIES[@]}"; }

# ---- third-party CRDs, taken from the Go module zips ----------------------------------------------------------------
CRD_CACHE="$CACHE_ROOT/crds/gateway-api-$GATEWAY_API_VERSION+prometheus-operator-$PROM_OPERATOR_VERSION"
fetch_crds() {
	[[ -f "$CRD_CACHE/.complete" ]] && return
	log "fetching Gateway API $GATEWAY_API_VERSION and prometheus-operator $PROM_OPERATOR_VERSION CRDs (go mod download)"
	local tmp dir
	tmp="$(mktemp -d)"
	dir="$(cd "$tmp" && GOFLAGS=-mod=mod go mod download -json "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" |
		python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
	mkdir -p "$CRD_CACHE/gateway-api" "$CRD_CACHE/prometheus-operator"
	cp "$dir"/config/crd/standard/*.yaml "$CRD_CACHE/gateway-api/"
	dir="$(cd "$tmp" && GOFLAGS=-mod=mod go mod download -json "github.com/prometheus-operator/prometheus-operator@$PROM_OPERATOR_VERSION" |
		python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
	cp "$dir"/example/prometheus-operator-crd/monitoring.coreos.com_{servicemonitors,podmonitors,prometheusrules}.yaml \
		"$CRD_CACHE/prometheus-operator/"
	rm -rf "$tmp"
	touch "$CRD_CACHE/.complete"
}

# ---- system packages ------------------------------------------------------------------------------------------------
CONTROL_PLANE_PACKAGES=(etcd-server:etcd openssl:openssl curl:curl util-linux:flock python3:python3)
ensure_packages() { # PACKAGE:COMMAND ... (or PACKAGE:/a/path it installs): apt-get install the missing ones
	local need=() item
	for item in "$@"; do
		if [[ ${item#*:} == /* ]]; then
			[[ -e ${item#*:} ]] || need+=("${item%%:*}")
		else
			command -v "${item#*:}" >/dev/null || need+=("${item%%:*}")
		fi
	done
	((${#need[@]} == 0)) && return
	log "installing Debian packages: ${need[*]}"
	[[ $(id -u) == 0 ]] || die "need root to apt-get install ${need[*]}"
	apt-get update -qq >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
}

# ---- certificates, tokens, kubeconfigs -------------------------------------------------------------------------------
make_pki() {
	local pki="$RUN_DIR/pki"
	pki_ca "$pki" modelapi-e2e-ca
	pki_cert "$pki" apiserver /CN=kube-apiserver \
		"subjectAltName=IP:127.0.0.1,IP:$NODE_IP,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
extendedKeyUsage=serverAuth"
	# front-proxy (request-header) client: without it the controller-manager and scheduler log an error every minute
	pki_cert "$pki" front-proxy-client /CN=front-proxy-client extendedKeyUsage=clientAuth
	# the apiserver's client certificate towards kubelets (logs, exec); kubelets trust this CA's certificates
	pki_cert "$pki" kubelet-client /O=system:masters/CN=kube-apiserver-kubelet-client extendedKeyUsage=clientAuth
	pki_keypair "$pki" sa
	local admin kcm sched node proxy
	admin="$(pki_token)" kcm="$(pki_token)" sched="$(pki_token)" node="$(pki_token)" proxy="$(pki_token)"
	{
		echo "$admin,admin,uid-admin,\"system:masters\""
		echo "$kcm,system:kube-controller-manager,uid-kcm"
		echo "$sched,system:kube-scheduler,uid-scheduler"
		# a real node's kubelet (the Node authorizer and NodeRestriction know it by this name and group)
		echo "$node,system:node:$NODE_NAME,uid-node,\"system:nodes\""
		echo "$proxy,system:kube-proxy,uid-kube-proxy"
	} >"$pki/tokens.csv"
	chmod 600 "$pki/tokens.csv"
	kubeconfig "$RUN_DIR/kubeconfig" admin "$admin"
	kubeconfig "$RUN_DIR/kube-controller-manager.kubeconfig" system:kube-controller-manager "$kcm"
	kubeconfig "$RUN_DIR/kube-scheduler.kubeconfig" system:kube-scheduler "$sched"
	kubeconfig "$RUN_DIR/kubelet.kubeconfig" "system:node:$NODE_NAME" "$node"
	kubeconfig "$RUN_DIR/kube-proxy.kubeconfig" system:kube-proxy "$proxy"
	echo "$admin" >"$pki/admin.token"
}

kubeconfig() { pki_kubeconfig "$1" "https://$API_HOST:$APISERVER_PORT" "$RUN_DIR/pki/ca.crt" "$2" "$3"; } # path user token

# ---- the cluster ------------------------------------------------------------------------------------------------------
healthy() {
	[[ -f "$RUN_DIR/env" ]] || return 1
	local n
	while read -r n; do proc_alive "$n" || return 1; done <"$RUN_DIR/pids/order"
	# shellcheck disable=SC1091
	(
		source "$RUN_DIR/env"
		curl -sf --max-time 3 --cacert "$KUBE_CA_FILE" -H "Authorization: Bearer $KUBE_TOKEN" "$KUBE_APISERVER_URL/readyz" >/dev/null &&
			curl -sf --max-time 3 "$PROMETHEUS_URL/-/ready" >/dev/null &&
			curl -s --max-time 3 -o /dev/null "$S3_ENDPOINT_URL"
	)
}

KUBECTL_BIN=""
kctl() { "$KUBECTL_BIN" --kubeconfig "$RUN_DIR/kubeconfig" "$@"; }

fake_nodes() {
	local name gpu
	for name in kwok-cpu-0 kwok-gpu-0; do
		gpu=""
		[[ $name == *gpu* ]] && gpu='nvidia.com/gpu: "2"'
		# 1Ti of ephemeral storage: every model pod requests its cache volume's size limit (5.5Gi by default), and the
		# fault tests run 40 ModelAPIs and their canaries on these two nodes
		cat <<NODE
---
apiVersion: v1
kind: Node
metadata:
  name: $name
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    type: kwok
    kubernetes.io/arch: amd64
    kubernetes.io/os: linux
    kubernetes.io/hostname: $name
    node-role.kubernetes.io/agent: ""
$([[ -n $gpu ]] && printf '    nvidia.com/gpu.present: "true"\n    nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3\n')
status:
  allocatable: {cpu: "16", memory: 64Gi, pods: "110", ephemeral-storage: 1Ti $([[ -n $gpu ]] && echo ", $gpu")}
  capacity: {cpu: "16", memory: 64Gi, pods: "110", ephemeral-storage: 1Ti $([[ -n $gpu ]] && echo ", $gpu")}
  nodeInfo: {architecture: amd64, operatingSystem: linux, kubeletVersion: fake, kubeProxyVersion: fake}
NODE
	done
}

# ---- up: one step after another ------------------------------------------------------------------------------------
up() {
	if healthy; then
		report_running
		return
	fi
	if [[ -d "$RUN_DIR/pids" ]]; then
		log "found a stale or partial cluster in $RUN_DIR: tearing it down first"
		down
	fi
	local t0=$SECONDS
	check_machine
	build_binaries
	prepare_run_dir
	if [[ $NODE_MODE == real ]]; then node_network_up "$SERVICE_CIDR"; fi
	make_pki
	if [[ $NODE_MODE == real ]]; then metrics_pki; fi
	start_control_plane "$BIN" "$MBIN"
	if [[ $NODE_MODE == kwok ]]; then add_fake_nodes; fi
	apply_crds
	make_bucket
	proc_wait_for prometheus 60 curl -sf "http://127.0.0.1:$PROM_PORT/-/ready"
	if [[ $NODE_MODE == real ]]; then
		node_up "$BIN"
		metrics_up "$MBIN"
	fi
	write_env_file
	log "cluster up in $((SECONDS - t0)) s; env file: $RUN_DIR/env"
	echo "KUBECONFIG=$RUN_DIR/kubeconfig"
}

report_running() { # the cluster is up already: say so (and warn when it runs the other node mode)
	log "already up (run dir $RUN_DIR)"
	local running
	running="$(sed -n 's/^MODELAPI_NODE=//p' "$RUN_DIR/env")"
	[[ ${running:-kwok} == "$NODE_MODE" ]] ||
		log "WARNING: this cluster runs with MODELAPI_NODE=${running:-kwok}, not $NODE_MODE (cluster.sh down, then up, to switch)"
	echo "KUBECONFIG=$RUN_DIR/kubeconfig"
}

check_machine() { # the Debian packages (installed when missing), the node mode, kubectl
	ensure_packages "${CONTROL_PLANE_PACKAGES[@]}"
	if [[ $NODE_MODE == real ]]; then
		ensure_packages "${NODE_PACKAGES[@]}"
		node_preflight
	elif [[ $NODE_MODE != kwok ]]; then
		die "MODELAPI_NODE must be kwok or real, not '$NODE_MODE'"
	fi
	KUBECTL_BIN="$(command -v kubectl)" || die "kubectl is not installed (the machine image ships it)"
}

build_binaries() { # BIN: the control plane's bin dir; MBIN: the metrics pipeline's; the third-party CRDs
	BIN="$(build)"
	MBIN="$(build_metrics)"
	fetch_crds
}

prepare_run_dir() { # the run directory, a free port for each component, tmpfs for etcd's and Prometheus' data
	mkdir -p "$RUN_DIR/logs" "$RUN_DIR/pids" "$RUN_DIR/s3" "$RUN_DIR/prometheus/file_sd"
	: >"$RUN_DIR/pids/order"
	local ports
	mapfile -t ports < <(free_ports 8)
	ETCD_PORT=${ports[0]} ETCD_PEER_PORT=${ports[1]} APISERVER_PORT=${ports[2]} KCM_PORT=${ports[3]}
	SCHED_PORT=${ports[4]} KWOK_PORT=${ports[5]} S3_PORT=${ports[6]} PROM_PORT=${ports[7]}
	# kwok: the apiserver on 127.0.0.1, no endpoints for the `kubernetes` Service (no pod could use them). A real node:
	# the apiserver on the bridge address, so pods reach it through the `kubernetes` Service (10.0.0.1:443, endpoints
	# kept by the lease reconciler); the bridge exists before the apiserver starts.
	API_HOST=127.0.0.1 ENDPOINT_RECONCILER=none
	if [[ $NODE_MODE == real ]]; then API_HOST=$NODE_IP ENDPOINT_RECONCILER=lease; fi
	TMPFS="$(mktemp -d /dev/shm/modelapi-cluster.XXXXXX)" # etcd's and Prometheus' data live in memory
	echo "$TMPFS" >"$RUN_DIR/tmpfs-dir"
}

start_control_plane() { # bin mbin: etcd, the apiserver, controller-manager, scheduler, kwok, versitygw, Prometheus
	local bin="$1" mbin="$2" pki="$RUN_DIR/pki" endpoint_reconciler="$ENDPOINT_RECONCILER"
	proc_start etcd etcd --name=modelapi --data-dir="$TMPFS/etcd" \
		--listen-client-urls="http://127.0.0.1:$ETCD_PORT" --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
		--listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
		--initial-cluster="modelapi=http://127.0.0.1:$ETCD_PEER_PORT" --quota-backend-bytes=2147483648
	proc_wait_for etcd 30 curl -sf "http://127.0.0.1:$ETCD_PORT/health"

	proc_start kube-apiserver "$bin/kube-apiserver" --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
		--bind-address="$API_HOST" --advertise-address="$API_HOST" --secure-port="$APISERVER_PORT" \
		--endpoint-reconciler-type="$endpoint_reconciler" --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
		--client-ca-file="$pki/ca.crt" --token-auth-file="$pki/tokens.csv" --authorization-mode=Node,RBAC \
		--enable-admission-plugins=NodeRestriction,PodSecurity --allow-privileged=true \
		--service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
		--service-account-issuer=https://kubernetes.default.svc.cluster.local --service-cluster-ip-range="$SERVICE_CIDR" \
		--kubelet-client-certificate="$pki/kubelet-client.crt" --kubelet-client-key="$pki/kubelet-client.key" \
		--kubelet-preferred-address-types=InternalIP \
		--requestheader-client-ca-file="$pki/ca.crt" --requestheader-allowed-names=front-proxy-client \
		--requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
		--requestheader-extra-headers-prefix=X-Remote-Extra- --proxy-client-cert-file="$pki/front-proxy-client.crt" \
		--proxy-client-key-file="$pki/front-proxy-client.key" --profiling=false --v=1
	proc_wait_for kube-apiserver 120 curl -sf --cacert "$pki/ca.crt" -H "Authorization: Bearer $(cat "$pki/admin.token")" \
		"https://$API_HOST:$APISERVER_PORT/readyz"

	# a real node: the HPA controller reads metrics every 5 s instead of 15 s, so autoscaling tests take minutes
	local hpa_flags=()
	if [[ $NODE_MODE == real ]]; then hpa_flags=(--horizontal-pod-autoscaler-sync-period=5s); fi
	proc_start kube-controller-manager "$bin/kube-controller-manager" --kubeconfig="$RUN_DIR/kube-controller-manager.kubeconfig" \
		--authentication-kubeconfig="$RUN_DIR/kube-controller-manager.kubeconfig" \
		--authorization-kubeconfig="$RUN_DIR/kube-controller-manager.kubeconfig" \
		--bind-address=127.0.0.1 --secure-port="$KCM_PORT" --leader-elect=false \
		--kube-api-qps=100 --kube-api-burst=100 \
		--service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/ca.crt" --use-service-account-credentials=true \
		--cluster-signing-cert-file="$pki/ca.crt" --cluster-signing-key-file="$pki/ca.key" --profiling=false --v=1 \
		"${hpa_flags[@]}"
	proc_start kube-scheduler "$bin/kube-scheduler" --kubeconfig="$RUN_DIR/kube-scheduler.kubeconfig" \
		--authentication-kubeconfig="$RUN_DIR/kube-scheduler.kubeconfig" \
		--authorization-kubeconfig="$RUN_DIR/kube-scheduler.kubeconfig" \
		--bind-address=127.0.0.1 --secure-port="$SCHED_PORT" --leader-elect=false --profiling=false --v=1 \
		--kube-api-qps=100 --kube-api-burst=100
	proc_start kwok "$bin/kwok" --kubeconfig="$RUN_DIR/kubeconfig" --manage-all-nodes=false \
		--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake --node-ip=127.0.0.1 --cidr=10.244.0.0/16 \
		--node-lease-duration-seconds=40 --server-address="127.0.0.1:$KWOK_PORT"
	proc_start versitygw "$bin/versitygw" --access "$S3_ACCESS_KEY" --secret "$S3_SECRET_KEY" --region "$S3_REGION" \
		--port "127.0.0.1:$S3_PORT" posix "$RUN_DIR/s3"
	start_prometheus "$mbin" "$TMPFS"
	proc_wait_for kube-controller-manager 60 curl -skf "https://127.0.0.1:$KCM_PORT/healthz"
	proc_wait_for kube-scheduler 60 curl -skf "https://127.0.0.1:$SCHED_PORT/healthz"
	proc_wait_for kwok 60 curl -sf "http://127.0.0.1:$KWOK_PORT/healthz"
}

add_fake_nodes() { # kwok: the two fake nodes, Ready
	fake_nodes | kctl apply -f - >&2
	proc_wait_for kwok 60 kctl wait --for=condition=Ready node --all --timeout=5s
}

apply_crds() { # the third-party CRDs, then ours; waits until they are established (and the default ServiceAccount)
	local crds=("$CRD_CACHE"/gateway-api/*.yaml "$CRD_CACHE"/prometheus-operator/*.yaml) f args=()
	log "applying ${#crds[@]} third-party CRD files (server-side)"
	for f in "${crds[@]}"; do args+=(-f "$f"); done
	kctl apply --server-side --force-conflicts --field-manager=modelapi-cluster "${args[@]}" >/dev/null
	# Ours are applied one file at a time and a refusal does not stop the cluster: the e2e test that needs the CRD
	# fails with the apiserver's message (kept in crd-errors.txt) instead of every test failing at set-up.
	: >"$RUN_DIR/crd-errors.txt"
	for f in "$ROOT"/crds/*.yaml; do
		[[ -f $f ]] || continue
		log "applying ${f#"$ROOT"/} (server-side)"
		if ! kctl apply --server-side --force-conflicts --field-manager=modelapi-cluster -f "$f" >/dev/null 2>"$RUN_DIR/crd.err"; then
			{
				echo "== ${f#"$ROOT"/}"
				cat "$RUN_DIR/crd.err"
			} >>"$RUN_DIR/crd-errors.txt"
			log "WARNING: the apiserver refused ${f#"$ROOT"/}:"
			cat "$RUN_DIR/crd.err" >&2
		fi
	done
	rm -f "$RUN_DIR/crd.err"
	kctl wait --for=condition=Established crd --all --timeout=60s >/dev/null
	# the default ServiceAccount appears once the controller-manager's token controller has run
	proc_wait_for kube-controller-manager 60 kctl -n default get serviceaccount default
}

make_bucket() { # the S3 bucket the tests and the demo use
	proc_wait_for versitygw 30 curl -s -o /dev/null "http://127.0.0.1:$S3_PORT"
	# S3 CreateBucket, signed by curl (SigV4); versitygw wants the payload hash header (here: of the empty body)
	curl -sSf --aws-sigv4 "aws:amz:$S3_REGION:s3" --user "$S3_ACCESS_KEY:$S3_SECRET_KEY" -X PUT \
		-H "x-amz-content-sha256: $(printf '' | sha256sum | cut -d' ' -f1)" \
		"http://127.0.0.1:$S3_PORT/$S3_BUCKET" >/dev/null || die "could not create bucket $S3_BUCKET"
}

write_env_file() { # $RUN_DIR/env: every port, credential and path the tests read (written last: its presence means up)
	local pki="$RUN_DIR/pki"
	cat >"$RUN_DIR/env.tmp" <<ENV
# written by tests/e2e/cluster/cluster.sh up; KEY=VALUE, no quoting, sourceable by bash
MODELAPI_CLUSTER_DIR=$RUN_DIR
MODELAPI_CLUSTER_BIN=$BIN
MODELAPI_CLUSTER_LOGS=$RUN_DIR/logs
KUBECONFIG=$RUN_DIR/kubeconfig
KUBECTL=$KUBECTL_BIN
HELM=$BIN/helm
KUBE_VERSION=$K8S_VERSION
KUBE_APISERVER_URL=https://$API_HOST:$APISERVER_PORT
KUBE_CA_FILE=$pki/ca.crt
KUBE_TOKEN=$(cat "$pki/admin.token")
ETCD_ENDPOINT=http://127.0.0.1:$ETCD_PORT
KWOK_URL=http://127.0.0.1:$KWOK_PORT
S3_ENDPOINT_URL=http://127.0.0.1:$S3_PORT
S3_BUCKET=$S3_BUCKET
S3_DATA_DIR=$RUN_DIR/s3
AWS_ACCESS_KEY_ID=$S3_ACCESS_KEY
AWS_SECRET_ACCESS_KEY=$S3_SECRET_KEY
AWS_DEFAULT_REGION=$S3_REGION
PROMETHEUS_URL=http://127.0.0.1:$PROM_PORT
PROMETHEUS_CONFIG=$RUN_DIR/prometheus/prometheus.yml
PROMETHEUS_FILE_SD_DIR=$RUN_DIR/prometheus/file_sd
PROMETHEUS_VERSION=$PROMETHEUS_VERSION
PROMTOOL=$MBIN/promtool
CRD_ERRORS_FILE=$RUN_DIR/crd-errors.txt
SERVICE_CIDR=$SERVICE_CIDR
MODELAPI_NODE=$NODE_MODE
ENV
	if [[ $NODE_MODE == real ]]; then grep -v '^MODELAPI_NODE=' "$RUN_DIR/node/env" >>"$RUN_DIR/env.tmp"; fi
	mv "$RUN_DIR/env.tmp" "$RUN_DIR/env"
}

down() { # every process up started, stopped and exited (last started first), the node's state, the run directory
	if [[ ! -d "$RUN_DIR/pids" ]]; then
		log "not running (no $RUN_DIR/pids)"
		node_down
		rm -rf "$RUN_DIR"
		return
	fi
	if [[ -d "$RUN_DIR/node" ]]; then node_remove_pods; fi
	proc_stop_all || die "a process of $RUN_DIR outlived SIGKILL (see above): the run directory is kept; run down again"
	node_down
	local tmpfs
	tmpfs="$(cat "$RUN_DIR/tmpfs-dir" 2>/dev/null || true)"
	if [[ $tmpfs == /dev/shm/modelapi-cluster.* ]]; then rm -rf "$tmpfs"; fi
	rm -rf "$RUN_DIR"
	log "down"
}

restart() { # name [down_seconds]: stop one component and start it again with the same command line (so the same
	# ports, flags and data dir), after down_seconds; waits until the cluster is healthy again. For fault tests.
	local name="${1:-}" down="${2:-0}"
	[[ -f "$RUN_DIR/pids/order" ]] || die "restart: no cluster in $RUN_DIR"
	grep -qxF -- "$name" "$RUN_DIR/pids/order" ||
		die "restart: unknown component '$name' (one of: $(tr '\n' ' ' <"$RUN_DIR/pids/order"))"
	[[ $down =~ ^[0-9]+([.][0-9]+)?$ ]] || die "restart: down_seconds must be a number, not '$down'"
	proc_restart "$name" "$down"
	proc_wait_for "$name" 120 healthy
	log "$name restarted"
}

images() { # [target...]: the real-node cluster's images, rebuilt where the sources changed, pushed to its registry
	[[ $NODE_MODE == real ]] || die "images: only the real-node tier has a registry (MODELAPI_NODE=real)"
	healthy || die "images: no healthy cluster in $RUN_DIR (make cluster-up NODE=real first)"
	grep -q '^NODE_REGISTRY=' "$RUN_DIR/env" || die "images: the cluster in $RUN_DIR has no registry"
	node_push_images "$@"
}

logs() {
	local n="${1:-60}" f
	for f in "$RUN_DIR"/logs/*.log; do
		[[ -f $f ]] || continue
		echo "===== $(basename "$f" .log): last $n lines ====="
		tail -n "$n" "$f"
	done
}

with_lock() {
	mkdir -p "$(dirname "$RUN_DIR")"
	exec 9>"$RUN_DIR.lock"
	flock 9
	"$@"
}

case "${1:-}" in
build)
	build
	build_metrics
	if [[ $NODE_MODE == real ]]; then
		node_build
		registry_build
		gateway_build
		node_build_images >/dev/null
	fi
	;;
build-otel) otel_build ;;
images) with_lock images "${@:2}" ;;
preflight) node_capable ;;
up) with_lock up ;;
down) with_lock down ;;
status) healthy ;;
env) cat "$RUN_DIR/env" ;;
logs) logs "${2:-60}" ;;
restart) with_lock restart "${2:-}" "${3:-0}" ;;
*)
	echo "usage: $0 build|build-otel|up|down|images [TARGET...]|status|preflight|env|logs [N]|restart NAME [DOWN_S]" >&2
	exit 2
	;;
esac
