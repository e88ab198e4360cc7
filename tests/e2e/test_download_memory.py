"""Bounded memory while downloading: the runtime's RSS during a 1 GiB download stays within 200 MiB of its idle RSS.

A real ``modelapi-runtime serve`` process pulls a 1 GiB object from the cluster's versitygw over real sockets. A
gate (a TCP forwarder in this test) holds its first request until the process has settled: that RSS is its idle RSS.
Then the kernel's peak-RSS mark of the process is reset (``/proc/PID/clear_refs``) and the gate opens. The spec's
sha256 is deliberately wrong, so the download runs to its end, the digest check refuses it and the process exits
without loading anything: every byte of its peak RSS from then on is the download's.

``MODELAPI_E2E_DOWNLOAD_MIB`` changes the artifact's size (default 1024, the issue's 1 GiB).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import Cluster
from .processes import free_port, terminate

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024
ARTIFACT_MIB = int(os.environ.get("MODELAPI_E2E_DOWNLOAD_MIB", "1024"))
BOUND_MIB = 200  # the bound over the idle RSS
WRONG_SHA256 = "0" * 64


class Gate:
    """A TCP forwarder to ``upstream`` whose connections wait until ``open()``: the runtime's first request to the
    store is held, so its RSS can be read while it is up and idle."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.opened = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.held = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def open(self) -> None:
        self.opened.set()

    def close(self) -> None:
        self.listener.close()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.listener.accept()
                threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        if not self.opened.is_set():
            self.held += 1
        self.opened.wait()
        with client, socket.create_connection(self.upstream) as server:
            back = threading.Thread(target=_pump, args=(server, client), daemon=True)
            back.start()
            _pump(client, server)
            back.join()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(1024 * 1024):
            dst.sendall(data)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


@pytest.fixture
def gigabyte_object(cluster: Cluster, s3: Any, tmp_path: Path) -> Iterator[tuple[str, str, int]]:
    """(s3:// URI, sha256, size) of an object of ARTIFACT_MIB MiB in the cluster's bucket (generated, sparse)."""
    path = tmp_path / "blob"
    with path.open("wb") as f:
        f.write(b"modelapi download memory test\n")
        f.truncate(ARTIFACT_MIB * MiB)
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(8 * MiB):
            digest.update(chunk)
    key = f"download-memory/{os.getpid()}-{time.time_ns()}.bin"
    s3.upload_file(str(path), cluster.s3_bucket, key)
    path.unlink()
    yield f"s3://{cluster.s3_bucket}/{key}", digest.hexdigest(), ARTIFACT_MIB * MiB
    s3.delete_object(Bucket=cluster.s3_bucket, Key=key)


def test_runtime_rss_during_a_1gib_download_stays_within_200mib_of_idle(
    cluster: Cluster, gigabyte_object: tuple[str, str, int], tmp_path: Path
) -> None:
    uri, actual_sha256, size = gigabyte_object
    endpoint = urllib.parse.urlsplit(cluster.s3_endpoint_url)
    gate = Gate((endpoint.hostname or "127.0.0.1", endpoint.port or 80))
    port = free_port()
    env = {
        "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
        "HOME": str(tmp_path),
        "AWS_ACCESS_KEY_ID": cluster.env["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": cluster.env["AWS_SECRET_ACCESS_KEY"],
        "AWS_DEFAULT_REGION": cluster.env["AWS_DEFAULT_REGION"],
        "AWS_EC2_METADATA_DISABLED": "true",
        "MODELAPI_MODEL_URI": uri,
        "MODELAPI_SHA256": WRONG_SHA256,
        "MODELAPI_S3_ENDPOINT": gate.url,
        "MODELAPI_MODEL_DIR": str(tmp_path / "models"),
        "MODELAPI_HOST": "127.0.0.1",
        "MODELAPI_PORT": str(port),
        "MODELAPI_TERMINATION_LOG": str(tmp_path / "termination-log"),
    }
    log_path = tmp_path / "runtime.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "modelapi-runtime"), "serve"], env=env, stdout=log, stderr=log
        )
    try:
        deadline = time.monotonic() + 60
        while gate.held == 0 or not _live(port):
            assert process.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "the runtime never asked the store / never answered /v2/health/live"
            time.sleep(0.2)
        time.sleep(2)  # settled: imports done, the server up, the first request to the store held at the gate
        idle_kib = _status_kib(process.pid, "VmRSS")
        Path(f"/proc/{process.pid}/clear_refs").write_text("5")  # the peak-RSS mark starts again from here
        gate.open()
        peak_kib = idle_kib
        deadline = time.monotonic() + 300
        while process.poll() is None:
            with contextlib.suppress(OSError, AssertionError):  # the process may be gone between poll and read
                peak_kib = max(peak_kib, _status_kib(process.pid, "VmHWM"))
            assert time.monotonic() < deadline, "the download did not end within 300 s"
            time.sleep(0.02)
        termination = Path(env["MODELAPI_TERMINATION_LOG"]).read_text()
    finally:
        terminate(process)
        gate.close()
    grown = (peak_kib - idle_kib) / 1024
    print(f"[download-memory] {size // MiB} MiB: idle RSS {idle_kib / 1024:.0f} MiB, peak while downloading "
          f"{peak_kib / 1024:.0f} MiB (+{grown:.0f} MiB)")  # fmt: skip
    # the whole object went through: its real digest is what the runtime refused
    assert f"sha256 is {actual_sha256}" in termination, termination
    assert grown <= BOUND_MIB, f"RSS grew by {grown:.0f} MiB during the download (bound {BOUND_MIB} MiB)"


def _live(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/live", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False
