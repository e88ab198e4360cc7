"""The runtime's own CPU cost per request, without sockets: whole HTTP requests fed to its protocol object in-process.

On a shared machine the closed-loop benchmark (bench.py) moves with other tenants' load; this one does not move
much: it times ``data_received`` of complete requests (HTTP parsing, routing, limits, decode, onnxruntime, encode,
metrics, the response bytes written to a transport that drops them) and keeps the best of many repeats, so two
checkouts can be compared within a few percent while other work runs. What it leaves out is the kernel's share
(socket reads and writes, about 15-20 µs a request here), so a difference in µs is the same on a live server while
a percentage is larger here than there.

    .venv/bin/python benchmarks/runtime/protocol_cost.py [--baseline CHECKOUT] [--requests 5000] [--repeat 15]
        [--clock wall|cpu|process] [--prediction-log PERCENT]

It runs on uvloop, as ``serve`` does. ``--clock cpu`` times with the thread's CPU time instead of the wall clock:
on a machine whose load is far above its cores the wall clock counts the time other processes ran, the CPU time
does not (both still grow somewhat with the load: caches are shared). ``--clock process`` counts every thread of
the server process: what a request costs off the loop too (the tracing exporter's or the prediction log's thread).
The children inherit the environment: ``OTEL_EXPORTER_OTLP_ENDPOINT=...`` measures with tracing on.

``--prediction-log PERCENT`` turns the prediction log on at that sample rate (stdout sink, to /dev/null as in
bench.py); each timed run then lasts until the writer has written every record of it (the loop sleeps meanwhile,
which costs no CPU), so ``--clock process`` counts the writer's work for exactly the run's requests.

``--baseline`` names a checkout of an earlier commit (a git worktree): its ``runtime/`` package is measured in a
child process the same way, and each case prints both and the difference.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CASES = ("v1 JSON", "v2 JSON", "v2 binary", "v2 binary, new id")
DISTINCT_IDS = 4096  # "v2 binary, new id": this many requests, each with its own id, sent in turn


class NullTransport(asyncio.Transport):
    """Counts the writes, keeps nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.closing = False

    def write(self, data: Any) -> None:
        self.writes += 1

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8080)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


def requests(features: int) -> dict[str, list[bytes]]:
    """Whole HTTP/1.1 requests per case (one row of ``features`` float32 values), sent in turn: one request for
    each case but "v2 binary, new id", whose requests differ in their header's id (no header is seen twice in a
    row of fewer than ``DISTINCT_IDS`` requests)."""
    values = [0.25 * (i % 7) - 0.5 for i in range(features)]
    v1 = json.dumps({"instances": [values]}).encode()
    tensor = {"name": "x", "shape": [1, features], "datatype": "FP32"}
    v2 = json.dumps({"inputs": [{**tensor, "data": values}]}).encode()
    import numpy as np  # noqa: PLC0415 - the child imports what the checkout under test needs

    raw = np.asarray(values, dtype=np.float32).tobytes()
    head = json.dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": len(raw)}}],
                       "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}).encode()  # fmt: skip

    def post(path: bytes, ctype: bytes, body: bytes, extra: bytes = b"") -> bytes:
        return (b"POST %s HTTP/1.1\r\nHost: bench\r\nContent-Type: %s\r\n%sContent-Length: %d\r\n\r\n"
                % (path, ctype, extra, len(body))) + body  # fmt: skip

    def binary(head: bytes) -> bytes:
        extra = b"Inference-Header-Content-Length: %d\r\n" % len(head)
        return post(b"/v2/models/m/infer", b"application/octet-stream", head + raw, extra)

    return {
        "v1 JSON": [post(b"/v1/models/m:predict", b"application/json", v1)],
        "v2 JSON": [post(b"/v2/models/m/infer", b"application/json", v2)],
        "v2 binary": [binary(head)],
        "v2 binary, new id": [binary(b'{"id": "%08d", ' % i + head[1:]) for i in range(DISTINCT_IDS)],
    }


async def drained(runtime: Any) -> None:
    """Until the prediction log (if on) has written every record offered so far: its writer is woken at once, as if
    its tick had come (the loop waits without polling much: a poll costs CPU of its own)."""
    predictions = getattr(runtime, "predictions", None)
    if predictions is None or predictions.taken == predictions.offered:
        return
    predictions.wake.set()
    while predictions.taken != predictions.offered:
        await asyncio.sleep(0.002)


