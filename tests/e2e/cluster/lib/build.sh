# shellcheck shell=bash
# Go builds for the harness, sourced by cluster.sh (after lib/log.sh): every binary is built once per machine into a
# cache directory whose name hashes what went into it, under one build lock, so concurrent checkouts build nothing
# twice. Needs CACHE_ROOT (the cache root) and, for build_k8s, K8S_VERSION.

# cache_bin_dir PREFIX TEXT [FILE...]: $CACHE_ROOT/<PREFIX><key>/bin, the key hashing TEXT and the files' contents
cache_bin_dir() {
	local prefix="$1" text="$2" key
	shift 2
	key="$(
		{
			echo "$text"
			if (($# > 0)); then cat "$@"; fi
		} | sha256sum | cut -c1-16
	)"
	echo "$CACHE_ROOT/$prefix$key/bin"
}

# cached_build BIN_DIR BUILDER NAME...: prints BIN_DIR once each NAME is an executable there. The missing ones are
# built, under the build lock ($CACHE_ROOT/build.lock), by `BUILDER STAGE MISSING...` into a fresh stage directory
# next to BIN_DIR, then moved in (a failed build leaves nothing half-written in BIN_DIR).
cached_build() {
	local bin="$1" builder="$2" b missing=() stage t0=$SECONDS
	shift 2
	for b in "$@"; do [[ -x "$bin/$b" ]] || missing+=("$b"); done
	if ((${#missing[@]} == 0)); then
		echo "$bin"
		return
	fi
	command -v go >/dev/null || die "go is not installed"
	mkdir -p "$CACHE_ROOT" "$bin"
	exec 8>"$CACHE_ROOT/build.lock"
	log "waiting for the build lock $CACHE_ROOT/build.lock" && flock 8
	missing=() # another build may have finished while this one waited
	for b in "$@"; do [[ -x "$bin/$b" ]] || missing+=("$b"); done
	if ((${#missing[@]} > 0)); then
		log "missing from $bin: ${missing[*]}; building them once (go ${GO_VERSION:-$(go env GOVERSION)})"
		stage="$bin/../stage.$$"
		rm -rf "$stage" && mkdir -p "$stage"
		"$builder" "$stage" "${missing[@]}"
		for b in "${missing[@]}"; do
			if [[ -x "$stage/$b" ]]; then mv "$stage/$b" "$bin/"; fi
		done
		rm -rf "$stage"
		log "built ${missing[*]} in $((SECONDS - t0)) s"
	fi
	exec 8>&-
	for b in "$@"; do [[ -x "$bin/$b" ]] || die "build did not produce $b"; done
	echo "$bin"
}

# one_of WORD LIST...: WORD is one of LIST (a builder's test of what it is asked for)
one_of() {
	local word="$1" item
	shift
	for item in "$@"; do [[ $item == "$word" ]] && return 0; done
	return 1
}

# progress WHAT: turns `go build -v` output (a package a line) into a progress line every 100 packages; errors pass
progress() {
	awk -v what="$1" '
		/^#|\.go:[0-9]|: (error|cannot|missing|undefined|no required)|^go: [^d]|^(FAIL|fatal|panic)/ { print > "/dev/stderr"; next }
		{ n++; if (n % 100 == 0) { printf "[cluster] %s: %d packages compiled\n", what, n > "/dev/stderr"; fflush("/dev/stderr") } }
		END { printf "[cluster] %s: %d packages compiled in total\n", what, n > "/dev/stderr" }'
}

# build_k8s OUT_DIR MODULE_DIR CMD...: Kubernetes commands (k8s.io/kubernetes/cmd/<CMD>) from a wrapper module, with
# real version strings
build_k8s() {
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

# go_install NAME MODULE/CMD VERSION LDFLAGS OUT_DIR: `go install pkg@version` into OUT_DIR
go_install() {
	log "building $1 $3"
	GOBIN="$5" go install -v -trimpath -ldflags "-s -w $4" "$2@$3" 2>&1 | progress "$1 $3"
}

# go_build NAME VERSION OUT_DIR PACKAGE LDFLAGS MODULE_DIR: one binary of a wrapper module
go_build() {
	log "building $1 $2"
	(cd "$6" && go build -v -trimpath -ldflags "-s -w $5" -o "$3/$1" "$4" 2>&1) | progress "$1 $2"
}
