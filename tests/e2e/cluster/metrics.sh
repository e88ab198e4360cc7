# shellcheck shell=bash
# The metrics pipeline of the local cluster, sourced by cluster.sh: Prometheus with Kubernetes service discovery
# (both tiers), and on the real-node tier metrics-server (resource metrics: `metric: cpu|memory` HPAs),
# prometheus-adapter (custom metrics: `metric: inFlight` HPAs) and CoreDNS (cluster DNS for pods). All are built
# from the wrapper modules under gomod-metrics/ and run as local processes, like the control plane.

METRICS_GOMOD_DIR="$HERE/gomod-metrics"
METRICS_BINARIES=(prometheus promtool metrics-server prometheus-adapter coredns)
# the versions, as the wrapper modules pin them (Prometheus' Go module v0.X0Y.Z is Prometheus vX.Y.Z)
metrics_module_version() { # module [go.mod]
	awk -v m="$1" '$1 == m {print $2} $1 == "require" && $2 == m {print $3}' "${2:-$METRICS_GOMOD_DIR/go.mod}" | head -1
}
PROMETHEUS_MODULE_VERSION="$(metrics_module_version github.com/prometheus/prometheus "$METRICS_GOMOD_DIR/prometheus/go.mod")"
PROMETHEUS_VERSION="$(echo "$PROMETHEUS_MODULE_VERSION" | awk -F. '{printf "v%d.%d.%s", substr($2, 1, length($2) - 2), substr($2, length($2) - 1) + 0, $3}')"
METRICS_SERVER_VERSION="$(metrics_module_version sigs.k8s.io/metrics-server)"
PROMETHEUS_ADAPTER_VERSION="$(metrics_module_version sigs.k8s.io/prometheus-adapter "$METRICS_GOMOD_DIR/adapter/go.mod")"
COREDNS_VERSION="$(metrics_module_version github.com/coredns/coredns)"

metrics_bin_dir() {
	cache_bin_dir metrics- "prometheus=$PROMETHEUS_VERSION metrics-server=$METRICS_SERVER_VERSION adapter=$PROMETHEUS_ADAPTER_VERSION coredns=$COREDNS_VERSION go=$GO_VERSION" \
		"$METRICS_GOMOD_DIR"/{go.mod,go.sum,coredns/main.go,prometheus/go.mod,prometheus/go.sum,adapter/go.mod,adapter/go.sum}
}

metrics_go_build() { # name version out_dir package ldflags [module dir]: one binary of a wrapper module
	go_build "$1" "$2" "$3" "$4" "$5" "${6:-$METRICS_GOMOD_DIR}"
}

metrics_build_one() { # name stage_dir build_date
	local common=github.com/prometheus/common/version
	local prom_ldflags="-X $common.Version=${PROMETHEUS_VERSION#v} -X $common.Revision=module -X $common.Branch=$PROMETHEUS_MODULE_VERSION -X $common.BuildUser=modelapi -X $common.BuildDate=$3"
	case "$1" in
	prometheus | promtool)
		metrics_go_build "$1" "$PROMETHEUS_VERSION" "$2" "github.com/prometheus/prometheus/cmd/$1" "$prom_ldflags" \
			"$METRICS_GOMOD_DIR/prometheus"
		;;
	metrics-server)
		metrics_go_build metrics-server "$METRICS_SERVER_VERSION" "$2" sigs.k8s.io/metrics-server/cmd/metrics-server \
			"-X k8s.io/client-go/pkg/version.gitVersion=$METRICS_SERVER_VERSION -X k8s.io/client-go/pkg/version.buildDate=$3"
		;;
	prometheus-adapter)
		metrics_go_build prometheus-adapter "$PROMETHEUS_ADAPTER_VERSION" "$2" sigs.k8s.io/prometheus-adapter/cmd/adapter "" \
			"$METRICS_GOMOD_DIR/adapter"
		;;
	coredns)
		metrics_go_build coredns "$COREDNS_VERSION" "$2" ./coredns "-X github.com/coredns/coredns/coremain.GitCommit=module"
		;;
	*) die "unknown metrics binary $1" ;;
	esac
}

# The binaries a tier needs: kwok runs Prometheus only; a real node all of them.
metrics_binaries() { if [[ $NODE_MODE == real ]]; then echo "${METRICS_BINARIES[*]}"; else echo prometheus promtool; fi; }

metrics_builder() { # stage missing...: each missing binary (cached_build's builder)
	local stage="$1" now b
	shift
	now="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
	for b in "$@"; do metrics_build_one "$b" "$stage" "$now"; done
}

build_metrics() { # [binary...] (default: the tier's); prints the bin dir; builds what is missing, under the build lock
	local want
	read -r -a want <<<"${*:-$(metrics_binaries)}"
	cached_build "$(metrics_bin_dir)" metrics_builder "${want[@]}"
}