async def measure(model: Path, features: int, count: int, repeat: int, clock: str = "wall") -> dict[str, float]:
    """µs per request for each case: the best of ``repeat`` runs of ``count`` requests on one connection."""
    from uvicorn.server import ServerState  # noqa: PLC0415

    from modelapi_runtime.app import create_app  # noqa: PLC0415
    from modelapi_runtime.server import uvicorn_config  # noqa: PLC0415
    from modelapi_runtime.settings import RuntimeSettings  # noqa: PLC0415

    workdir = Path(tempfile.mkdtemp(prefix="modelapi-protocol-cost-"))
    settings = RuntimeSettings(model_uri=model.as_uri(), name="m", model_dir=str(workdir / "cache"), threads=1,
                               termination_log=str(workdir / "term.log"), drain_seconds=0)  # fmt: skip
    app = create_app(settings, freeze_gc=True)
    config = uvicorn_config(app, settings)
    config.load()
    out: dict[str, float] = {}
    async with app.router.lifespan_context(app):
        runtime = app.state.runtime
        for _ in range(600):
            if runtime.service is not None:
                break
            await asyncio.sleep(0.05)
        loop = asyncio.get_running_loop()
        now = {"cpu": time.thread_time, "process": time.process_time}.get(clock, time.perf_counter)
        for case, sent in requests(features).items():
            protocol = config.http_protocol_class(config=config, server_state=ServerState(), app_state={}, _loop=loop)
            transport = NullTransport()
            protocol.connection_made(transport)
            turns = (sent * (count // len(sent) + 1))[:count]  # the requests in turn, built before the clock starts
            for request in turns[: count // 10]:  # warm-up
                protocol.data_received(request)
            best = float("inf")
            for _ in range(repeat):
                started = now()
                for request in turns:
                    protocol.data_received(request)
                await drained(runtime)
                best = min(best, (now() - started) / count)
                await asyncio.sleep(0)
            if transport.writes < count // 10 + count * repeat or transport.closing:
                raise SystemExit(f"{case}: not every request was answered on a kept-alive connection")
            protocol.connection_lost(None)
            out[case] = best * 1e6
    return out


def child(args: argparse.Namespace) -> int:
    import uvloop  # noqa: PLC0415 - serve's event loop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result = runner.run(measure(args.model, args.features, args.requests, args.repeat, args.clock))
    args.result.write_text(json.dumps(result))
    return 0


def run_child(runtime_dir: Path, model: Path, features: int, args: argparse.Namespace) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(runtime_dir)}
    if args.prediction_log:
        env["MODELAPI_PREDICTION_LOG_SAMPLE_RATE"] = str(args.prediction_log)
    with tempfile.TemporaryDirectory(prefix="modelapi-protocol-cost-") as scratch:
        result_file = Path(scratch) / "result.json"
        cmd = [sys.executable, __file__, "--child", "--model", str(model), "--features", str(features),
               "--requests", str(args.requests), "--repeat", str(args.repeat), "--clock", args.clock,
               "--result", str(result_file)]  # fmt: skip
        if args.cpu is not None:
            cmd = ["taskset", "-c", str(args.cpu), *cmd]
        # stdout (the prediction log's records, when on) to /dev/null, as bench.py's servers; the result to a file
        subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, check=True)
        result: dict[str, float] = json.loads(result_file.read_text())
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", type=Path, default=None, help="a checkout of an earlier commit to compare with")
    ap.add_argument("--requests", type=int, default=5000, help="requests per timed run")
    ap.add_argument("--repeat", type=int, default=15, help="timed runs per case; the best is kept")
    ap.add_argument("--cpu", type=int, default=0, help="pin each measurement to this CPU (taskset)")
    ap.add_argument(
        "--clock",
        choices=("wall", "cpu", "process"),
        default="wall",
        help="wall clock, the loop thread's CPU time, or the process's (every thread's) CPU time",
    )
    ap.add_argument(
        "--prediction-log",
        type=float,
        default=0.0,
        metavar="PERCENT",
        help="the prediction log's sample rate (stdout sink to /dev/null); 0: off, unless the environment sets it",
    )
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--features", type=int, default=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    sys.path.insert(0, str(ROOT / "tests" / "unit" / "runtime"))
    import onnx_models  # noqa: PLC0415  (the same model builders the unit tests use)

    workdir = Path(tempfile.mkdtemp(prefix="modelapi-protocol-cost-"))
    models = {"tiny (4-8-3 MLP)": (onnx_models.mlp(workdir / "tiny.onnx", (4, 8, 3)), 4),
              "MLP 784-512-256-10": (onnx_models.mlp(workdir / "mlp.onnx", (784, 512, 256, 10)), 784)}  # fmt: skip
    checkouts = {"this checkout": ROOT / "runtime"}
    if args.baseline:
        checkouts["baseline"] = args.baseline.resolve() / "runtime"
    print("| model | case | " + " | ".join(f"{name} µs/req" for name in checkouts) +
          (" | difference |" if args.baseline else " |"))  # fmt: skip
    print("|---|---|" + "---:|" * (len(checkouts) + (1 if args.baseline else 0)))
    for label, (model, features) in models.items():
        results = {name: run_child(path, model, features, args) for name, path in checkouts.items()}
        for case in CASES:
            cells = [f"{results[name][case]:.2f}" for name in checkouts]
            if args.baseline:
                now, before = results["this checkout"][case], results["baseline"][case]
                cells.append(f"{now - before:+.2f} µs ({(now / before - 1) * 100:+.1f} %)")
            print(f"| {label} | {case} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
