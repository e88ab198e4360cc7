"""The harness's process supervision (tests/e2e/cluster/lib/proc.sh), with real processes: a stop returns only once
the process has exited, SIGKILL follows a SIGTERM that is ignored, a reused PID is never taken for ours, a start-up
wait fails fast with the log when the process dies."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
LIB = ROOT / "tests" / "e2e" / "cluster" / "lib"
CLUSTER_SH = ROOT / "tests" / "e2e" / "cluster" / "cluster.sh"

# Python programs the tests supervise: one that ignores SIGTERM, one that takes a while to exit on it
IGNORES_TERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(300)"
)
SLOW_EXIT = (
    "import signal, sys, time\n"
    "def bye(*_):\n"
    "    time.sleep(1.5)\n"
    "    open(sys.argv[1], 'w').write('done')\n"
    "    sys.exit(0)\n"
    "signal.signal(signal.SIGTERM, bye)\n"
    "print('up', flush=True)\n"
    "time.sleep(300)\n"
)


def harness(tmp_path: Path, script: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a bash script with lib/log.sh and lib/proc.sh sourced, PROC_DIR and PROC_LOG_DIR in tmp_path."""
    prelude = (
        f'set -euo pipefail\nsource "{LIB}/log.sh"\nsource "{LIB}/proc.sh"\n'
        f'PROC_DIR="{tmp_path}" PROC_LOG_DIR="{tmp_path}"\n'
    )
    return subprocess.run(
        ["bash", "-c", prelude + script], capture_output=True, text=True, timeout=timeout, check=False
    )