# ---- certificates: the kubelet's serving certificate, and one for the two aggregated API servers ------------------
metrics_pki() { # after make_pki: certificates signed by the cluster CA, so every TLS hop is verified
	local pki="$RUN_DIR/pki"
	pki_cert "$pki" kubelet-serving /CN=kubelet-serving "subjectAltName=IP:$NODE_IP,DNS:$NODE_NAME
extendedKeyUsage=serverAuth"
	pki_cert "$pki" aggregated /CN=aggregated \
		"subjectAltName=IP:$NODE_IP,DNS:metrics-server.kube-system.svc,DNS:prometheus-adapter.kube-system.svc
extendedKeyUsage=serverAuth"
}

# ---- Prometheus (both tiers) ------------------------------------------------------------------------------------------
write_prometheus_config() {
	cat >"$RUN_DIR/prometheus/prometheus.yml" <<PROM
# Tests add scrape targets by writing <name>.json (or .yaml) files into file_sd/ (Prometheus file_sd format):
#   [{"targets": ["127.0.0.1:8080"], "labels": {"job": "my-test"}}]
global:
  scrape_interval: 2s
  evaluation_interval: 2s
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: ["127.0.0.1:$PROM_PORT"]
  - job_name: kube-apiserver
    scheme: https
    authorization:
      credentials_file: $RUN_DIR/pki/admin.token
    tls_config:
      ca_file: $RUN_DIR/pki/ca.crt
    static_configs:
      - targets: ["$API_HOST:$APISERVER_PORT"]
  # honor_labels: a target's own namespace label wins over the file's (the operator's ModelAPI status series carry the
  # ModelAPI's, as with the chart's ServiceMonitor)
  - job_name: file_sd
    honor_labels: true
    file_sd_configs:
      - files: ["$RUN_DIR/prometheus/file_sd/*.json", "$RUN_DIR/prometheus/file_sd/*.yaml"]
        refresh_interval: 2s
PROM
	[[ $NODE_MODE == real ]] || return 0
	# A real node: the model pods, found through the apiserver as in any cluster (kwok pods have no reachable IP)
	cat >>"$RUN_DIR/prometheus/prometheus.yml" <<PROM
  # every pod the operator made (label app.kubernetes.io/name=modelapi) that asks to be scraped (the annotations
  # prometheus.io/scrape, /port and /path of the pod template), with the namespace and pod labels that
  # prometheus-adapter's rule and the operator's queries use
  - job_name: modelapi-pods
    kubernetes_sd_configs:
      - role: pod
        api_server: https://$API_HOST:$APISERVER_PORT
        authorization:
          credentials_file: $RUN_DIR/pki/admin.token
        tls_config:
          ca_file: $RUN_DIR/pki/ca.crt
    relabel_configs:
      - source_labels: [__meta_kubernetes_pod_label_app_kubernetes_io_name, __meta_kubernetes_pod_annotation_prometheus_io_scrape]
        regex: modelapi;true
        action: keep
      - source_labels: [__meta_kubernetes_pod_phase]
        regex: Running
        action: keep
      - source_labels: [__meta_kubernetes_pod_ip, __meta_kubernetes_pod_annotation_prometheus_io_port]
        regex: (.+);([0-9]+)
        replacement: \$1:\$2
        target_label: __address__
      - source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_path]
        regex: (.+)
        target_label: __metrics_path__
      - source_labels: [__meta_kubernetes_namespace]
        target_label: namespace
      - source_labels: [__meta_kubernetes_pod_name]
        target_label: pod
  # the kubelet's cAdvisor metrics (container_cpu_*, container_memory_*: the dashboard's CPU, memory and throttling
  # panels), found through the apiserver (role node: the node's address and kubelet port); the kubelet verifies the
  # apiserver's kubelet client certificate, Prometheus the kubelet's serving certificate
  - job_name: kubelet-cadvisor
    scheme: https
    metrics_path: /metrics/cadvisor
    tls_config:
      ca_file: $RUN_DIR/pki/ca.crt
      cert_file: $RUN_DIR/pki/kubelet-client.crt
      key_file: $RUN_DIR/pki/kubelet-client.key
    kubernetes_sd_configs:
      - role: node
        api_server: https://$API_HOST:$APISERVER_PORT
        authorization:
          credentials_file: $RUN_DIR/pki/admin.token
        tls_config:
          ca_file: $RUN_DIR/pki/ca.crt
    relabel_configs:
      - source_labels: [__meta_kubernetes_node_name]
        target_label: node
PROM
}

start_prometheus() { # mbin tmpfs
	write_prometheus_config
	proc_start prometheus "$1/prometheus" --config.file="$RUN_DIR/prometheus/prometheus.yml" \
		--storage.tsdb.path="$2/prometheus" --web.listen-address="127.0.0.1:$PROM_PORT" \
		--web.enable-lifecycle --storage.tsdb.retention.time=2h
}

# ---- the real node's cluster services: CoreDNS, metrics-server, prometheus-adapter ---------------------------------
CLUSTER_DNS_IP=10.0.0.10

