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
#   cluster.sh images  MODELAPI_NODE=real: build the images (pause; Dockerfile targets runtime, operator,
#                      runtime-gpu) and push them to the running cluster's registry (`up` does it too; this is
#                      for a rebuild while up)
#   cluster.sh up      start everything; a no-op when already up; the last line printed is KUBECONFIG=<path>
#   cluster.sh down    stop every process `up` started (by saved PID) and remove the run state
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
# node.sh), GOCACHE / GOMODCACHE as usual for Go.
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

log() { printf '[cluster %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
	log "ERROR: $*"
	exit 1
}

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false # the same binaries whatever the caller's GOFLAGS
GO_VERSION="$(go env GOVERSION 2>/dev/null || echo none)"
CACHE_KEY="$(
	{
		echo "k8s=$K8S_VERSION kwok=$KWOK_VERSION helm=$HELM_VERSION versitygw=$VERSITYGW_VERSION go=$GO_VERSION"
		cat "$GOMOD_DIR/go.mod" "$GOMOD_DIR/go.sum"
	} | sha256sum | cut -c1-16
)"
BIN_DIR="$CACHE_ROOT/$CACHE_KEY/bin"
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kwok helm versitygw)
# shellcheck source=SCRIPTDIR/node.sh
source "$HERE/node.sh"
# shellcheck source=SCRIPTDIR/metrics.sh
source "$HERE/metrics.sh"

# ---- build --------------------------------------------------------------------------------------------------------
# `go build -v` prints each package as it is compiled; turn that into a progress line every 100 packages.
progress() {
	awk -v what="$1" '
		/^#|\.go:[0-9]|: (error|cannot|missing|undefined|no required)|^go: [^d]|^(FAIL|fatal|panic)/ { print > "/dev/stderr"; next }
		{ n++; if (n % 100 == 0) { printf "[cluster] %s: %d packages compiled\n", what, n > "/dev/stderr"; fflush("/dev/stderr") } }
		END { printf "[cluster] %s: %d packages compiled in total\n", what, n > "/dev/stderr" }'
}

build_k8s() { # out_dir module_dir cmd... : Kubernetes commands (k8s.io/kubernetes/cmd/<cmd>) with real version strings
	local out="$1" module="$2" ver="${K8S_VERSION#v}" ldflags="-s -w" key val cmd pkgs=()
	shift 2
	local -A vars=(
		[gitVersion]="$K8S_VERSION" [gitMajor]="${ver%%.*}" [gitMinor]="$(echo "$ver" | cut -d. -f2)"
		[gitCommit]="0000000000000000000000000000000000000000" [gitTreeState]="clean"
		[buildDate]="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
	)
	for key in "${!vars[@]}"; do
		val="${vars[$key]}"
		ldflags+=" -X k8s.io/component-base/version.$key=$val -X k8s.io/client-go/pkg/version.$key=$val"
	done
	for cmd in "$@"; do pkgs+=("k8s.io/kubernetes/cmd/$cmd"); done
	log "building $* $K8S_VERSION (cold: about 5-15 min on 2 cores)"
	(cd "$module" && go build -v -trimpath -ldflags "$ldflags" -o "$out/" "${pkgs[@]}" 2>&1) | progress "$* $K8S_VERSION"
}

go_install() { # name module/cmd version ldflags
	log "building $1 $3"
	GOBIN="$5" go install -v -trimpath -ldflags "-s -w $4" "$2@$3" 2>&1 | progress "$1 $3"
}

