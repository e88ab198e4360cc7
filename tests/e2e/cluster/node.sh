# shellcheck shell=bash
# A real node for the local cluster (e2e tier B), sourced by cluster.sh when MODELAPI_NODE=real:
#   containerd + runc + CNI plugins (Debian) -> kubelet and kube-proxy (built from the wrapper module in gomod-node/)
#   -> a local OCI registry (CNCF distribution, built from the Go module proxy) on the bridge address -> the images
#   (pause, and the project's Dockerfile targets `runtime`, `operator` and `runtime-gpu`, built by buildah on a
#   debootstrap-made base) pushed to it; containerd pulls every image from it, as a cluster does -> a second S3
#   gateway on the bridge address, so pods reach the same bucket -> a Gateway API data plane (Traefik, gateway.sh)
#   on the bridge address.
#
# Addresses: pods get 10.245.0.0/24 on the bridge mapi0 (gateway 10.245.0.1, which is also the node's address);
# the Service range is routed into that bridge; a FORWARD rule drops anything from the pod range that would leave
# through another interface; pods resolve cluster names only (CoreDNS on the bridge address, metrics.sh). So pod and
# Service traffic stays on this machine.
# Everything `node_up` makes is undone by `node_down`: processes (by saved PID, through cluster.sh), pod sandboxes
# (through CRI, so CNI releases veths and addresses), mounts under the run dir, the bridge, routes, iptables chains
# and the sysctls it changed.

NODE_NAME=modelapi-node-0
NODE_BRIDGE=mapi0
NODE_POD_CIDR=10.245.0.0/24
NODE_IP=10.245.0.1
NODE_CLUSTER_CIDR=10.245.0.0/16
CRICTL_VERSION=v1.34.0
REGISTRY_VERSION=v3.1.2
NODE_GOMOD_DIR="$HERE/gomod-node"
# shellcheck disable=SC2034 # cluster.sh installs them
NODE_PACKAGES=(containerd:containerd runc:runc containernetworking-plugins:/usr/lib/cni/bridge iptables:iptables
	conntrack:conntrack buildah:buildah debootstrap:debootstrap gcc:gcc libc6-dev:/usr/lib/x86_64-linux-gnu/libc.a
	iproute2:ip)
# The registry: plain HTTP on the bridge address (the node's own address: containerd and pods reach it, nothing
# outside this machine does); a fixed port, since only one real-node cluster runs per machine.
NODE_REGISTRY=$NODE_IP:5000
# The image references pods use (the operator is started with MODELAPI_OPERATOR_CPU_IMAGE=$NODE_RUNTIME_IMAGE); each
# is built under a local name in buildah's storage and pushed to the registry under the reference.
NODE_RUNTIME_IMAGE=$NODE_REGISTRY/modelapi/runtime:dev
NODE_OPERATOR_IMAGE=$NODE_REGISTRY/modelapi/operator:dev
NODE_RUNTIME_GPU_IMAGE=$NODE_REGISTRY/modelapi/runtime-gpu:dev
NODE_PAUSE_IMAGE=$NODE_REGISTRY/modelapi/pause:3.10
NODE_PAUSE_LOCAL=localhost/modelapi/pause:3.10
NODE_BASE_IMAGE=localhost/modelapi/base:bookworm
# shellcheck source=SCRIPTDIR/lib/net.sh
source "$HERE/lib/net.sh"
# shellcheck source=SCRIPTDIR/gateway.sh
source "$HERE/gateway.sh"
NODE_GUARD_CHAIN=MODELAPI-NODE

node_capable() { # can this machine run a real node? If not, say why on stdout and return 1
	local why=""
	if [[ $(id -u) != 0 ]]; then
		why="a real node needs root (namespaces, mounts, iptables)"
	elif [[ ! -d /proc/sys/net/bridge ]]; then
		why="a real node needs br_netfilter (no /proc/sys/net/bridge)"
	elif ! grep -qw overlay /proc/filesystems; then
		why="a real node needs overlayfs (not in /proc/filesystems)"
	elif ! command -v apt-get >/dev/null && ! command -v containerd >/dev/null; then
		why="a real node needs containerd, and there is no apt-get to install it"
	fi
	[[ -z $why ]] || {
		echo "$why"
		return 1
	}
}

