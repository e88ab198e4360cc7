# shellcheck shell=bash
# A Gateway API data plane for the real node (e2e tier B), sourced by node.sh: Traefik (Kubernetes Gateway provider),
# built from the Go module proxy and run as a host process with the harness's API credentials. It watches the
# GatewayClass `modelapi` (made here) and every Gateway and HTTPRoute of that class (it needs Gateway API v1.4's
# standard CRDs: it watches BackendTLSPolicy v1, and never syncs without it); its listeners are entry points on
# the node's bridge address, so the host and pods reach them, nothing outside this machine does. It sends requests
# to the pods behind a route's Services directly (their addresses on the bridge), with the route's weights.
#
# A Gateway's listener port must be one of the entry points' ports: GATEWAY_HTTP_PORT (plain HTTP) or
# GATEWAY_HTTPS_PORT (HTTPS; the listener's certificateRefs name the Secret Traefik serves).

# v3.7 replaces github.com/abbot/go-http-auth with a fork version the module proxy does not serve (403); v3.6.12's
# replacement is served.
GATEWAY_VERSION=v3.6.12
GATEWAY_MODULE=github.com/traefik/traefik/v3
GATEWAY_CLASS=modelapi
GATEWAY_CONTROLLER=traefik.io/gateway-controller
GATEWAY_HTTP_PORT=80
GATEWAY_HTTPS_PORT=443

gateway_bin_dir() { cache_bin_dir gateway- "traefik=$GATEWAY_VERSION go=$GO_VERSION"; }

# Traefik's go.mod has replace directives, so `go install pkg@version` refuses it: the module is downloaded and built
# inside its own (copied, writable) directory, where the replacements apply.
gateway_builder() { # stage traefik (cached_build's builder)
	local stage="$1" dir
	log "building traefik $GATEWAY_VERSION (cold: about 10-20 min on 2 cores, see the harness README)"
	dir="$(go mod download -json "$GATEWAY_MODULE@$GATEWAY_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')"
	[[ -d $dir ]] || die "could not download $GATEWAY_MODULE@$GATEWAY_VERSION"
	cp -r "$dir" "$stage/src" && chmod -R u+w "$stage/src"
	(cd "$stage/src" && go build -v -trimpath -o "$stage/traefik" \
		-ldflags "-s -w -X $GATEWAY_MODULE/pkg/version.Version=$GATEWAY_VERSION" ./cmd/traefik 2>&1) |
		progress "traefik $GATEWAY_VERSION"
}

gateway_build() { cached_build "$(gateway_bin_dir)" gateway_builder traefik; }

gateway_up() { # bin_dir; after kube-proxy (the Gateway API CRDs were applied with the control plane)
	local g="$RUN_DIR/node/gateway" ports
	mkdir -p "$g"
	mapfile -t ports < <(free_ports 1)
	GATEWAY_PING_PORT=${ports[0]}
	kctl apply -f - >/dev/null <<YAML
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata:
  name: $GATEWAY_CLASS
spec:
  controllerName: $GATEWAY_CONTROLLER
  description: Traefik $GATEWAY_VERSION on the real node's bridge address
YAML
	# the admin kubeconfig (Traefik reads KUBECONFIG): credentials stay off the command line
	proc_start traefik env KUBECONFIG="$RUN_DIR/kubeconfig" "$1/traefik" \
		--global.checkNewVersion=false --global.sendAnonymousUsage=false --log.level=INFO \
		--entryPoints.web.address="$NODE_IP:$GATEWAY_HTTP_PORT" \
		--entryPoints.websecure.address="$NODE_IP:$GATEWAY_HTTPS_PORT" \
		--entryPoints.ping.address="127.0.0.1:$GATEWAY_PING_PORT" --ping=true --ping.entryPoint=ping \
		--providers.kubernetesgateway=true \
		--providers.kubernetesgateway.statusAddress.ip="$NODE_IP" \
		--providers.kubernetesgateway.throttleDuration=0s
	proc_wait_for traefik 60 curl -sf "http://127.0.0.1:$GATEWAY_PING_PORT/ping"
	cat >"$g/env" <<ENV
GATEWAY_CLASS=$GATEWAY_CLASS
GATEWAY_ADDRESS=$NODE_IP
GATEWAY_HTTP_PORT=$GATEWAY_HTTP_PORT
GATEWAY_HTTPS_PORT=$GATEWAY_HTTPS_PORT
GATEWAY_VERSION=traefik-$GATEWAY_VERSION
ENV
}