# A Service in kube-system without a selector, whose endpoint is a process on the node's address: the apiserver
# (aggregation, through the ClusterIP) and pods (through kube-proxy) reach it as they would reach pods. The
# endpoint is a v1 Endpoints object, not an EndpointSlice: the aggregator's availability check reads Endpoints, and
# the controller-manager mirrors them into the EndpointSlice that kube-proxy reads.
host_service() { # name cluster_ip(or "") port:target_port:protocol...
	local name="$1" ip="$2" ports="" endpoint_ports="" item port target proto
	shift 2
	for item in "$@"; do
		IFS=: read -r port target proto <<<"$item"
		ports+="    - {name: ${proto,,}-$port, port: $port, targetPort: $target, protocol: $proto}"$'\n'
		endpoint_ports+="      - {name: ${proto,,}-$port, port: $target, protocol: $proto}"$'\n'
	done
	kctl apply -f - 2> >(grep -v 'v1 Endpoints is deprecated' >&2) >/dev/null <<YAML
apiVersion: v1
kind: Service
metadata: {name: $name, namespace: kube-system, labels: {modelapi.io/cluster: harness}}
spec:
  ${ip:+clusterIP: $ip}
  ports:
$ports
---
apiVersion: v1
kind: Endpoints
metadata: {name: $name, namespace: kube-system, labels: {modelapi.io/cluster: harness}}
subsets:
  - addresses: [{ip: $NODE_IP}]
    ports:
$endpoint_ports
YAML
}

api_service() { # group version service: an APIService served by a host_service (port 443), verified by our CA
	kctl apply -f - >/dev/null <<YAML
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {name: $2.$1, labels: {modelapi.io/cluster: harness}}
spec:
  group: $1
  version: $2
  service: {name: $3, namespace: kube-system, port: 443}
  caBundle: $(base64 -w0 "$RUN_DIR/pki/ca.crt")
  groupPriorityMinimum: 100
  versionPriority: 100
YAML
}

metrics_up() { # mbin; after the real node is Ready
	local mbin="$1" pki="$RUN_DIR/pki" ports
	mapfile -t ports < <(free_ports 5)
	local dns_health=${ports[0]} dns_ready=${ports[1]} ms_port=${ports[2]} adapter_port=${ports[3]}
	mkdir -p "$RUN_DIR/coredns"
	cat >"$RUN_DIR/coredns/Corefile" <<COREFILE
# cluster DNS for the real node's pods: Services and pods of cluster.local, from the apiserver; no upstream (pods
# reach nothing outside this machine)
.:53 {
    bind $NODE_IP
    errors
    health 127.0.0.1:$dns_health
    ready 127.0.0.1:$dns_ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $RUN_DIR/kubeconfig modelapi-e2e
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    cache 5
}
COREFILE
	proc_start coredns "$mbin/coredns" -conf "$RUN_DIR/coredns/Corefile"
	host_service kube-dns "$CLUSTER_DNS_IP" 53:53:UDP 53:53:TCP
	# the aggregated API servers: delegated authentication and authorization through the apiserver, which they
	# trust as the front proxy (the request-header CA and name it presents)
	local delegated=(--authentication-kubeconfig="$RUN_DIR/kubeconfig" --authorization-kubeconfig="$RUN_DIR/kubeconfig"
		--requestheader-client-ca-file="$pki/ca.crt" --requestheader-allowed-names=front-proxy-client
		--tls-cert-file="$pki/aggregated.crt" --tls-private-key-file="$pki/aggregated.key" --bind-address="$NODE_IP")
	proc_start metrics-server "$mbin/metrics-server" --kubeconfig="$RUN_DIR/kubeconfig" --secure-port="$ms_port" \
		"${delegated[@]}" --kubelet-use-node-status-port --kubelet-preferred-address-types=InternalIP \
		--kubelet-certificate-authority="$pki/ca.crt" --kubelet-client-certificate="$pki/kubelet-client.crt" \
		--kubelet-client-key="$pki/kubelet-client.key" --metric-resolution=10s --kubelet-request-timeout=5s
	host_service metrics-server "" "443:$ms_port:TCP"
	api_service metrics.k8s.io v1beta1 metrics-server
	proc_start prometheus-adapter "$mbin/prometheus-adapter" --lister-kubeconfig="$RUN_DIR/kubeconfig" \
		--secure-port="$adapter_port" "${delegated[@]}" --prometheus-url="http://127.0.0.1:$PROM_PORT" \
		--config="$ROOT/charts/modelapi/files/prometheus-adapter-rules.yaml" --metrics-relist-interval=10s
	host_service prometheus-adapter "" "443:$adapter_port:TCP"
	api_service custom.metrics.k8s.io v1beta1 prometheus-adapter
	api_service custom.metrics.k8s.io v1beta2 prometheus-adapter
	proc_wait_for coredns 30 curl -sf "http://127.0.0.1:$dns_ready/ready"
	proc_wait_for metrics-server 90 kctl wait --for=condition=Available apiservice/v1beta1.metrics.k8s.io --timeout=5s
	proc_wait_for prometheus-adapter 90 kctl wait --for=condition=Available apiservice/v1beta2.custom.metrics.k8s.io --timeout=5s
	cat >>"$RUN_DIR/node/env" <<ENV
CLUSTER_DNS_IP=$CLUSTER_DNS_IP
METRICS_BIN=$mbin
ENV
}