node_preflight() { # node_capable, and no other real-node cluster on this machine; dies with the reason
	local why
	why="$(node_capable)" || die "$why"
	if ip link show "$NODE_BRIDGE" >/dev/null 2>&1; then
		die "bridge $NODE_BRIDGE exists already: another real-node cluster is up (one per machine); run its cluster.sh down"
	fi
}

# ---- binaries: kubelet, kube-proxy, crictl (cached like the control plane's, under their own key) --------------
node_bin_dir() {
	cache_bin_dir node- "k8s=$K8S_VERSION crictl=$CRICTL_VERSION go=$GO_VERSION" "$NODE_GOMOD_DIR/go.mod" "$NODE_GOMOD_DIR/go.sum"
}

node_builder() { # stage missing...: kubelet and kube-proxy from gomod-node/, crictl (cached_build's builder)
	local stage="$1"
	shift
	if one_of kubelet "$@" || one_of kube-proxy "$@"; then build_k8s "$stage" "$NODE_GOMOD_DIR" kubelet kube-proxy; fi
	if one_of crictl "$@"; then
		go_install crictl sigs.k8s.io/cri-tools/cmd/crictl "$CRICTL_VERSION" \
			"-X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION" "$stage"
	fi
}

node_build() { cached_build "$(node_bin_dir)" node_builder kubelet kube-proxy crictl; }

# The registry (cmd/registry of github.com/distribution/distribution/v3), cached under a key of its own
registry_bin_dir() { cache_bin_dir registry- "registry=$REGISTRY_VERSION go=$GO_VERSION"; }

registry_builder() { # stage registry
	go_install registry github.com/distribution/distribution/v3/cmd/registry "$REGISTRY_VERSION" \
		"-X github.com/distribution/distribution/v3/version.version=$REGISTRY_VERSION" "$1"
}

registry_build() { cached_build "$(registry_bin_dir)" registry_builder registry; }

# ---- images: base (debootstrap), pause (pause.c), runtime and operator (the project's Dockerfile), by buildah ------
node_buildah() { buildah --root "$CACHE_ROOT/buildah/root" --runroot "$CACHE_ROOT/buildah/run" --storage-driver overlay "$@"; }

