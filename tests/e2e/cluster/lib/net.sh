# shellcheck shell=bash
# The real node's networking, sourced by node.sh: a bridge with the node's address, a route, sysctls, an iptables
# guard chain, and their removal. What each function makes is written into a state directory, so that net_down undoes
# exactly that (and the sysctls get their old values back).

# net_sysctl STATE_DIR KEY VALUE: set a sysctl, remembering its first old value for net_down
net_sysctl() {
	local old
	old="$(sysctl -n "$2")"
	grep -q "^$2=" "$1/sysctl.saved" 2>/dev/null || echo "$2=$old" >>"$1/sysctl.saved"
	sysctl -qw "$2=$3"
}

# net_bridge_up STATE_DIR BRIDGE ADDRESS/PREFIX: a bridge with that address, up
net_bridge_up() {
	ip link add "$2" type bridge
	ip addr add "$3" dev "$2"
	ip link set "$2" up
	echo "$2" >"$1/bridge"
}

# net_route_up STATE_DIR CIDR DEVICE: CIDR routed into DEVICE
net_route_up() {
	ip route add "$2" dev "$3"
	echo "$2" >"$1/service-route"
}

# net_guard_up CHAIN SOURCE_CIDR BRIDGE: drop forwarded traffic from SOURCE_CIDR that would leave through another
# interface than BRIDGE (a chain of its own, first in FORWARD)
net_guard_up() {
	iptables -w -N "$1"
	iptables -w -A "$1" -s "$2" ! -o "$3" -j DROP
	iptables -w -I FORWARD 1 -j "$1"
}

# net_netns_list: the network namespaces under /var/run/netns, sorted
net_netns_list() { find /var/run/netns -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | sort || true; }

# net_netns_down STATE_DIR: delete the CNI network namespaces (cni-*) made since STATE_DIR/netns.before was written
net_netns_down() {
	local ns
	[[ -f $1/netns.before ]] || return 0
	for ns in $(net_netns_list | comm -13 "$1/netns.before" -); do
		if [[ $ns == cni-* ]]; then ip netns delete "$ns" 2>/dev/null || true; fi
	done
}

# net_down STATE_DIR CHAIN: remove the bridge, the route and the guard chain made above
net_down() {
	if [[ -f $1/bridge ]]; then
		ip link delete "$(cat "$1/bridge")" 2>/dev/null || true
	fi
	if [[ -f $1/service-route ]]; then ip route delete "$(cat "$1/service-route")" 2>/dev/null || true; fi
	if iptables -w -S "$2" >/dev/null 2>&1; then
		iptables -w -D FORWARD -j "$2" 2>/dev/null || true
		iptables -w -F "$2" && iptables -w -X "$2"
	fi
}

# net_sysctls_restore STATE_DIR: the old values net_sysctl remembered
net_sysctls_restore() {
	local kv
	[[ -f $1/sysctl.saved ]] || return 0
	while read -r kv; do sysctl -qw "$kv" 2>/dev/null || true; done <"$1/sysctl.saved"
}

# net_flush_chains: remove every iptables chain named CNI-* or KUBE-* (the CNI plugins' and kube-proxy's) and the
# jumps to them, in the filter, nat and mangle tables
net_flush_chains() {
	local table rule chain
	for table in filter nat mangle; do
		while read -r rule; do
			# shellcheck disable=SC2086 # the rule's words, as iptables -S printed them
			iptables -w -t "$table" ${rule/-A/-D} 2>/dev/null || true
		done < <(iptables -w -t "$table" -S 2>/dev/null | grep -E '^-A (INPUT|OUTPUT|FORWARD|PREROUTING|POSTROUTING) .*-j (KUBE|CNI)-')
		for chain in $(iptables -w -t "$table" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^(KUBE|CNI)-/ {print $2}'); do
			iptables -w -t "$table" -F "$chain" 2>/dev/null || true
		done
		for chain in $(iptables -w -t "$table" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^(KUBE|CNI)-/ {print $2}'); do
			iptables -w -t "$table" -X "$chain" 2>/dev/null || true
		done
	done
}
