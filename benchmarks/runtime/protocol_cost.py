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

``--connections N`` (with ``MODELAPI_MAX_BATCH_SIZE=N`` or more, say) measures dynamic batching: each round feeds
one request to each of N connections, then lets the loop run until all N are answered, so the batcher merges
them; the time per request is the round's divided by N. With one connection (the default) a request is answered
within its ``data_received`` when the model runs inline without a batcher.

    MODELAPI_MAX_BATCH_SIZE=16 MODELAPI_MAX_LATENCY_MS=2 .venv/bin/python benchmarks/runtime/protocol_cost.py \
        --clock cpu --connections 16 --random-values

``--random-values`` sends the rows bench.py sends (random float32 values: about 16 KB of v1 JSON for the MLP's 784,
against 4.5 KB for the default short values).
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


class Answered:
    """The connections of a round not yet answered; ``wait`` until each has written."""

    def __init__(self) -> None:
        self.pending: set[int] = set()
        self.done: asyncio.Future[None] | None = None

    def add(self, connection: int) -> None:
        self.pending.discard(connection)
        if not self.pending and self.done is not None and not self.done.done():
            self.done.set_result(None)

    async def wait(self) -> None:
        if self.pending:
            self.done = asyncio.get_running_loop().create_future()
            await self.done
            self.done = None


class NullTransport(asyncio.Transport):
    """Counts the writes, keeps nothing."""

    def __init__(self, answered: Answered | None = None) -> None:
        super().__init__()
        self.writes = 0
        self.closing = False
        self.answered = answered

    def write(self, data: Any) -> None:
        self.writes += 1
        if self.answered is not None:
            self.answered.add(id(self))

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


def requests(features: int, random_values: bool = False) -> dict[str, list[bytes]]:
    """Whole HTTP/1.1 requests per case (one row of ``features`` float32 values), sent in turn: one request for
    each case but "v2 binary, new id", whose requests differ in their header's id (no header is seen twice in a
    row of fewer than ``DISTINCT_IDS`` requests). ``random_values``: the row bench.py sends (standard normal
    float32 values, seed 0: about 16 KB of JSON for 784 of them) instead of short ones (about 4.5 KB)."""
    import numpy as np  # noqa: PLC0415 - the child imports what the checkout under test needs

    if random_values:
        values = np.random.default_rng(0).standard_normal((1, features)).astype(np.float32).tolist()[0]
    else:
        values = [0.25 * (i % 7) - 0.5 for i in range(features)]
    v1 = json.dumps({"instances": [values]}).encode()
    tensor = {"name": "x", "shape": [1, features], "datatype": "FP32"}
    v2 = json.dumps({"inputs": [{**tensor, "data": values}]}).encode()

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


async def measure(
    model: Path,
    features: int,
    count: int,
    repeat: int,
    clock: str = "wall",
    connections: int = 1,
    random_values: bool = False,
) -> dict[str, float]:
    """µs per request for each case: the best of ``repeat`` runs of ``count`` requests on ``connections``
    connections (see the module's docstring)."""
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
        for case, sent in requests(features, random_values).items():
            if connections > 1:
                out[case] = await _measure_batched(config, loop, sent, count, repeat, now, connections) * 1e6
                continue
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


async def _measure_batched(
    config: Any,
    loop: asyncio.AbstractEventLoop,
    sent: list[bytes],
    count: int,
    repeat: int,
    now: Any,
    connections: int,
) -> float:
    """Seconds per request: rounds of one request on each of ``connections`` connections, each round awaited until
    every connection is answered (the batcher merges a round), best of ``repeat`` runs of about ``count``."""
    from uvicorn.server import ServerState  # noqa: PLC0415

    answered = Answered()
    pairs = []
    for _ in range(connections):
        protocol = config.http_protocol_class(config=config, server_state=ServerState(), app_state={}, _loop=loop)
        transport = NullTransport(answered)
        protocol.connection_made(transport)
        pairs.append((protocol, transport))
    rounds = max(1, count // connections)
    turns = (sent * (rounds * connections // len(sent) + 1))[: rounds * connections]

    async def run(n: int) -> None:
        i = 0
        everyone = {id(transport) for _protocol, transport in pairs}
        for _ in range(n):
            answered.pending = set(everyone)
            for protocol, _transport in pairs:
                protocol.data_received(turns[i % len(turns)])
                i += 1
            await answered.wait()

    await run(max(1, rounds // 10))  # warm-up
    best = float("inf")
    for _ in range(repeat):
        started = now()
        await run(rounds)
        best = min(best, (now() - started) / (rounds * connections))
    if any(t.closing for _p, t in pairs):
        raise SystemExit("not every request was answered on a kept-alive connection")
    for protocol, _transport in pairs:
        protocol.connection_lost(None)
    return best


def child(args: argparse.Namespace) -> int:
    import uvloop  # noqa: PLC0415 - serve's event loop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result = runner.run(
            measure(
                args.model, args.features, args.requests, args.repeat, args.clock, args.connections, args.random_values
            )
        )
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
               "--result", str(result_file), "--connections", str(args.connections)]  # fmt: skip
        if args.random_values:
            cmd.append("--random-values")
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
    ap.add_argument(
        "--connections",
        type=int,
        default=1,
        help="connections fed a request each per round, answered before the next (dynamic batching)",
    )
    ap.add_argument(
        "--random-values", action="store_true", help="the rows bench.py sends (random floats: longer JSON numbers)"
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