# The base: Debian bookworm (Python 3.11) made by debootstrap from the machine's own apt sources, with the
# machine's CA certificates and pip configuration, so that `pip install` in the Dockerfile's build stages works
# wherever the host's does. It stands in for python:3.11-slim (the Dockerfile's PYTHON_IMAGE build argument).
node_base_image() {
	local dir="$CACHE_ROOT/node-base/bookworm" mirror
	if node_buildah inspect --type image "$NODE_BASE_IMAGE" >/dev/null 2>&1; then return; fi
	if [[ ! -f "$dir/base.tar" ]]; then
		mirror="$(awk '/^URIs:/ {print $2; exit} /^deb / {print $2; exit}' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null | head -1)"
		[[ -n $mirror ]] || mirror=http://deb.debian.org/debian
		log "making the base image with debootstrap (bookworm, python3) from $mirror (about 1-3 min)"
		rm -rf "$dir" && mkdir -p "$dir"
		debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,python-is-python3,ca-certificates \
			bookworm "$dir/rootfs" "$mirror" >"$dir/debootstrap.log" 2>&1 ||
			{
				tail -20 "$dir/debootstrap.log" >&2
				die "debootstrap failed (log: $dir/debootstrap.log)"
			}
		if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
			cp /usr/local/share/ca-certificates/*.crt "$dir/rootfs/usr/local/share/ca-certificates/"
			chroot "$dir/rootfs" update-ca-certificates >/dev/null 2>&1
		fi
		if [[ -f /etc/pip.conf ]]; then cp /etc/pip.conf "$dir/rootfs/etc/pip.conf"; fi
		rm -rf "$dir/rootfs/var/lib/apt/lists/"* "$dir/rootfs/var/cache/apt/"*.bin "$dir/rootfs/usr/share/doc" \
			"$dir/rootfs/usr/share/man"
		tar -C "$dir/rootfs" --numeric-owner -cf "$dir/base.tar.tmp" . && mv "$dir/base.tar.tmp" "$dir/base.tar"
		rm -rf "$dir/rootfs"
	fi
	local c
	c="$(node_buildah from scratch)"
	node_buildah add "$c" "$dir/base.tar" / >/dev/null
	node_buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd python3 "$c"
	node_buildah commit -q "$c" "$NODE_BASE_IMAGE" >/dev/null
	node_buildah rm "$c" >/dev/null
}

node_pause_image() { # Kubernetes' own pause.c (from the module zip), linked statically; the sandbox image
	local out="$1" dir src
	[[ -f "$out" ]] && return
	dir="$(cd "$NODE_GOMOD_DIR" && GOFLAGS=-mod=mod go list -m -f '{{.Dir}}' k8s.io/kubernetes)"
	src="$dir/build/pause/linux/pause.c"
	[[ -f $src ]] || die "pause.c not found in the k8s.io/kubernetes module ($src)"
	local work c
	work="$(mktemp -d)"
	gcc -Os -static -Wall -Werror -DVERSION="${NODE_PAUSE_IMAGE##*:}-modelapi" -o "$work/pause" "$src"
	c="$(node_buildah from scratch)"
	node_buildah copy "$c" "$work/pause" /pause >/dev/null
	node_buildah config --entrypoint '["/pause"]' --user 65535:65535 "$c"
	node_buildah commit -q "$c" "$NODE_PAUSE_LOCAL" >/dev/null
	node_buildah rm "$c" >/dev/null
	node_buildah push -q "$NODE_PAUSE_LOCAL" "docker-archive:$out.tmp:$NODE_PAUSE_LOCAL" && mv "$out.tmp" "$out"
	rm -rf "$work"
}

# The build context of the project's images, staged into dir: the files the Dockerfile's COPY lines take (less caches
# and local models), with README.md replaced by a fixed text. README.md is in an image only as the wheel's long
# description (pyproject.toml's readme); with the fixed text there, an edit of the docs changes no image, so it
# rebuilds none (runtime-gpu's is about 3 GiB).
NODE_IMAGE_README="# modelapi

The image of the real-node test tier: the package's long description (README.md) is left out of it."
node_image_context() { # dir
	(cd "$ROOT" && find Dockerfile .dockerignore pyproject.toml constraints.txt operator runtime -type f \
		! -path '*/__pycache__/*' ! -name '*.pyc' ! -path '*/.mypy_cache/*' ! -path '*/.pytest_cache/*' \
		! -name '*.onnx' -print0 | tar --null -T - -cf -) | tar -C "$1" -xf -
	printf '%s\n' "$NODE_IMAGE_README" >"$1/README.md"
}

node_image_key() { # dir: a staged context; prints the key (16 hex digits) of the images built from it, a hash of
	# exactly the files it holds and of the base image
	(cd "$1" && {
		echo "base=$NODE_BASE_IMAGE"
		find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
	} | sha256sum | cut -c1-16)
}

node_image() { # target: a target of the project's Dockerfile (runtime, operator, runtime-gpu), rebuilt when
	# its staged build context changes; prints the path of its docker-archive tarball
	local target="$1" images="$CACHE_ROOT/node-images" ctx hash out local_name="localhost/modelapi/$1:dev"
	ctx="$(mktemp -d)"
	node_image_context "$ctx"
	hash="$(node_image_key "$ctx")"
	out="$images/$target-$hash.tar"
	if [[ -f "$out" ]]; then
		rm -rf "$ctx"
		touch "$out" # most recently used: kept when older ones go (below)
		echo "$out"
		return
	fi
	mkdir -p "$images"
	node_base_image
	log "building the $target image from the project's Dockerfile with buildah (target $target, base $NODE_BASE_IMAGE; about 1-3 min)"
	# exported by image ID: another checkout may build under the same local name at the same time
	(cd "$ctx" && node_buildah bud --isolation chroot --layers=false --pull=never --target "$target" \
		--build-arg "PYTHON_IMAGE=$NODE_BASE_IMAGE" --iidfile "$out.iid" -t "$local_name" -f Dockerfile . \
		>"$images/build-$target.log" 2>&1) ||
		{
			rm -rf "$ctx"
			tail -30 "$images/build-$target.log" >&2
			die "buildah bud failed (log: $images/build-$target.log)"
		}
	rm -rf "$ctx"
	node_buildah push -q "$(cat "$out.iid")" "docker-archive:$out.tmp:$local_name" && mv "$out.tmp" "$out"
	# the tarball is the cache: the image leaves buildah's storage (a rebuild would otherwise leave the old one there,
	# about 3 GiB for runtime-gpu), and only this target's NODE_IMAGES_KEEP most recently used tarballs stay, so
	# checkouts of different commits (another worktree, a CI clone) keep their images instead of deleting each
	# other's; the name pattern is exact, so `runtime` never matches `runtime-gpu`'s tarballs
	node_buildah rmi -f "$(cat "$out.iid")" >/dev/null 2>&1 || true
	rm -f "$out.iid"
	find "$images" -maxdepth 1 -regextype posix-extended -regex ".*/$target-[0-9a-f]{16}\.tar" -printf '%T@ %p\n' |
		sort -rn | tail -n +"$((${NODE_IMAGES_KEEP:-3} + 1))" | cut -d' ' -f2- | xargs -r rm -f
	echo "$out"
}