build() {
	local b missing=0
	for b in "${BINARIES[@]}"; do [[ -x "$BIN_DIR/$b" ]] || missing=1; done
	if ((missing == 0)); then
		echo "$BIN_DIR"
		return
	fi
	command -v go >/dev/null || die "go is not installed"
	mkdir -p "$CACHE_ROOT"
	exec 8>"$CACHE_ROOT/build.lock"
	log "waiting for the build lock $CACHE_ROOT/build.lock" && flock 8
	missing=0 # another build may have finished while this one waited
	for b in "${BINARIES[@]}"; do [[ -x "$BIN_DIR/$b" ]] || missing=1; done
	if ((missing == 0)); then
		echo "$BIN_DIR"
		return
	fi
	local stage="$CACHE_ROOT/$CACHE_KEY/stage.$$" start=$SECONDS
	rm -rf "$stage" && mkdir -p "$stage" "$BIN_DIR"
	log "binaries missing from $BIN_DIR: building them once (go $GO_VERSION)"
	[[ -x "$BIN_DIR/kube-apiserver" && -x "$BIN_DIR/kube-controller-manager" && -x "$BIN_DIR/kube-scheduler" ]] ||
		{
			build_k8s "$stage" "$GOMOD_DIR" kube-apiserver kube-controller-manager kube-scheduler &&
				mv "$stage"/kube-* "$BIN_DIR/"
		}
	[[ -x "$BIN_DIR/kwok" ]] || go_install kwok sigs.k8s.io/kwok/cmd/kwok "$KWOK_VERSION" \
		"-X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v} -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=${K8S_VERSION#v}" "$stage"
	[[ -x "$BIN_DIR/helm" ]] || go_install helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION" \
		"-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean" "$stage"
	[[ -x "$BIN_DIR/versitygw" ]] || go_install versitygw github.com/versity/versitygw/cmd/versitygw "$VERSITYGW_VERSION" \
		"-X main.Version=$VERSITYGW_VERSION -X main.Build=module -X main.BuildTime=$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$stage"
	for b in kwok helm versitygw; do
		if [[ -x "$stage/$b" ]]; then mv "$stage/$b" "$BIN_DIR/"; fi
	done
	rm -rf "$stage"
	for b in "${BINARIES[@]}"; do [[ -x "$BIN_DIR/$b" ]] || die "build did not produce $b"; done
	log "binaries ready in $BIN_DIR after $((SECONDS - start)) s"
	echo "$BIN_DIR"
}

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

# ---- processes --------------------------------------------------------------------------------------------------------
free_ports() { # N -> N free TCP ports on 127.0.0.1, one per line
	python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
for s in socks:
    print(s.getsockname()[1])
    s.close()
PY
}

start() { # name command... ; detached, log in logs/NAME.log, pid in pids/NAME.pid
	local name="$1"
	shift
	log "starting $name"
	# the inner shell writes its own PID, then execs the program: the PID file names the program itself
	# fds 8 and 9 hold the build and run locks: a daemon that inherited them would hold the locks for its lifetime
	# shellcheck disable=SC2016 # expanded by the inner shell
	setsid bash -c 'echo $$ >"$0"; exec "$@"' "$RUN_DIR/pids/$name.pid" "$@" \
		>"$RUN_DIR/logs/$name.log" 2>&1 </dev/null 8>&- 9>&- &
	local t0=$SECONDS
	until [[ -s "$RUN_DIR/pids/$name.pid" ]]; do
		((SECONDS - t0 < 10)) || die "$name did not start"
		sleep 0.05
	done
	echo "$name" >>"$RUN_DIR/pids/order"
}

