"""A model pod's start under a CPU quota, outside Kubernetes: `modelapi-runtime serve` reading a node-cache hit.

A local store (HTTP, ranges) and the cache agent run in one child process (``hit_cpu.py``'s); the agent is filled
once, then each start is a fresh `modelapi-runtime serve` with its own empty model directory, in a cgroup (v1 ``cpu``
or v2) whose CFS quota is ``--cpu`` CPUs, as a pod's limit is. Measured per start: the wall clock from the spawn to
the first 200 of ``/v2/health/ready`` (polled every 5 ms from outside the cgroup), the process's CPU by then, and the
runtime's own phases from its ``/metrics``. With ``--s3`` the artifact is in an S3 store instead (the test harness's
versitygw, started here: ``MODELAPI_VERSITYGW`` or the one tests/e2e/cluster/cluster.sh built), read with static
credentials from the environment as the operator gives them, so the pod presigns its URLs. With ``--before DIR``
(another commit's ``runtime/``, e.g. ``git archive 6003e8b runtime | tar -x -C DIR``) the two trees start in turns.
Needs root (the cgroup)::

    python benchmarks/coldstart/start_cpu.py --mib 256 --starts 6 --before /tmp/before/runtime

Figures: RESULTS.md, "Where a pod's start goes".
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.server
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from modelapi_runtime.node_cache import NodeCacheClient
from modelapi_runtime.storage import TransferOptions, fetch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from hit_cpu import NODE, RUNTIME  # noqa: E402 - the store and the agent, in one child process

SERVE = "import sys; sys.path.insert(0, sys.argv.pop(1)); from modelapi_runtime.cli import main; sys.exit(main())"
PHASES = ("download", "load", "warmup", "process")
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "modelapi", "AWS_SECRET_ACCESS_KEY": "modelapi-secret-key"}
S3_REGION, S3_BUCKET = "us-east-1", "models"


@contextlib.contextmanager
def versitygw(artifact: Path, data_dir: Path) -> Iterator[str]:
    """The harness's S3 (versitygw, posix backend) on a free port, with ``artifact`` in it as
    ``s3://models/model.onnx``: its endpoint."""
    import boto3  # noqa: PLC0415 - only for --s3

    found = sorted(Path.home().glob(".cache/modelapi/*/bin/versitygw"), key=lambda p: p.stat().st_mtime)
    binary = os.environ.get("MODELAPI_VERSITYGW") or (str(found[-1]) if found else "versitygw")
    port = free_port()
    data_dir.mkdir()
    proc = subprocess.Popen(
        [binary, "--access", S3_CREDENTIALS["AWS_ACCESS_KEY_ID"], "--secret", S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
         "--region", S3_REGION, "--port", f"127.0.0.1:{port}", "posix", str(data_dir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            time.sleep(0.1)
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name=S3_REGION,
                          aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"])  # fmt: skip
        s3.create_bucket(Bucket=S3_BUCKET)
        s3.upload_file(str(artifact), S3_BUCKET, "model.onnx")
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.contextmanager
def cpu_cgroup(cpus: float) -> Iterator[Path]:
    """A cgroup of its own with a CFS quota of ``cpus`` (period 100 ms), removed afterwards."""
    v1 = Path("/sys/fs/cgroup/cpu")
    group = (v1 if v1.is_dir() else Path("/sys/fs/cgroup")) / f"modelapi-start-cpu-{os.getpid()}"
    group.mkdir()
    try:
        if v1.is_dir():
            (group / "cpu.cfs_period_us").write_text("100000")
            (group / "cpu.cfs_quota_us").write_text(str(int(cpus * 100000)))
        else:
            (group / "cpu.max").write_text(f"{int(cpus * 100000)} 100000")
        yield group
    finally:
        group.rmdir()


def large_model(path: Path, mib: int) -> None:
    """y = x + big[0:4], ``big`` an initializer of ``mib`` MiB (the node cache tests' model)."""
    big = numpy_helper.from_array(np.full(mib * 1024 * 1024 // 4, 1.0, dtype=np.float32), "big")
    ints = [numpy_helper.from_array(np.array(v, dtype=np.int64), n) for n, v in (("s", [0]), ("e", [4]))]
    graph = helper.make_graph(
        [helper.make_node("Slice", ["big", "s", "e"], ["b"]), helper.make_node("Add", ["x", "b"], ["y"])],
        "large",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        initializer=[big, *ints],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())


def capped_store(artifact: Path, mib_s: float) -> str:
    """A local store (HTTP, ranges) in a thread of this process that sends each connection at most ``mib_s`` MiB/s, as
    a remote store does; its URL."""
    data = artifact.read_bytes()
    chunk = 256 * 1024

    class Store(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_HEAD(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()

        def do_GET(self) -> None:
            rng = self.headers.get("Range")
            s, e = (int(v) for v in rng.removeprefix("bytes=").split("-")) if rng else (0, len(data) - 1)
            self.send_response(206 if rng else 200)
            self.send_header("Content-Length", str(e - s + 1))
            self.end_headers()
            began = time.perf_counter()
            for offset in range(s, e + 1, chunk):
                self.wfile.write(memoryview(data)[offset : min(offset + chunk, e + 1)])
                ahead = (offset + chunk - s) / (mib_s * 1024 * 1024) - (time.perf_counter() - began)
                if ahead > 0:
                    time.sleep(ahead)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Store)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(
    runtime: Path, group: Path, agent: str | None, store: str, sha256: str, work: Path, s3: str | None = None
) -> dict[str, float]:
    port = free_port()
    args = [sys.executable, "-c", SERVE, str(runtime), "serve", "--model-uri", f"{store}/model.onnx",
            "--sha256", sha256, "--model-dir", str(work), "--name", "m", "--host", "127.0.0.1", "--port", str(port),
            "--termination-log", str(work / "termination-log")]  # fmt: skip
    args += ["--node-cache-url", agent] if agent else []
    args += ["--s3-endpoint", s3, "--s3-region", S3_REGION] if s3 else []
    procs = group / "cgroup.procs"
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"} | (S3_CREDENTIALS if s3 else {})
    spawned = time.perf_counter()
    proc = subprocess.Popen(
        args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        preexec_fn=lambda: procs.write_text(str(os.getpid())),  # noqa: PLW1509 - before exec, into the cgroup
    )  # fmt: skip
    try:
        while True:
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1) as r,
            ):
                if r.status == 200:
                    break
            if proc.poll() is not None:
                raise RuntimeError(proc.stderr.read().decode() if proc.stderr else "exited")
            time.sleep(0.005)
        ready = time.perf_counter() - spawned
        stat = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    finally:
        proc.terminate()
        proc.wait(30)
    run = {"ready": ready, "cpu": cpu}
    for phase in PHASES:
        found = re.search(rf"^modelapi_cold_start_{phase}_seconds\{{[^}}]*\}} ([0-9.e+-]+)$", text, re.M)
        run[phase] = float(found.group(1)) if found else float("nan")
    assert f'source="{"cache" if agent else "store"}"}} 1.0' in text, "not where the artifact should come from"
    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--starts", type=int, default=6)
    parser.add_argument("--cpu", type=float, default=0.5, help="the CFS quota, in CPUs (a pod's CPU limit)")
    parser.add_argument("--before", type=Path, help="another commit's runtime/ directory, started in turns")
    parser.add_argument("--direct-mib-s", type=float, help="no agent: each start downloads from a store capping each "
                        "connection at this many MiB/s (a cold start from a remote store)")  # fmt: skip
    parser.add_argument("--s3", action="store_true", help="the artifact in S3 (versitygw), read with static "
                        "credentials: the pod presigns its URLs")  # fmt: skip
    args = parser.parse_args()
    trees = {"this tree": RUNTIME} | ({"before": args.before} if args.before else {})
    for runtime in trees.values():  # both trees byte-compiled, as in the image
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(runtime)], check=True)
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="start-cpu-")))
        group = stack.enter_context(cpu_cgroup(args.cpu))
        artifact = work / "model.onnx"
        large_model(artifact, args.mib)
        sha256 = hashlib.sha256(artifact.read_bytes()).hexdigest()
        s3 = stack.enter_context(versitygw(artifact, work / "s3")) if args.s3 else None
        node = subprocess.Popen(
            [sys.executable, "-c", NODE, str(RUNTIME), str(artifact), str(work / "node-cache"), *([s3] if s3 else [])],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert node.stdout is not None
        agent, store = node.stdout.readline().split()
        options = TransferOptions()
        if s3:
            store, options = f"s3://{S3_BUCKET}", TransferOptions(endpoint=s3, region=S3_REGION)
            os.environ.update(S3_CREDENTIALS)  # the fill below signs with them too
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
        via: str | None = agent
        if args.direct_mib_s:
            store, via = capped_store(artifact, args.direct_mib_s), None
        try:
            if via:
                fill = NodeCacheClient(via)
                fetch(f"{store}/model.onnx", work / "fill", sha256=sha256, options=options, remote=fill)
            for _ in range(args.starts):
                for name, runtime in trees.items():
                    pod_dir = work / f"pod-{len(runs[name])}-{name.replace(' ', '-')}"
                    runs[name].append(start(runtime, group, via, store, sha256, pod_dir, s3))
        finally:
            node.terminate()
            node.wait(10)
    what = (
        f"cold, from a store at {args.direct_mib_s:g} MiB/s per connection" if args.direct_mib_s else "node-cache hits"
    ) + (" (S3, static credentials)" if args.s3 else "")
    print(f"{args.mib} MiB, {what}, CPU quota {args.cpu:g}, {args.starts} starts each, 1-minute load "
          f"{os.getloadavg()[0]:.1f}, {time.strftime('%H:%M UTC', time.gmtime())}")  # fmt: skip
    for name, rs in runs.items():
        med = {k: statistics.median(r[k] for r in rs) for k in ("ready", "cpu", *PHASES)}
        outside = statistics.median(r["ready"] - r["load"] - r["warmup"] for r in rs)
        print(f"{name}: spawn -> ready {med['ready']:.3f} s (CPU {med['cpu']:.2f} s), download {med['download']:.3f}, "
              f"load {med['load']:.3f}, warm-up {med['warmup']:.4f}; spawn -> ready less load and warm-up "
              f"{outside:.3f} s (medians)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