# The Dockerfile targets pods use: runtime-gpu (about 3 GiB, only test_gpu_image.py pulls it) unless
# MODELAPI_NODE_GPU_IMAGE=0 (what the e2e tests' `up` sets; the tests that need it push it then: `cluster.sh images
# runtime-gpu`)
node_image_targets() {
	printf '%s\n' runtime operator
	if [[ ${MODELAPI_NODE_GPU_IMAGE:-1} != 0 ]]; then echo runtime-gpu; fi
}

node_image_ref() { echo "$NODE_REGISTRY/modelapi/$1:dev"; } # target -> the reference pods use

# Every image pods use (or the targets named), built (or found in the cache) and pushed to the running cluster's
# registry: what `cluster.sh images` (make images) and `up` do. Pushed from the cached tarballs (loaded into
# buildah's storage by image ID, so another checkout's build under the same local name cannot interfere),
# uncompressed: the layers stay on this machine, and gzip would cost more time than the copy.
node_build_images() { # [target...]: prints TARBALL=REFERENCE for each image (the pause image too when none is named)
	local pause_tar="$CACHE_ROOT/node-images/pause-${NODE_PAUSE_IMAGE##*:}.tar" targets target tar
	mkdir -p "$CACHE_ROOT/node-images"
	if (($# == 0)); then
		node_pause_image "$pause_tar"
		echo "$pause_tar=$NODE_PAUSE_IMAGE"
		mapfile -t targets < <(node_image_targets)
	else
		targets=("$@")
	fi
	for target in "${targets[@]}"; do
		case $target in runtime | operator | runtime-gpu) ;; *) die "no image target '$target' (runtime, operator, runtime-gpu)" ;; esac
		tar="$(node_image "$target")" || die "could not build the $target image"
		echo "$tar=$(node_image_ref "$target")"
	done
}