# what a component's command line contains, where that is not its name (a second instance of a program)
declare -A CMDLINE_MATCH=([versitygw-node]=versitygw)
alive() { # name: the process we started under that name is still running (guards against PID reuse)
	local pid
	pid="$(cat "$RUN_DIR/pids/$1.pid" 2>/dev/null)" || return 1
	[[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null &&
		tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "${CMDLINE_MATCH[$1]:-$1}"
}

wait_for() { # name timeout_s command... ; fails fast when the process died
	local name="$1" timeout="$2" t0=$SECONDS
	shift 2
	until "$@" >/dev/null 2>&1; do
		if ! alive "$name"; then
			tail -n 40 "$RUN_DIR/logs/$name.log" >&2 || true
			die "$name exited during start-up (log: $RUN_DIR/logs/$name.log)"
		fi
		if ((SECONDS - t0 > timeout)); then
			tail -n 40 "$RUN_DIR/logs/$name.log" >&2 || true
			die "$name not ready after ${timeout}s (log: $RUN_DIR/logs/$name.log)"
		fi
		sleep 0.3
	done
}

# ---- certificates, tokens, kubeconfigs -------------------------------------------------------------------------------
make_pki() {
	local pki="$RUN_DIR/pki"
	mkdir -p "$pki"
	(
		cd "$pki"
		openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 30 -subj "/CN=modelapi-e2e-ca" 2>/dev/null
		openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver" 2>/dev/null
		printf 'subjectAltName=IP:127.0.0.1,IP:%s,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\nextendedKeyUsage=serverAuth\n' \
			"$NODE_IP" >apiserver.ext
		openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt -days 30 \
			-extfile apiserver.ext 2>/dev/null
		# front-proxy (request-header) client: without it the controller-manager and scheduler log an error every minute
		openssl req -newkey rsa:2048 -nodes -keyout front-proxy-client.key -out front-proxy-client.csr \
			-subj "/CN=front-proxy-client" 2>/dev/null
		printf 'extendedKeyUsage=clientAuth\n' >client.ext
		openssl x509 -req -in front-proxy-client.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
			-out front-proxy-client.crt -days 30 -extfile client.ext 2>/dev/null
		# the apiserver's client certificate towards kubelets (logs, exec); kubelets trust this CA's certificates
		openssl req -newkey rsa:2048 -nodes -keyout kubelet-client.key -out kubelet-client.csr \
			-subj "/O=system:masters/CN=kube-apiserver-kubelet-client" 2>/dev/null
		openssl x509 -req -in kubelet-client.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
			-out kubelet-client.crt -days 30 -extfile client.ext 2>/dev/null
		openssl genrsa -out sa.key 2048 2>/dev/null
		openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
		chmod 600 ./*.key
	)
	local admin kcm sched node proxy
	admin="$(openssl rand -hex 16)" kcm="$(openssl rand -hex 16)" sched="$(openssl rand -hex 16)"
	node="$(openssl rand -hex 16)" proxy="$(openssl rand -hex 16)"
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

kubeconfig() { # path user token
	cat >"$1" <<KC
apiVersion: v1
kind: Config
clusters:
- name: modelapi-e2e
  cluster:
    server: https://$API_HOST:$APISERVER_PORT
    certificate-authority: $RUN_DIR/pki/ca.crt
users:
- name: $2
  user:
    token: $3
contexts:
- name: modelapi-e2e
  context:
    cluster: modelapi-e2e
    user: $2
    namespace: default
current-context: modelapi-e2e
KC
	chmod 600 "$1"
}

# ---- the cluster ------------------------------------------------------------------------------------------------------
healthy() {
	[[ -f "$RUN_DIR/env" ]] || return 1
	local n
	while read -r n; do alive "$n" || return 1; done <"$RUN_DIR/pids/order"
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

up() {
	if healthy; then
		log "already up (run dir $RUN_DIR)"
		local running
		running="$(sed -n 's/^MODELAPI_NODE=//p' "$RUN_DIR/env")"
		[[ ${running:-kwok} == "$NODE_MODE" ]] ||
			log "WARNING: this cluster runs with MODELAPI_NODE=${running:-kwok}, not $NODE_MODE (cluster.sh down, then up, to switch)"
		echo "KUBECONFIG=$RUN_DIR/kubeconfig"
		return
	fi
	if [[ -d "$RUN_DIR/pids" ]]; then
		log "found a stale or partial cluster in $RUN_DIR: tearing it down first"
		down
	fi
	local t0=$SECONDS
	ensure_packages "${CONTROL_PLANE_PACKAGES[@]}"
	if [[ $NODE_MODE == real ]]; then
		ensure_packages "${NODE_PACKAGES[@]}"
		node_preflight
	elif [[ $NODE_MODE != kwok ]]; then
		die "MODELAPI_NODE must be kwok or real, not '$NODE_MODE'"
	fi
	KUBECTL_BIN="$(command -v kubectl)" || die "kubectl is not installed (the machine image ships it)"
	local bin mbin
	bin="$(build)"
	mbin="$(build_metrics)"
	fetch_crds

	mkdir -p "$RUN_DIR/logs" "$RUN_DIR/pids" "$RUN_DIR/s3" "$RUN_DIR/prometheus/file_sd"
	: >"$RUN_DIR/pids/order"
	local ports
	mapfile -t ports < <(free_ports 8)
	ETCD_PORT=${ports[0]} ETCD_PEER_PORT=${ports[1]} APISERVER_PORT=${ports[2]} KCM_PORT=${ports[3]}
	SCHED_PORT=${ports[4]} KWOK_PORT=${ports[5]} S3_PORT=${ports[6]} PROM_PORT=${ports[7]}
	# kwok: the apiserver on 127.0.0.1, no endpoints for the `kubernetes` Service (no pod could use them). A real node:
	# the apiserver on the bridge address, so pods reach it through the `kubernetes` Service (10.0.0.1:443, endpoints
	# kept by the lease reconciler); the bridge exists before the apiserver starts.
	API_HOST=127.0.0.1
	local endpoint_reconciler=none
	if [[ $NODE_MODE == real ]]; then
		API_HOST=$NODE_IP endpoint_reconciler=lease
		node_network_up "$SERVICE_CIDR"
	fi
	make_pki
	if [[ $NODE_MODE == real ]]; then metrics_pki; fi
	local pki="$RUN_DIR/pki" tmpfs
	tmpfs="$(mktemp -d /dev/shm/modelapi-cluster.XXXXXX)" # etcd's and Prometheus' data live in memory
	echo "$tmpfs" >"$RUN_DIR/tmpfs-dir"

	start etcd etcd --name=modelapi --data-dir="$tmpfs/etcd" \
		--listen-client-urls="http://127.0.0.1:$ETCD_PORT" --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
		--listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
		--initial-cluster="modelapi=http://127.0.0.1:$ETCD_PEER_PORT" --quota-backend-bytes=2147483648
	wait_for etcd 30 curl -sf "http://127.0.0.1:$ETCD_PORT/health"

	start kube-apiserver "$bin/kube-apiserver" --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
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
	wait_for kube-apiserver 120 curl -sf --cacert "$pki/ca.crt" -H "Authorization: Bearer $(cat "$pki/admin.token")" \
		"https://$API_HOST:$APISERVER_PORT/readyz"

	# a real node: the HPA controller reads metrics every 5 s instead of 15 s, so autoscaling tests take minutes
	local hpa_flags=()
	if [[ $NODE_MODE == real ]]; then hpa_flags=(--horizontal-pod-autoscaler-sync-period=5s); fi
	start kube-controller-manager "$bin/kube-controller-manager" --kubeconfig="$RUN_DIR/kube-controller-manager.kubeconfig" \
		--authentication-kubeconfig="$RUN_DIR/kube-controller-manager.kubeconfig" \
		--authorization-kubeconfig="$RUN_DIR/kube-controller-manager.kubeconfig" \
		--bind-address=127.0.0.1 --secure-port="$KCM_PORT" --leader-elect=false \
		--kube-api-qps=100 --kube-api-burst=100 \
		--service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/ca.crt" --use-service-account-credentials=true \
		--cluster-signing-cert-file="$pki/ca.crt" --cluster-signing-key-file="$pki/ca.key" --profiling=false --v=1 \
		"${hpa_flags[@]}"
	start kube-scheduler "$bin/kube-scheduler" --kubeconfig="$RUN_DIR/kube-scheduler.kubeconfig" \
		--authentication-kubeconfig="$RUN_DIR/kube-scheduler.kubeconfig" \
		--authorization-kubeconfig="$RUN_DIR/kube-scheduler.kubeconfig" \
		--bind-address=127.0.0.1 --secure-port="$SCHED_PORT" --leader-elect=false --profiling=false --v=1 \
		--kube-api-qps=100 --kube-api-burst=100
	start kwok "$bin/kwok" --kubeconfig="$RUN_DIR/kubeconfig" --manage-all-nodes=false \
		--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake --node-ip=127.0.0.1 --cidr=10.244.0.0/16 \
		--node-lease-duration-seconds=40 --server-address="127.0.0.1:$KWOK_PORT"
	start versitygw "$bin/versitygw" --access "$S3_ACCESS_KEY" --secret "$S3_SECRET_KEY" --region "$S3_REGION" \
		--port "127.0.0.1:$S3_PORT" posix "$RUN_DIR/s3"
	start_prometheus "$mbin" "$tmpfs"
	wait_for kube-controller-manager 60 curl -skf "https://127.0.0.1:$KCM_PORT/healthz"
	wait_for kube-scheduler 60 curl -skf "https://127.0.0.1:$SCHED_PORT/healthz"
	wait_for kwok 60 curl -sf "http://127.0.0.1:$KWOK_PORT/healthz"

	if [[ $NODE_MODE == kwok ]]; then
		fake_nodes | kctl apply -f - >&2
		wait_for kwok 60 kctl wait --for=condition=Ready node --all --timeout=5s
	fi

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
	wait_for kube-controller-manager 60 kctl -n default get serviceaccount default

	wait_for versitygw 30 curl -s -o /dev/null "http://127.0.0.1:$S3_PORT"
	# S3 CreateBucket, signed by curl (SigV4); versitygw wants the payload hash header (here: of the empty body)
	curl -sSf --aws-sigv4 "aws:amz:$S3_REGION:s3" --user "$S3_ACCESS_KEY:$S3_SECRET_KEY" -X PUT \
		-H "x-amz-content-sha256: $(printf '' | sha256sum | cut -d' ' -f1)" \
		"http://127.0.0.1:$S3_PORT/$S3_BUCKET" >/dev/null || die "could not create bucket $S3_BUCKET"
	wait_for prometheus 60 curl -sf "http://127.0.0.1:$PROM_PORT/-/ready"
	if [[ $NODE_MODE == real ]]; then
		node_up "$bin"
		metrics_up "$mbin"
	fi

	cat >"$RUN_DIR/env.tmp" <<ENV
# written by tests/e2e/cluster/cluster.sh up; KEY=VALUE, no quoting, sourceable by bash
MODELAPI_CLUSTER_DIR=$RUN_DIR
MODELAPI_CLUSTER_BIN=$bin
MODELAPI_CLUSTER_LOGS=$RUN_DIR/logs
KUBECONFIG=$RUN_DIR/kubeconfig
KUBECTL=$KUBECTL_BIN
HELM=$bin/helm
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
PROMTOOL=$mbin/promtool
CRD_ERRORS_FILE=$RUN_DIR/crd-errors.txt
SERVICE_CIDR=$SERVICE_CIDR
MODELAPI_NODE=$NODE_MODE
ENV
	if [[ $NODE_MODE == real ]]; then grep -v '^MODELAPI_NODE=' "$RUN_DIR/node/env" >>"$RUN_DIR/env.tmp"; fi
	mv "$RUN_DIR/env.tmp" "$RUN_DIR/env"
	log "cluster up in $((SECONDS - t0)) s; env file: $RUN_DIR/env"
	echo "KUBECONFIG=$RUN_DIR/kubeconfig"
}

down() {
	if [[ ! -d "$RUN_DIR/pids" ]]; then
		log "not running (no $RUN_DIR/pids)"
		node_down
		rm -rf "$RUN_DIR"
		return
	fi
	local names=() i
	[[ -f "$RUN_DIR/pids/order" ]] && mapfile -t names <"$RUN_DIR/pids/order"
	if [[ -d "$RUN_DIR/node" ]]; then node_remove_pods; fi
	for ((i = ${#names[@]} - 1; i >= 0; i--)); do stop_one "${names[$i]}"; done
	node_down
	local tmpfs
	tmpfs="$(cat "$RUN_DIR/tmpfs-dir" 2>/dev/null || true)"
	if [[ $tmpfs == /dev/shm/modelapi-cluster.* ]]; then rm -rf "$tmpfs"; fi
	rm -rf "$RUN_DIR"
	log "down"
}

stop_one() { # name: TERM the process started under that name, KILL it after 15 s
	local name="$1" pid t0
	alive "$name" || return 0
	pid="$(cat "$RUN_DIR/pids/$name.pid")"
	log "stopping $name (pid $pid)"
	kill -TERM "$pid" 2>/dev/null || true
	t0=$SECONDS
	# alive, not kill -0: an exited daemon stays a zombie until PID 1 reaps it
	while alive "$name" && ((SECONDS - t0 < 15)); do sleep 0.1; done
	if alive "$name"; then
		log "$name did not stop on TERM: killing it"
		kill -KILL "$pid" 2>/dev/null || true
		while alive "$name" && ((SECONDS - t0 < 20)); do sleep 0.1; done
	fi
}

restart() { # name [down_seconds]: stop one component and start it again with the same command line (so the same
	# ports, flags and data dir), after down_seconds; waits until the cluster is healthy again. For fault tests.
	local name="${1:-}" down="${2:-0}" pid argv=() t0
	[[ -f "$RUN_DIR/pids/order" ]] || die "restart: no cluster in $RUN_DIR"
	grep -qxF -- "$name" "$RUN_DIR/pids/order" ||
		die "restart: unknown component '$name' (one of: $(tr '\n' ' ' <"$RUN_DIR/pids/order"))"
	[[ $down =~ ^[0-9]+([.][0-9]+)?$ ]] || die "restart: down_seconds must be a number, not '$down'"
	alive "$name" || die "restart: $name is not running"
	pid="$(cat "$RUN_DIR/pids/$name.pid")"
	mapfile -d '' -t argv <"/proc/$pid/cmdline"
	((${#argv[@]} > 0)) || die "restart: cannot read the command line of $name (pid $pid)"
	stop_one "$name"
	alive "$name" && die "restart: $name (pid $pid) did not stop"
	sleep "$down"
	log "starting $name again (down ${down}s)"
	: >"$RUN_DIR/pids/$name.pid"
	# as in start(), but the log is appended to and the name is already in pids/order
	# shellcheck disable=SC2016 # expanded by the inner shell
	setsid bash -c 'echo $$ >"$0"; exec "$@"' "$RUN_DIR/pids/$name.pid" "${argv[@]}" \
		>>"$RUN_DIR/logs/$name.log" 2>&1 </dev/null 8>&- 9>&- &
	t0=$SECONDS
	until [[ -s "$RUN_DIR/pids/$name.pid" ]]; do
		((SECONDS - t0 < 10)) || die "$name did not start"
		sleep 0.05
	done
	wait_for "$name" 120 healthy
	log "$name restarted"
}

images() { # the real-node cluster's images, rebuilt where the sources changed, pushed to its registry
	[[ $NODE_MODE == real ]] || die "images: only the real-node tier has a registry (MODELAPI_NODE=real)"
	healthy || die "images: no healthy cluster in $RUN_DIR (make cluster-up NODE=real first)"
	grep -q '^NODE_REGISTRY=' "$RUN_DIR/env" || die "images: the cluster in $RUN_DIR has no registry"
	node_push_images
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
images) with_lock images ;;
preflight) node_capable ;;
up) with_lock up ;;
down) with_lock down ;;
status) healthy ;;
env) cat "$RUN_DIR/env" ;;
logs) logs "${2:-60}" ;;
restart) with_lock restart "${2:-}" "${3:-0}" ;;
*)
	echo "usage: $0 build|up|down|images|status|preflight|env|logs [N]|restart NAME [DOWN_S]" >&2
	exit 2
	;;
esac