def running(pid: int) -> bool:
    """The process exists and has not exited (a zombie has exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] not in {"Z", "X"}


def pid_of(tmp_path: Path, name: str) -> int:
    return int((tmp_path / f"{name}.pid").read_text())


@pytest.fixture
def cleanup(tmp_path: Path):  # type: ignore[no-untyped-def]
    yield
    for pidfile in tmp_path.rglob("*.pid"):
        text = pidfile.read_text().strip()
        if text and running(int(text)):
            os.kill(int(text), 9)


@pytest.mark.usefixtures("cleanup")
def test_start_records_pid_start_time_order_and_log_and_stop_waits_for_the_exit(tmp_path: Path) -> None:
    marker = tmp_path / "exited"
    proc = harness(
        tmp_path,
        f"""
        proc_start slow python3 -c "{SLOW_EXIT}" "{marker}"
        proc_start sleeper sleep 300
        proc_wait_for slow 10 grep -q up "$PROC_LOG_DIR/slow.log"
        proc_alive slow && proc_alive sleeper
        proc_stop slow
        test -e "{marker}"   # stop returned after the program's own exit path ran
        ! proc_alive slow
        proc_alive sleeper
        """,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "order").read_text().split() == ["slow", "sleeper"]
    assert (tmp_path / "slow.start").read_text().strip().isdigit()
    assert not running(pid_of(tmp_path, "slow"))
    assert running(pid_of(tmp_path, "sleeper"))
    assert "stopping slow" in proc.stderr


@pytest.mark.usefixtures("cleanup")
def test_stop_kills_a_process_that_ignores_sigterm_after_the_timeout(tmp_path: Path) -> None:
    started = time.monotonic()
    proc = harness(
        tmp_path,
        f"""
        proc_start stubborn python3 -c "{IGNORES_TERM}"
        proc_wait_for stubborn 10 grep -q up "$PROC_LOG_DIR/stubborn.log"
        proc_stop stubborn 1
        ! proc_alive stubborn
        """,
    )
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started >= 1
    assert "did not stop within 1 s of SIGTERM: killing it" in proc.stderr
    assert not running(pid_of(tmp_path, "stubborn"))


@pytest.mark.usefixtures("cleanup")
def test_stop_all_stops_in_reverse_order(tmp_path: Path) -> None:
    proc = harness(
        tmp_path,
        """
        proc_start first sleep 300
        proc_start second sleep 301
        proc_stop_all
        ! proc_alive first && ! proc_alive second
        """,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.index("stopping second") < proc.stderr.index("stopping first")
    for name in ("first", "second"):  # exited and reaped by their new parent: gone from /proc
        assert not Path(f"/proc/{pid_of(tmp_path, name)}").exists()


def test_a_reused_pid_is_not_ours_and_is_left_alone(tmp_path: Path) -> None:
    # the PID of a live process we did not start, with a start time that is not its own
    (tmp_path / "other.pid").write_text(f"{os.getpid()}\n")
    (tmp_path / "other.start").write_text("1\n")
    proc = harness(tmp_path, "! proc_alive other\nproc_stop other\n")
    assert proc.returncode == 0, proc.stderr
    assert "stopping" not in proc.stderr
    assert running(os.getpid())


def test_wait_for_fails_fast_with_the_log_when_the_process_exits(tmp_path: Path) -> None:
    started = time.monotonic()
    proc = harness(
        tmp_path, "proc_start crash sh -c 'echo config error: no such file; exit 3'\nproc_wait_for crash 60 false\n"
    )
    assert proc.returncode == 1
    assert time.monotonic() - started < 30
    assert "config error: no such file" in proc.stderr
    assert "ERROR: crash exited during start-up" in proc.stderr


@pytest.mark.usefixtures("cleanup")
def test_restart_runs_the_same_command_line_again_and_appends_to_the_log(tmp_path: Path) -> None:
    proc = harness(
        tmp_path,
        """
        proc_start echoer python3 -c "print('started', flush=True); import time; time.sleep(300)"
        proc_wait_for echoer 10 grep -q started "$PROC_LOG_DIR/echoer.log"
        first=$(cat "$PROC_DIR/echoer.pid")
        proc_restart echoer 0
        proc_wait_for echoer 10 bash -c '[[ $(grep -c started "$0") == 2 ]]' "$PROC_LOG_DIR/echoer.log"
        [[ $(cat "$PROC_DIR/echoer.pid") != "$first" ]]
        """,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "order").read_text().split() == ["echoer"]
    assert running(pid_of(tmp_path, "echoer"))


def test_free_ports_are_distinct_and_bindable(tmp_path: Path) -> None:
    proc = harness(tmp_path, "free_ports 5\n")
    assert proc.returncode == 0, proc.stderr
    ports = [int(line) for line in proc.stdout.split()]
    assert len(ports) == 5
    assert len(set(ports)) == 5


@pytest.mark.usefixtures("cleanup")
def test_cluster_down_returns_only_after_every_process_has_exited(tmp_path: Path) -> None:
    """cluster.sh down on a run directory whose components (stand-ins started by lib/proc.sh) take a while to exit:
    it returns after the last of them has exited, and removes the run directory."""
    run_dir = tmp_path / "run"
    pids = run_dir / "pids"
    marker = tmp_path / "exited"
    started = harness(
        tmp_path,
        f"""
        PROC_DIR="{pids}" PROC_LOG_DIR="{run_dir}/logs"
        mkdir -p "$PROC_DIR" "$PROC_LOG_DIR"
        proc_start etcd sleep 300
        proc_start kwok python3 -c "{SLOW_EXIT}" "{marker}"
        proc_wait_for kwok 10 grep -q up "$PROC_LOG_DIR/kwok.log"
        """,
    )
    assert started.returncode == 0, started.stderr
    components = {name: int((pids / f"{name}.pid").read_text()) for name in ("etcd", "kwok")}
    down = subprocess.run(
        ["bash", str(CLUSTER_SH), "down"],
        env={**os.environ, "MODELAPI_CLUSTER_DIR": str(run_dir)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert down.returncode == 0, down.stderr
    assert marker.read_text() == "done", "kwok's own exit path ran before down returned"
    for name, pid in components.items():
        assert not running(pid), f"{name} (pid {pid}) still runs after down returned"
    assert not run_dir.exists()