# shellcheck disable=SC2120 # cluster.sh's `images TARGET...` passes targets
node_push_images() { # [target...]
	local images tar ref id t0=$SECONDS
	images="$(node_build_images "$@")" || die "could not build the images"
	for tar in $images; do
		ref="${tar#*=}" tar="${tar%%=*}"
		id="$(node_buildah pull -q "docker-archive:$tar")" || die "could not load $tar into buildah's storage"
		node_buildah push -q --tls-verify=false --disable-compression "$id" "docker://$ref" >/dev/null ||
			die "could not push $ref to the registry"
		log "pushed $ref ($(basename "$tar"))"
	done
	log "images in the registry $NODE_REGISTRY after $((SECONDS - t0)) s"
}

node_registry_up() { # registry_bin: the registry on the bridge address, its storage in the run directory
	local r="$RUN_DIR/node/registry"
	mkdir -p "$r/data"
	cat >"$r/config.yml" <<YAML
version: 0.1
log:
  level: warn
  accesslog: {disabled: true}
storage:
  filesystem: {rootdirectory: $r/data}
  delete: {enabled: true}
http:
  addr: $NODE_REGISTRY
  secret: $(openssl rand -hex 16)
YAML
	# no OpenTelemetry exporter: nothing collects traces here
	proc_start registry env OTEL_TRACES_EXPORTER=none "$1/registry" serve "$r/config.yml"
	proc_wait_for registry 30 curl -sf "http://$NODE_REGISTRY/v2/"
}

