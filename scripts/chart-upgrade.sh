#!/usr/bin/env bash
# Upgrade a modelapi release, CRDs included. Helm installs a chart's crds/ on the first install only and never
# upgrades (nor deletes) them, so a new chart's CRD changes would never reach the cluster: this applies them first
# (server-side, taking over the fields Helm wrote), waits until they are established, then runs helm upgrade.
#
#   scripts/chart-upgrade.sh RELEASE NAMESPACE [helm upgrade flags...]   e.g. --values my-values.yaml --wait
#
# CHART (default: charts/modelapi of this repository) may be an unpacked chart directory of another version
# (helm pull oci://REGISTRY/modelapi --version X --untar). KUBECTL and HELM name the binaries (default: from PATH).
set -euo pipefail

if (($# < 2)); then
	sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
fi
release="$1" namespace="$2"
shift 2
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
chart="${CHART:-$here/../charts/modelapi}"
kubectl="${KUBECTL:-kubectl}"
helm="${HELM:-helm}"

[[ -d "$chart/crds" ]] || {
	echo "chart-upgrade: $chart has no crds/ directory (CHART must be an unpacked chart)" >&2
	exit 2
}
echo "chart-upgrade: applying the CRDs of $chart/crds" >&2
"$kubectl" apply --server-side --force-conflicts --field-manager=modelapi-chart-upgrade -f "$chart/crds/"
"$kubectl" wait --for=condition=Established -f "$chart/crds/" --timeout=60s >/dev/null
# Releases of a chart that templated kopf's peering CRDs (before they moved to crds/) list them in their manifest:
# helm upgrade would delete them, and every peering object with them. Helm keeps a resource whose live object says
# so. Their peering object was a hook, not the release's: adopt it, or the upgrade refuses to take it over.
"$kubectl" annotate --overwrite -f "$chart/crds/kopf-peerings.yaml" helm.sh/resource-policy=keep >/dev/null
for kind in clusterkopfpeerings.kopf.dev kopfpeerings.kopf.dev; do
	"$kubectl" annotate --overwrite "$kind" -A -l "app.kubernetes.io/instance=$release" \
		"meta.helm.sh/release-name=$release" "meta.helm.sh/release-namespace=$namespace" \
		helm.sh/hook- helm.sh/hook-delete-policy- >/dev/null
	"$kubectl" label --overwrite "$kind" -A -l "app.kubernetes.io/instance=$release" \
		app.kubernetes.io/managed-by=Helm >/dev/null
done
echo "chart-upgrade: helm upgrade $release in $namespace" >&2
"$helm" upgrade "$release" "$chart" --namespace "$namespace" "$@"
