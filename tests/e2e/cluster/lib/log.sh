# shellcheck shell=bash
# Log lines on stderr for the harness's scripts, sourced by them: LOG_TAG names the script in each line (cluster,
# demo). die logs an error and exits the script (or the subshell it runs in).

LOG_TAG=${LOG_TAG:-cluster}

log() { printf '[%s %s] %s\n' "$LOG_TAG" "$(date +%H:%M:%S)" "$*" >&2; }

die() {
	log "ERROR: $*"
	exit 1
}
