# shellcheck shell=bash
# Process supervision for the harness (cluster.sh and the files it sources) and the demo, sourced by them (after
# lib/log.sh). A program is started detached, in a session of its own, under a NAME:
#   $PROC_DIR/NAME.pid    its PID (the starting shell writes its own PID, then execs the program)
#   $PROC_DIR/NAME.start  its start time (from /proc): with the PID, its identity, so a reused PID is never taken for it
#   $PROC_DIR/order       the names in start order (proc_stop_all stops them in reverse)
#   $PROC_LOG_DIR/NAME.log  its stdout and stderr
# The caller sets PROC_DIR and PROC_LOG_DIR (the same directory will do). A process counts as running until it has
# exited: a zombie (exited, not yet reaped) does not count, one still tearing down does.

# proc_starttime PID: the process's start time (clock ticks after boot); fails when there is no such process or it is
# a zombie
proc_starttime() {
	local stat fields
	stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
	# the fields after the command name (field 2), which may hold spaces and parentheses: state is field 3, starttime 22
	read -r -a fields <<<"${stat##*) }"
	[[ ${fields[0]:-Z} != [ZX] ]] || return 1
	echo "${fields[19]}"
}

# proc_launch NAME LOG_MODE COMMAND...: LOG_MODE new (truncate the log) or append; returns once the PID is recorded
proc_launch() {
	local name="$1" mode="$2" pidfile="$PROC_DIR/$1.pid" t0
	shift 2
	: >"$pidfile"
	rm -f "$PROC_DIR/$name.start"
	# fds 8 and 9 hold the harness's build and run locks: a daemon that inherited them would hold the locks for its
	# lifetime
	# shellcheck disable=SC2016 # expanded by the inner shell
	if [[ $mode == append ]]; then
		setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$@" >>"$PROC_LOG_DIR/$name.log" 2>&1 </dev/null 8>&- 9>&- &
	else
		setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$@" >"$PROC_LOG_DIR/$name.log" 2>&1 </dev/null 8>&- 9>&- &
	fi
	t0=$SECONDS
	until [[ -s $pidfile ]]; do
		((SECONDS - t0 < 10)) || die "$name did not start"
		sleep 0.05
	done
	# a program that exited already leaves the file empty: proc_alive says it is not running
	proc_starttime "$(cat "$pidfile")" >"$PROC_DIR/$name.start" || true
}

# proc_start NAME COMMAND...: start COMMAND detached under NAME (a new log)
proc_start() {
	log "starting $1"
	proc_launch "$1" new "${@:2}"
	echo "$1" >>"$PROC_DIR/order"
}

# proc_alive NAME: the process started under NAME is running
proc_alive() {
	local pid now start
	pid="$(cat "$PROC_DIR/$1.pid" 2>/dev/null)" || return 1
	[[ -n $pid ]] || return 1
	now="$(proc_starttime "$pid")" || return 1
	# no start time recorded: started by a harness from before start times were recorded
	start="$(cat "$PROC_DIR/$1.start" 2>/dev/null)" || return 0
	[[ $now == "$start" ]]
}

# proc_now_us: microseconds since the epoch (SECONDS counts whole seconds: a 1 s timeout could last 0.1 s)
proc_now_us() { echo "${EPOCHREALTIME/[.,]/}"; }

# proc_gone NAME TIMEOUT_S: wait up to TIMEOUT_S (whole seconds) for the process to exit; fails if it still runs then
proc_gone() {
	local deadline=$(($(proc_now_us) + $2 * 1000000))
	while proc_alive "$1"; do
		(($(proc_now_us) < deadline)) || return 1
		sleep 0.1
	done
}