# ---- up / down ------------------------------------------------------------------------------------------------------
node_write_configs() { # bin svc_cidr
	local n="$RUN_DIR/node" pki="$RUN_DIR/pki"
	mkdir -p "$n/containerd" "$n/cni/net.d" "$n/kubelet" "$n/pod-logs"
	cat >"$n/containerd/config.toml" <<TOML
version = 2
root = "$n/containerd/root"
state = "$n/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "$n/containerd/containerd.sock"
[ttrpc]
  address = "$n/containerd/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$n/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$NODE_PAUSE_IMAGE"
  # this machine's root lacks CAP_SYS_RESOURCE: a negative oom_score_adj (kubelet asks -998 for sandboxes, -997 for
  # Guaranteed pods) would fail runc's container setup, so containerd clamps it to its own score instead
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$n/cni/net.d"
  # registries: one directory per host with its hosts.toml
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$n/containerd/certs.d"
TOML
	mkdir -p "$n/containerd/certs.d/$NODE_REGISTRY"
	cat >"$n/containerd/certs.d/$NODE_REGISTRY/hosts.toml" <<TOML
# the harness's registry speaks plain HTTP (it listens on the node's bridge address only)
server = "http://$NODE_REGISTRY"
[host."http://$NODE_REGISTRY"]
  capabilities = ["pull", "resolve"]
TOML
	cat >"$n/cni/net.d/10-modelapi.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "modelapi",
  "plugins": [
    {"type": "bridge", "bridge": "$NODE_BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$n/cni/ipam",
              "ranges": [[{"subnet": "$NODE_POD_CIDR", "gateway": "$NODE_IP"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
JSON
	cat >"$n/kubelet/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: AlwaysAllow}
# a serving certificate from the cluster CA, so metrics-server verifies the kubelet it scrapes
tlsCertFile: $pki/kubelet-serving.crt
tlsPrivateKeyFile: $pki/kubelet-serving.key
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$n/containerd/containerd.sock
failSwapOn: false
podCIDR: $NODE_POD_CIDR
resolvConf: ""
# CoreDNS (metrics.sh) behind the kube-dns Service: pods resolve <service>.<namespace>.svc.cluster.local and
# nothing outside the cluster (no upstream)
clusterDNS: [$CLUSTER_DNS_IP]
clusterDomain: cluster.local
podLogsDir: $n/pod-logs
maxPods: 40
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
nodeStatusUpdateFrequency: 5s
YAML
	cat >"$n/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $RUN_DIR/kube-proxy.kubeconfig}
mode: iptables
hostnameOverride: $NODE_NAME
bindAddress: $NODE_IP
clusterCIDR: $NODE_CLUSTER_CIDR
healthzBindAddress: 127.0.0.1:$KUBE_PROXY_HEALTHZ_PORT
metricsBindAddress: 127.0.0.1:$KUBE_PROXY_METRICS_PORT
nodePortAddresses: ["$NODE_IP/32"]
conntrack: {maxPerCore: 0}
iptables: {syncPeriod: 10s, minSyncPeriod: 0s}
YAML
}

node_network_up() { # svc_cidr; called by cluster.sh up before the apiserver, which listens on the bridge address
	local n="$RUN_DIR/node"
	mkdir -p "$n"
	net_bridge_up "$n" "$NODE_BRIDGE" "$NODE_IP/${NODE_POD_CIDR#*/}"
	# Service addresses go into the bridge, never out of the default route (kube-proxy DNATs them to pods)
	net_route_up "$n" "$1" "$NODE_BRIDGE"
	net_sysctl "$n" net.ipv4.ip_forward 1
	net_sysctl "$n" net.bridge.bridge-nf-call-iptables 1
	# pod traffic may reach the bridge (pods, the node's address); nothing from the pod range leaves elsewhere
	net_guard_up "$NODE_GUARD_CHAIN" "$NODE_POD_CIDR" "$NODE_BRIDGE"
	net_netns_list >"$n/netns.before"
}

node_up() { # bin_dir; called by cluster.sh up after the control plane, Prometheus and S3 are up (and the bridge)
	local cbin="$1" nbin rbin gbin n="$RUN_DIR/node" t0=$SECONDS
	nbin="$(node_build)"
	rbin="$(registry_build)"
	gbin="$(gateway_build)"
	mkdir -p "$n"
	node_registry_up "$rbin"
	# shellcheck disable=SC2119 # no targets: every image pods use
	node_push_images
	local ports
	mapfile -t ports < <(free_ports 4)
	KUBELET_PORT=${ports[0]} KUBELET_HEALTHZ_PORT=${ports[1]} KUBE_PROXY_HEALTHZ_PORT=${ports[2]}
	KUBE_PROXY_METRICS_PORT=${ports[3]}
	node_write_configs
	proc_start containerd containerd --config "$n/containerd/config.toml"
	proc_wait_for containerd 30 ctr --address "$n/containerd/containerd.sock" version
	# --containerd: cAdvisor's own containerd client (not the CRI endpoint), which names the containers of
	# /metrics/cadvisor (pod, namespace, container labels); without it those series carry a cgroup path only
	proc_start kubelet "$nbin/kubelet" --config="$n/kubelet/config.yaml" --kubeconfig="$RUN_DIR/kubelet.kubeconfig" \
		--root-dir="$n/kubelet/root" --cert-dir="$n/kubelet/pki" --hostname-override="$NODE_NAME" \
		--node-ip="$NODE_IP" --node-labels=modelapi.io/node=real --v=1 --containerd="$n/containerd/containerd.sock"
	proc_start kube-proxy "$nbin/kube-proxy" --config="$n/kube-proxy.yaml" --v=1
	proc_wait_for kubelet 120 kctl wait --for=condition=Ready "node/$NODE_NAME" --timeout=5s
	proc_wait_for kube-proxy 60 curl -sf "http://127.0.0.1:$KUBE_PROXY_HEALTHZ_PORT/healthz"
	# the same bucket, for pods: a second gateway on the node's address over the same posix directory
	proc_start versitygw-node "$cbin/versitygw" --access "$S3_ACCESS_KEY" --secret "$S3_SECRET_KEY" --region "$S3_REGION" \
		--port "$NODE_IP:$S3_PORT" posix "$RUN_DIR/s3"
	proc_wait_for versitygw-node 30 curl -s -o /dev/null "http://$NODE_IP:$S3_PORT"
	gateway_up "$gbin"
	cat >"$n/env" <<ENV
MODELAPI_NODE=real
NODE_NAME=$NODE_NAME
NODE_IP=$NODE_IP
NODE_POD_CIDR=$NODE_POD_CIDR
NODE_RUNTIME_IMAGE=$NODE_RUNTIME_IMAGE
NODE_OPERATOR_IMAGE=$NODE_OPERATOR_IMAGE
NODE_RUNTIME_GPU_IMAGE=$NODE_RUNTIME_GPU_IMAGE
NODE_REGISTRY=$NODE_REGISTRY
NODE_S3_ENDPOINT_URL=http://$NODE_IP:$S3_PORT
NODE_BIN=$nbin
CONTAINERD_ADDRESS=$n/containerd/containerd.sock
CRI_ENDPOINT=unix://$n/containerd/containerd.sock
$(cat "$n/gateway/env")
ENV
	log "real node $NODE_NAME Ready in $((SECONDS - t0)) s (images from the registry $NODE_REGISTRY)"
}

# Before the processes stop: every pod sandbox is stopped and removed through CRI (CNI DEL releases the veth and
# the address), while kubelet no longer restarts them.
node_remove_pods() {
	local n="$RUN_DIR/node" crictl
	[[ -S "$n/containerd/containerd.sock" ]] || return 0
	proc_stop kube-proxy || true # one that outlived SIGKILL: down's stop of every process reports it
	proc_stop kubelet || true
	crictl="$(sed -n 's/^NODE_BIN=//p' "$n/env" 2>/dev/null || true)/crictl"
	if [[ -x $crictl ]] && proc_alive containerd; then
		log "removing the real node's pods"
		"$crictl" --runtime-endpoint "unix://$n/containerd/containerd.sock" --timeout 30s rmp --all --force >/dev/null 2>&1 || true
	fi
}

node_down() { # after every process is stopped
	local n="$RUN_DIR/node" mnt
	[[ -d $n ]] || return 0
	# shims of containers that outlived containerd (a crash, a kill -9), waited for; then what is left in their cgroups
	local pid shims="containerd-shim-runc-v2 .*-address $n/containerd/containerd.sock"
	for pid in $(pgrep -f "$shims" 2>/dev/null); do
		kill -KILL "$pid" 2>/dev/null || true
	done
	wait_until 10 not pgrep -f "$shims" || log "WARNING: containerd shims of $n still run 10 s after SIGKILL"
	local cg
	for cg in /sys/fs/cgroup/*/kubepods; do
		[[ -d $cg ]] || continue
		while read -r pid; do kill -KILL "$pid" 2>/dev/null || true; done < <(find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null)
	done
	sleep 0.5
	for cg in /sys/fs/cgroup/*/kubepods; do
		if [[ -d $cg ]]; then find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true; fi
	done
	# mounts under the node's directories (overlay snapshots, emptyDirs, shm), deepest first
	while read -r mnt; do
		umount -l "$mnt" 2>/dev/null || true
	done < <(awk -v p="$n/" 'index($2, p) == 1 {print $2}' /proc/self/mounts | sort -r)
	# network namespaces CNI made for our pods that CRI did not remove (only the ones created after up), the bridge,
	# the route, the guard chain
	net_netns_down "$n"
	net_down "$n" "$NODE_GUARD_CHAIN"
	# kube-proxy's chains (KUBE-*), and the CNI plugins' (CNI-*), in the filter and nat tables
	local bin
	bin="$(sed -n 's/^NODE_BIN=//p' "$n/env" 2>/dev/null || true)"
	if [[ -x $bin/kube-proxy ]]; then "$bin/kube-proxy" --cleanup --v=0 >/dev/null 2>&1 || true; fi
	net_flush_chains
	net_sysctls_restore "$n"
}
