"""Runtime benchmark: modelapi-runtime vs KServe ModelServer vs a plain FastAPI wrapper vs bare uvicorn.

One command, same run, same machine: every server is pinned to one core (taskset), the load generator to
another. Two phases per case:
- closed loop: wrk with 16 connections, as fast as the server answers (req/s, server CPU per request); the case
  "v2 binary, new id" puts a new request id in the binary request's JSON header every time, so that no header is
  ever seen twice (closed loop only);
- open loop: vegeta at a fixed rate, half of the KServe peer's closed-loop maximum, against our default
  configuration (and batching, on the MLP) and KServe (p50 and p99 at the same offered load: at saturation a
  closed-loop p99 only restates the throughput ratio).
Prints the figures and the ratios, and writes them as Markdown (``--out``) with the commit, the machine and
``pip freeze`` of both environments, so that a figure can be reproduced with the same packages.

    .venv/bin/python benchmarks/runtime/bench.py [--duration 10] [--kserve-python /path/to/venv/bin/python]

KServe is never a project dependency: give the Python of a separate venv that has ``kserve`` (and
onnxruntime), with --kserve-python or $MODELAPI_KSERVE_PYTHON (benchmarks/runtime/README.md says how to make it);
without it the KServe column and the open-loop phase are skipped, and a line says so. vegeta is built once with Go
(``go install github.com/tsenart/vegeta/v12@v12.12.0``; ``--vegeta`` or $VEGETA names the binary).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "tests" / "unit" / "runtime"))
import onnx_models  # noqa: E402  (the same model builders the unit tests use)

SERVER_CPU, LOAD_CPU = "0", "1"
UVICORN_LAYER = "modelapi (--http uvicorn)"  # the runtime on plain uvicorn: shown, never in the ratios
CONNECTIONS = 16


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    non2xx: int
    requests: int = 0
    cpu_us: float = 0.0  # server CPU time (all its processes, user + system) per request


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of every process in the process group ``pgid`` (the server's)."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:  # pgrp
                ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except Exception:
            time.sleep(0.2)
    raise RuntimeError(f"server at {url} never became ready")


@contextlib.contextmanager
def server(cmd: list[str], ready_url: str, log: Path, env: dict[str, str] | None = None) -> Iterator[int]:
    # Output goes to a file: a peer that logs per request would block on a full pipe.
    proc = subprocess.Popen(
        ["taskset", "-c", SERVER_CPU, *cmd],
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )
    try:
        try:
            wait_ready(ready_url)
        except RuntimeError:
            proc.kill()
            print(log.read_text()[-3000:], file=sys.stderr)
            raise
        yield proc.pid  # the process group's id (start_new_session)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


LUA = """
local f = io.open("{body}", "rb")
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "{ctype}"
{extra}
"""

# The body's request id (a fixed-width placeholder in its JSON header) replaced by a counter on every request: the
# header's bytes differ each time while its length stays the same (Inference-Header-Content-Length is fixed).
NEW_ID_LUA = """
local f = io.open("{body}", "rb")
local body = f:read("*a")
f:close()
local at = string.find(body, "{placeholder}", 1, true)
local head, tail = string.sub(body, 1, at - 1), string.sub(body, at + {width})
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/octet-stream"
wrk.headers["Inference-Header-Content-Length"] = "{header_len}"
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, head .. string.format("%0{width}d", n % 10^{width}) .. tail)
end
"""
ID_PLACEHOLDER = "0" * 10
NEW_ID = "v2 binary, new id"  # the case whose header changes on every request


def wrk(url: str, body: Path, header_len: int | None, duration: int, workdir: Path) -> Result:
    script = workdir / f"{body.stem}.lua"
    if body.stem.startswith("v2b_new_id"):
        script.write_text(NEW_ID_LUA.format(body=body, placeholder=ID_PLACEHOLDER, width=len(ID_PLACEHOLDER),
                                            header_len=header_len))  # fmt: skip
    else:
        extra = f'wrk.headers["Inference-Header-Content-Length"] = "{header_len}"' if header_len else ""
        ctype = "application/octet-stream" if header_len else "application/json"
        script.write_text(LUA.format(body=body, ctype=ctype, extra=extra))
    cmd = ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{duration}s", "--latency"]
    out = subprocess.run([*cmd, "-s", str(script), url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def pct(p: str) -> float:
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        assert m, out
        return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]

    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    requests = re.search(r"(\d+) requests in", out)
    return Result(rps, pct("50"), pct("99"), int(non2xx.group(1)) if non2xx else 0,
                  int(requests.group(1)) if requests else 0)  # fmt: skip


@dataclass
class OpenLoopResult:
    rate: int
    p50_ms: float
    p99_ms: float
    success: float  # share of 2xx answers


def vegeta(binary: str, url: str, body: Path, header_len: int | None, rate: int, duration: int) -> OpenLoopResult:
    """A constant-rate (open-loop) attack: requests leave on schedule whether or not earlier ones were answered."""
    ctype = "application/octet-stream" if header_len else "application/json"
    cmd = ["taskset", "-c", LOAD_CPU, binary, "attack", f"-rate={rate}/s", f"-duration={duration}s",
           f"-body={body}", "-header", f"Content-Type: {ctype}"]  # fmt: skip
    if header_len:
        cmd += ["-header", f"Inference-Header-Content-Length: {header_len}"]
    attack = subprocess.run(cmd, input=f"POST {url}\n".encode(), capture_output=True, check=True)  # binary results
    report = subprocess.run([binary, "report", "-type=json"], input=attack.stdout, capture_output=True,
                            check=True).stdout  # fmt: skip
    data = json.loads(report)
    latencies = data["latencies"]
    return OpenLoopResult(rate, latencies["50th"] / 1e6, latencies["99th"] / 1e6, float(data["success"]))


def pip_freeze(python: str) -> str:
    out = subprocess.run([python, "-m", "pip", "freeze", "--all"], capture_output=True, text=True, check=False)
    return out.stdout.strip() or f"(pip freeze failed: {out.stderr.strip()[:200]})"


def git_commit(checkout: Path = ROOT) -> str:
    out = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                         check=False).stdout.strip()  # fmt: skip
    dirty = subprocess.run(["git", "-C", str(checkout), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, check=False).stdout.strip()  # fmt: skip
    return f"{out or 'unknown'}{' (with uncommitted changes)' if dirty else ''}"


def bodies(workdir: Path, features: int) -> dict[str, tuple[Path, int | None]]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, features)).astype(np.float32)
    out: dict[str, tuple[Path, int | None]] = {}
    v1 = workdir / f"v1_{features}.json"
    v1.write_text(json.dumps({"instances": x.tolist()}))
    out["v1 JSON"] = (v1, None)
    v2 = workdir / f"v2_{features}.json"
    v2.write_text(json.dumps({"inputs": [{"name": "x", "shape": [1, features], "datatype": "FP32",
                                          "data": x.ravel().tolist()}]}))  # fmt: skip
    out["v2 JSON"] = (v2, None)
    header = json.dumps({"inputs": [{"name": "x", "shape": [1, features], "datatype": "FP32",
                                     "parameters": {"binary_data_size": x.nbytes}}],
                         "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}).encode()  # fmt: skip
    binary = workdir / f"v2b_{features}.bin"
    binary.write_bytes(header + x.tobytes())
    out["v2 binary"] = (binary, len(header))
    # The same request with an "id" that the wrk script changes on every request (NEW_ID_LUA): no two headers alike.
    header = json.dumps({"id": ID_PLACEHOLDER, **json.loads(header)}).encode()
    binary = workdir / f"v2b_new_id_{features}.bin"
    binary.write_bytes(header + x.tobytes())
    out[NEW_ID] = (binary, len(header))
    return out


KSERVE_HOW = (
    "set MODELAPI_KSERVE_PYTHON (or --kserve-python) to the Python of a venv with kserve and onnxruntime; "
    "benchmarks/runtime/README.md says how to make it"
)


def kserve_python(given: str) -> str | None:
    """The KServe peer's Python, or None (and a line on stderr saying why and how to enable it)."""
    if not given:
        print(f"KServe peer skipped (and the open-loop phase with it): {KSERVE_HOW}", file=sys.stderr)
        return None
    if not Path(given).is_file():
        print(f"KServe peer skipped: {given} does not exist; {KSERVE_HOW}", file=sys.stderr)
        return None
    return given


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--kserve-python", default=os.environ.get("MODELAPI_KSERVE_PYTHON", ""),
                    help="the Python of a separate venv with kserve and onnxruntime (default: "
                         "$MODELAPI_KSERVE_PYTHON); without it the KServe peer is skipped")  # fmt: skip
    ap.add_argument("--out", type=Path, default=None, help="append the Markdown table to this file")
    ap.add_argument("--repeat", type=int, default=1, help="measure each case N times, keep the best (shared machines)")
    ap.add_argument("--server-starts", type=int, default=1,
                    help="start each server N times and measure --repeat times in each, keep the best of all: the "
                         "same server's req/s differs by a few %% from one process to the next; our configurations "
                         "of a case take their starts in turns")  # fmt: skip
    ap.add_argument("--only", default="", help="run only the cases whose 'model case' label contains this text "
                    "(e.g. 'MLP 784-512-256-10 v1'); the floor always runs")  # fmt: skip
    ap.add_argument("--vegeta", default=os.environ.get("VEGETA", shutil.which("vegeta") or
                    str(Path.home() / "go" / "bin" / "vegeta")), help="vegeta binary (open-loop phase)")  # fmt: skip
    ap.add_argument("--open-loop-duration", type=int, default=10)
    ap.add_argument("--baseline", type=Path, default=None,
                    help="a checkout of an earlier commit (a git worktree): its runtime/ package runs as one "
                         "more server (default configuration) to measure what a change costs")  # fmt: skip
    ap.add_argument("--prediction-log", type=float, default=0.0, metavar="PERCENT",
                    help="also run with the prediction log sampling PERCENT of the requests (stdout sink, to "
                         "/dev/null like every server's stdout here) and give its cost beside the default")  # fmt: skip
    ap.add_argument("--compare-http", action="store_true",
                    help=f"also run with --http uvicorn ('{UVICORN_LAYER}', not in the ratios)")  # fmt: skip
    args = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed (Debian package wrk)")
    py = sys.executable
    runtime_bin = str(Path(py).parent / "modelapi-runtime")
    kserve_py = kserve_python(args.kserve_python)
    vegeta_bin = args.vegeta if Path(args.vegeta).exists() else None
    if kserve_py and not vegeta_bin:
        print("vegeta not found: the open-loop phase is skipped (see --vegeta)", file=sys.stderr)
    workdir = Path(tempfile.mkdtemp(prefix="modelapi-bench-"))
    models = {
        "tiny (4-8-3 MLP)": (onnx_models.mlp(workdir / "tiny.onnx", (4, 8, 3)), 4),
        "MLP 784-512-256-10": (onnx_models.mlp(workdir / "mlp.onnx", (784, 512, 256, 10)), 784),
    }
    rows: list[tuple[str, str, str, Result | None]] = []
    open_rows: list[tuple[str, str, str, OpenLoopResult | None]] = []
    ratios: list[str] = []
    load_before = os.getloadavg()

    def one_start(cmd: list[str], ready: str, url: str, body: tuple[Path, int | None],
                  env: dict[str, str] | None, best: Result | None) -> Result | None:  # fmt: skip
        """One fresh server process, measured --repeat times: the best of these and `best`."""
        with server(cmd, ready, workdir / "server.log", env) as pgid:
            wrk(url, body[0], body[1], 2, workdir)  # warm-up, discarded
            for _ in range(args.repeat):  # other tenants only ever slow a run down: keep the best
                cpu = group_cpu_seconds(pgid)
                attempt = wrk(url, body[0], body[1], args.duration, workdir)
                attempt.cpu_us = (group_cpu_seconds(pgid) - cpu) / max(attempt.requests, 1) * 1e6
                if best is None or attempt.rps > best.rps:
                    best = attempt
        return best

    def report(label: str, model_label: str, case: str, r: Result | None) -> Result | None:
        rows.append((model_label, case, label, r))
        if r:
            print(f"  {model_label:20} {case:10} {label:28} {r.rps:9.0f} req/s  p50 {r.p50_ms:6.2f} ms"
                  f"  p99 {r.p99_ms:6.2f} ms  non-2xx {r.non2xx}  cpu {r.cpu_us:6.1f} us/req"
                  f"  load {os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip
        return r if r and r.non2xx == 0 else None  # errors are no throughput: not compared

    def run(label: str, model_label: str, case: str, cmd: list[str], ready: str, url: str,
            body: tuple[Path, int | None], env: dict[str, str] | None = None) -> Result | None:  # fmt: skip
        r = None
        try:
            for _ in range(args.server_starts):  # a fresh process each time: one start's luck is not the figure
                r = one_start(cmd, ready, url, body, env, r)
        except Exception as exc:  # a peer that cannot do a case is reported, not fatal
            print(f"  {label} {case}: failed ({exc})", file=sys.stderr)
            r = None
        return report(label, model_label, case, r)

    def run_alternating(model_label: str, case: str,
                        servers: list[tuple[str, list[str], str, str]], body: tuple[Path, int | None]
                        ) -> dict[str, Result | None]:  # fmt: skip
        """Our configurations of one case, their starts taken in turns (A B A B ...) so that a slow spell of a shared
        machine falls on each of them alike instead of on the one measured then."""
        best: dict[str, Result | None] = {label: None for label, *_ in servers}
        failed: set[str] = set()
        for _ in range(args.server_starts):
            for label, cmd, ready, url in servers:
                if label in failed:
                    continue
                try:
                    best[label] = one_start(cmd, ready, url, body, None, best[label])
                except Exception as exc:  # a configuration that cannot do a case is reported, not fatal
                    print(f"  {label} {case}: failed ({exc})", file=sys.stderr)
                    failed.add(label)
                    best[label] = None
        return {label: report(label, model_label, case, best[label]) for label, *_ in servers}

    def run_open(label: str, model_label: str, case: str, cmd: list[str], ready: str, url: str,
                 body: tuple[Path, int | None], rate: int) -> None:  # fmt: skip
        assert vegeta_bin
        try:
            with server(cmd, ready, workdir / "server.log"):
                wrk(url, body[0], body[1], 2, workdir)  # warm-up, discarded
                r: OpenLoopResult | None = vegeta(vegeta_bin, url, body[0], body[1], rate, args.open_loop_duration)
        except Exception as exc:
            print(f"  {label} {case} open loop: failed ({exc})", file=sys.stderr)
            r = None
        open_rows.append((model_label, case, label, r))
        if r:
            print(f"  {model_label:20} {case:10} {label:28} open loop {r.rate} req/s: p50 {r.p50_ms:6.2f} ms"
                  f"  p99 {r.p99_ms:6.2f} ms  success {r.success:.4f}", flush=True)  # fmt: skip

    # The HTTP floor first: what one core does with no model at all.
    port = free_port()
    tiny_bodies = bodies(workdir, 4)
    floor = [py, str(HERE / "peers" / "bare_uvicorn.py"), str(port)]
    url = f"http://127.0.0.1:{port}"
    run("bare uvicorn (floor)", "-", "v1 JSON", floor, f"{url}/", f"{url}/v1/models/m:predict", tiny_bodies["v1 JSON"])

    for model_label, (path, features) in models.items():
        cases = bodies(workdir, features)
        variants: list[tuple[str, list[str]]] = [("modelapi", [])]
        logged = f"modelapi (prediction log {args.prediction_log:g} %)"
        if args.prediction_log:
            variants.append((logged, ["--prediction-log-sample-rate", str(args.prediction_log)]))
        if args.compare_http:
            variants.append((UVICORN_LAYER, ["--http", "uvicorn"]))
        if features > 4:
            variants.append(("modelapi (batching 16/2ms)", ["--max-batch-size", "16", "--max-latency-ms", "2"]))
        for case, body in cases.items():
            if args.only not in f"{model_label} {case}":
                continue
            path_url = "/v1/models/m:predict" if case.startswith("v1") else "/v2/models/m/infer"
            ours: list[tuple[str, list[str], str, str]] = []
            for label, extra in variants:
                port = free_port()
                cmd = [runtime_bin, "serve", "--model-uri", path.as_uri(), "--name", "m", "--port", str(port),
                       "--host", "127.0.0.1", "--threads", "1", "--model-dir", str(workdir / "cache"),
                       "--termination-log", str(workdir / "term.log"), "--drain-seconds", "0", *extra]  # fmt: skip
                ours.append((label, cmd, f"http://127.0.0.1:{port}/v2/health/ready",
                             f"http://127.0.0.1:{port}{path_url}"))  # fmt: skip
            results: dict[str, Result | None] = run_alternating(model_label, case, ours, body)
            plain, with_log = results.get("modelapi"), results.get(logged)
            if plain and with_log:
                ratios.append(f"{model_label} {case}: {logged} / modelapi = {with_log.rps / plain.rps:.3f}x req/s, "
                              f"{with_log.cpu_us:.1f} vs {plain.cpu_us:.1f} us server CPU per request")  # fmt: skip
            if args.baseline and case != NEW_ID:  # (kept short: the baseline's binary decode had no memory)
                port = free_port()
                label = f"modelapi baseline ({git_commit(args.baseline)})"
                cmd = [py, "-m", "modelapi_runtime.cli", "serve", "--model-uri", path.as_uri(), "--name", "m",
                       "--port", str(port), "--host", "127.0.0.1", "--threads", "1", "--model-dir",
                       str(workdir / "cache"), "--termination-log", str(workdir / "term.log"),
                       "--drain-seconds", "0"]  # fmt: skip
                env = {"PYTHONPATH": str(args.baseline.resolve() / "runtime")}
                base = run(label, model_label, case, cmd, f"http://127.0.0.1:{port}/v2/health/ready",
                           f"http://127.0.0.1:{port}{path_url}", body, env)  # fmt: skip
                now = results.get("modelapi")
                if base and now:
                    ratios.append(f"{model_label} {case}: modelapi / {label} = {now.rps / base.rps:.3f}x req/s, "
                                  f"{now.cpu_us:.1f} vs {base.cpu_us:.1f} us server CPU per request")  # fmt: skip
            if not case.startswith("v2 binary"):
                port = free_port()
                results["plain FastAPI"] = run(
                    "plain FastAPI", model_label, case,
                    [py, str(HERE / "peers" / "plain_fastapi.py"), str(path), str(port)],
                    f"http://127.0.0.1:{port}/docs", f"http://127.0.0.1:{port}{path_url}", body,
                )  # fmt: skip
            if kserve_py:
                port = free_port()
                results["KServe"] = run(
                    "KServe ModelServer", model_label, case,
                    [kserve_py, str(HERE / "peers" / "kserve_server.py"), str(path), str(port)],
                    f"http://127.0.0.1:{port}/v2/health/ready", f"http://127.0.0.1:{port}{path_url}", body,
                )  # fmt: skip
            kserve_result = results.get("KServe")
            if kserve_py and vegeta_bin and kserve_result and case != NEW_ID:  # vegeta repeats one body
                rate = max(1, int(kserve_result.rps / 2))
                for label, extra in variants:  # our default configuration, and batching where the case has it
                    if label in (UVICORN_LAYER, logged):
                        continue
                    port = free_port()
                    cmd = [runtime_bin, "serve", "--model-uri", path.as_uri(), "--name", "m", "--port", str(port),
                           "--host", "127.0.0.1", "--threads", "1", "--model-dir", str(workdir / "cache"),
                           "--termination-log", str(workdir / "term.log"), "--drain-seconds", "0", *extra]  # fmt: skip
                    run_open(label, model_label, case, cmd, f"http://127.0.0.1:{port}/v2/health/ready",
                             f"http://127.0.0.1:{port}{path_url}", body, rate)  # fmt: skip
                port = free_port()
                run_open("KServe ModelServer", model_label, case,
                         [kserve_py, str(HERE / "peers" / "kserve_server.py"), str(path), str(port)],
                         f"http://127.0.0.1:{port}/v2/health/ready", f"http://127.0.0.1:{port}{path_url}", body,
                         rate)  # fmt: skip
            ours = {k: r for k, r in results.items() if k.startswith("modelapi") and k not in (UVICORN_LAYER, logged)
                    and r}  # fmt: skip
            best = max(ours.values(), key=lambda r: r.rps, default=None)
            for peer in ("KServe", "plain FastAPI"):
                other = results.get(peer)
                if best and other and other.rps > 0:
                    cpu = min(r.cpu_us for r in ours.values())
                    ratios.append(f"{model_label} {case}: modelapi / {peer} = {best.rps / other.rps:.1f}x req/s, "
                                  f"{other.cpu_us / cpu:.1f}x less server CPU per request; "
                                  f"modelapi p99 {best.p99_ms:.2f} ms vs {peer} p50 {other.p50_ms:.2f} ms")  # fmt: skip

    load_after = os.getloadavg()
    table = [
        f"### Run of {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs "
        f"({_cpu_model()}), Linux {platform.release()}, Python {platform.python_version()}. "
        f"Server on CPU {SERVER_CPU}, wrk on CPU {LOAD_CPU}, {CONNECTIONS} connections, {args.duration} s per case"
        f"{f', best of {args.repeat}' if args.repeat > 1 else ''}"
        f"{f' in each of {args.server_starts} starts of each server' if args.server_starts > 1 else ''}. "
        f"Load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f}.",
        "",
        "Peers, each at its best and with the same onnxruntime session options (1 intra-op, 1 inter-op thread): "
        "KServe ModelServer without per-request logging (latency logging off, access and trace loggers at WARNING; "
        "peers/kserve_server.py), plain FastAPI and bare uvicorn with the access log off; modelapi logs nothing per "
        "request by default.",
        "",
        "| model | case | server | req/s | p50 ms | p99 ms | non-2xx | server CPU µs/req |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for model_label, case, label, r in rows:
        if r:
            table.append(f"| {model_label} | {case} | {label} | {r.rps:.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} "
                         f"| {r.non2xx} | {r.cpu_us:.1f} |")  # fmt: skip
        else:
            table.append(f"| {model_label} | {case} | {label} | failed | | | | |")
    heading = "Ratios (best modelapi configuration for the case, default HTTP layer):"
    table += ["", heading, ""] + [f"- {r}" for r in ratios] + [""]
    if open_rows:
        table += [
            "Open loop (vegeta, a constant rate of half KServe's closed-loop req/s, "
            f"{args.open_loop_duration} s; modelapi in its default configuration, and with batching 16/2ms on the "
            "MLP: work-conserving, a request that finds the model idle runs at once):",
            "",
            "| model | case | server | rate req/s | p50 ms | p99 ms | success |",
            "|---|---|---|---:|---:|---:|---:|",
        ]
        for model_label, case, label, o in open_rows:
            if o:
                table.append(f"| {model_label} | {case} | {label} | {o.rate} | {o.p50_ms:.2f} | {o.p99_ms:.2f} "
                             f"| {o.success:.4f} |")  # fmt: skip
            else:
                table.append(f"| {model_label} | {case} | {label} | failed | | | |")
        table.append("")
    table += [
        f"Commit {git_commit()}. `pip freeze` of each environment:",
        "",
        "<details><summary>modelapi (" + sys.executable + ")</summary>",
        "",
        "```",
        pip_freeze(sys.executable),
        "```",
        "</details>",
        "",
    ]
    if kserve_py:
        table += [f"<details><summary>KServe ({kserve_py})</summary>", "", "```", pip_freeze(kserve_py), "```",
                  "</details>", ""]  # fmt: skip
    text = "\n".join(table)
    print(text)
    if args.out:
        with args.out.open("a") as f:
            f.write(text + "\n")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown CPU"


if __name__ == "__main__":
    sys.exit(main())