# proc_reaped PID TIMEOUT_S: wait up to TIMEOUT_S for an exited process (a zombie) to be reaped by its new parent, so
# that its /proc entry is gone too (a zombie holds no port or file; callers that look for the entry see it go)
proc_reaped() {
	local deadline=$(($(proc_now_us) + $2 * 1000000)) stat
	while stat="$(cat "/proc/$1/stat" 2>/dev/null)"; do
		[[ ${stat##*) } == [ZX]* ]] || return 0 # another process on a reused PID
		(($(proc_now_us) < deadline)) || return 1
		sleep 0.1
	done
}

# proc_stop NAME [TIMEOUT_S]: SIGTERM, wait for the exit up to TIMEOUT_S (default 15), then SIGKILL and wait again
# (up to 10 s). Returns once the process has exited (0), or fails when it outlived SIGKILL (stuck in the kernel).
proc_stop() {
	local name="$1" timeout="${2:-15}" pid
	proc_alive "$name" || return 0
	pid="$(cat "$PROC_DIR/$name.pid")"
	log "stopping $name (pid $pid)"
	kill -TERM "$pid" 2>/dev/null || true
	if proc_gone "$name" "$timeout"; then
		proc_reaped "$pid" 5 || true
		return 0
	fi
	log "$name did not stop within ${timeout} s of SIGTERM: killing it"
	kill -KILL "$pid" 2>/dev/null || true
	if proc_gone "$name" 10; then
		proc_reaped "$pid" 5 || true
		return 0
	fi
	log "ERROR: $name (pid $pid) still runs 10 s after SIGKILL"
	return 1
}

# proc_stop_all: stop every process of $PROC_DIR/order, last started first; fails when one outlived SIGKILL
proc_stop_all() {
	local names=() i status=0
	[[ -f "$PROC_DIR/order" ]] || return 0
	mapfile -t names <"$PROC_DIR/order"
	for ((i = ${#names[@]} - 1; i >= 0; i--)); do
		proc_stop "${names[$i]}" || status=1
	done
	return $status
}

# proc_restart NAME DOWN_S: stop the process and start it again after DOWN_S seconds with the same command line (so
# the same ports, flags and data), its log appended to
proc_restart() {
	local name="$1" down="$2" pid argv=()
	proc_alive "$name" || die "restart: $name is not running"
	pid="$(cat "$PROC_DIR/$name.pid")"
	mapfile -d '' -t argv <"/proc/$pid/cmdline"
	((${#argv[@]} > 0)) || die "restart: cannot read the command line of $name (pid $pid)"
	proc_stop "$name" || die "restart: $name (pid $pid) did not stop"
	sleep "$down"
	log "starting $name again (down ${down}s)"
	proc_launch "$name" append "${argv[@]}"
}

# proc_wait_for NAME TIMEOUT_S COMMAND...: until COMMAND succeeds; dies with the tail of NAME's log when the process
# exits first or TIMEOUT_S passes
proc_wait_for() {
	local name="$1" timeout="$2" t0=$SECONDS
	shift 2
	until "$@" >/dev/null 2>&1; do
		if ! proc_alive "$name"; then
			tail -n 40 "$PROC_LOG_DIR/$name.log" >&2 || true
			die "$name exited during start-up (log: $PROC_LOG_DIR/$name.log)"
		fi
		if ((SECONDS - t0 > timeout)); then
			tail -n 40 "$PROC_LOG_DIR/$name.log" >&2 || true
			die "$name not ready after ${timeout}s (log: $PROC_LOG_DIR/$name.log)"
		fi
		sleep 0.3
	done
}

# wait_until TIMEOUT_S COMMAND...: until COMMAND succeeds (output discarded); fails after TIMEOUT_S (whole seconds)
wait_until() {
	local deadline=$(($(proc_now_us) + $1 * 1000000))
	shift
	until "$@" >/dev/null 2>&1; do
		(($(proc_now_us) < deadline)) || return 1
		sleep 0.3
	done
}

# not COMMAND...: COMMAND fails (for wait_until)
not() { ! "$@"; }

# wait_for_url URL TIMEOUT_S: until an HTTP GET of URL answers 2xx; fails after TIMEOUT_S
wait_for_url() { wait_until "$2" curl -fsS --max-time 2 -o /dev/null "$1"; }

# free_ports N: N free TCP ports on 127.0.0.1, one per line (all held at once while chosen, so they differ)
free_ports() {
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
