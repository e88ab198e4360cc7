# shellcheck shell=bash
# The OpenTelemetry Collector the tracing tests send the runtime's spans to, sourced by cluster.sh: built from the
# wrapper module gomod-otel/ (the otlp receiver and the file exporter only), once per machine into the shared cache
# like every other binary. It is not part of `cluster.sh build`: `cluster.sh build-otel` builds it (or finds it) and
# prints its directory; the test that needs it starts and stops it (tests/e2e/test_tracing.py).

OTEL_GOMOD_DIR="$HERE/gomod-otel"
OTEL_VERSION="$(awk '$1 == "go.opentelemetry.io/collector/otelcol" {print $2}' "$OTEL_GOMOD_DIR/go.mod" | head -1)"

otel_bin_dir() {
	cache_bin_dir otel- "otelcol=$OTEL_VERSION go=$GO_VERSION" "$OTEL_GOMOD_DIR"/{go.mod,go.sum,main.go}
}

otel_builder() { # stage: otelcol-modelapi (cached_build's builder)
	log "building otelcol-modelapi $OTEL_VERSION (cold: a few minutes on 2 cores, see the harness README)"
	go_build otelcol-modelapi "$OTEL_VERSION" "$1" . "" "$OTEL_GOMOD_DIR"
}

otel_build() { cached_build "$(otel_bin_dir)" otel_builder otelcol-modelapi; }
