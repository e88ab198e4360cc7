"""Cold start from a local S3: parallel ranged download vs one get_object stream, and a cache hit.

    .venv/bin/python benchmarks/runtime/cold_start.py [--mib 1024] [--endpoint http://127.0.0.1:PORT]

The artifact is a real ONNX model of about ``--mib`` MiB (an MLP 256-H-H-10 whose H x H weight
matrix carries the size), uploaded with boto3's multipart upload. Measured, each in a fresh cache:

- the transfer alone: one get_object stream vs parallel ranged GETs (a small sweep of concurrency
  and part size), each hashed and written as ``fetch`` does;
- a whole start as ``modelapi-runtime serve`` does it (``lifecycle.load``: pull, onnxruntime
  session, warm-up inference), first with an empty cache, then again with the cache filled: with
  ``--sha256`` (no request at all) and without it (one HEAD compares the ETag).

Against versitygw from the e2e harness (``cluster.sh up``; the env file has S3_ENDPOINT_URL and
the credentials). Without --endpoint it starts moto's S3 server, a Python server that caps what
parallelism can show. Credentials: the standard AWS chain (test/test for moto).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import itertools
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import numpy as np
import onnx
from boto3.s3.transfer import TransferConfig
from onnx import TensorProto, helper, numpy_helper

from modelapi_runtime.lifecycle import load
from modelapi_runtime.settings import RuntimeSettings
from modelapi_runtime.storage import TransferOptions, fetch

MiB = 1024 * 1024
HERE = Path(__file__).resolve().parent


def big_mlp(path: Path, mib: int) -> Path:
    """An MLP 256-H-H-10 of about ``mib`` MiB (H x H float32 weights), written without a checker pass."""
    hidden = max(64, int((mib * MiB / 4) ** 0.5))
    rng = np.random.default_rng(0)
    sizes = (256, hidden, hidden, 10)
    nodes, inits, prev = [], [], "x"
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        w = rng.standard_normal((fan_in, fan_out), dtype=np.float32)
        w *= np.float32(1 / np.sqrt(fan_in))
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(np.zeros(fan_out, np.float32), f"b{i}")]
        del w
        out = "y" if i == len(sizes) - 2 else f"h{i}"
        nodes.append(helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], [out if out == "y" else f"g{i}"]))
        if out != "y":
            nodes.append(helper.make_node("Relu", [f"g{i}"], [out]))
        prev = out
    graph = helper.make_graph(
        nodes,
        "big_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", sizes[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", sizes[-1]])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="modelapi-bench")
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def transfers(
    say: Callable[[str], None], title: str, uri: str, endpoint: str, size: int, work: Path,
    variants: list[tuple[str, int, int]],
) -> str:  # fmt: skip
    """Each variant into a fresh cache (``fetch``: receive, write, SHA-256, fsync, rename)."""
    say(f"  transfer, {title}:")
    seconds: dict[str, float] = {}
    digest = ""
    for label, concurrency, part in variants:
        with tempfile.TemporaryDirectory(dir=work) as cache:
            options = TransferOptions(concurrency=concurrency, part_size=part, endpoint=endpoint)
            t = time.perf_counter()
            digest = fetch(uri, Path(cache), options=options).sha256
            seconds[label] = time.perf_counter() - t
        say(f"    {label:40} {seconds[label]:6.2f} s  {size / MiB / seconds[label]:6.0f} MiB/s  "
            f"(load {os.getloadavg()[0]:.2f})")  # fmt: skip
    base = seconds[variants[0][0]]
    say(f"    parallel speed-up: default {base / seconds[variants[1][0]]:.2f}x, "
        f"best {base / min(v for k, v in seconds.items() if k != variants[0][0]):.2f}x")  # fmt: skip
    return digest


@contextlib.contextmanager
def throttled(endpoint: str, mib_per_s: float) -> Iterator[str]:
    upstream = urllib.parse.urlsplit(endpoint)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "peers" / "throttle_proxy.py"), str(port), upstream.hostname or "127.0.0.1",
         str(upstream.port or 80), str(mib_per_s)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the throttling proxy did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--endpoint", default=None)
    ap.add_argument("--bucket", default="bench")
    ap.add_argument("--workdir", type=Path, default=None, help="where the artifact and caches go (default: /tmp)")
    ap.add_argument("--sweep", action="store_true", help="also try other concurrency / part sizes")
    ap.add_argument("--per-connection-mib-s", type=float, default=64,
                    help="also measure through a proxy that caps each connection at this rate, as a remote store "
                         "does (0: skip)")  # fmt: skip
    args = ap.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
    server = None
    endpoint = args.endpoint
    if endpoint is None:
        from moto.server import ThreadedMotoServer  # noqa: PLC0415 - only without --endpoint

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        endpoint = f"http://127.0.0.1:{port}"
    work = Path(tempfile.mkdtemp(prefix="modelapi-cold-", dir=args.workdir))

    def say(line: str) -> None:
        print(line, flush=True)

    try:
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
        if args.bucket not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
            s3.create_bucket(Bucket=args.bucket)
        artifact = big_mlp(work / "model.onnx", args.mib)
        size = artifact.stat().st_size
        t = time.perf_counter()
        s3.upload_file(
            str(artifact), args.bucket, "big/model.onnx",
            Config=TransferConfig(multipart_threshold=64 * MiB, multipart_chunksize=64 * MiB, max_concurrency=4),
        )  # fmt: skip
        upload_s = time.perf_counter() - t
        artifact.unlink()
        uri = f"s3://{args.bucket}/big/model.onnx"
        say(f"artifact: {size / MiB:.0f} MiB ONNX model, multipart upload {upload_s:.1f} s; endpoint "
            f"{'moto' if server else endpoint}; load average {os.getloadavg()[0]:.2f}")  # fmt: skip

        one, default = ("one get_object stream", 1, size + 1), ("8 parallel ranges of 16 MiB (default)", 8, 16 * MiB)
        variants = [one, default]
        if args.sweep:
            variants += [
                (f"{c} parallel ranges of {p} MiB", c, p * MiB) for c, p in ((4, 16), (16, 16), (8, 8), (8, 32))
            ]
        digest = transfers(say, "direct", uri, endpoint, size, work, variants)
        if args.per_connection_mib_s and not server:
            with throttled(endpoint, args.per_connection_mib_s) as proxy:
                transfers(say, f"each connection capped at {args.per_connection_mib_s:g} MiB/s", uri, proxy, size,
                          work, [one, default])  # fmt: skip

        cache = work / "cache"
        base = {"model_uri": uri, "name": "big", "model_dir": str(cache), "s3_endpoint": endpoint, "threads": 1}
        for label, extra in (
            ("start, empty cache", {}),
            ("start, cache hit with --sha256 (no request)", {"sha256": digest}),
            ("start, cache hit without sha256 (one HEAD)", {}),
        ):
            loaded = load(RuntimeSettings(**base, **extra))  # type: ignore[arg-type]
            cs = loaded.cold_start
            total = cs.download_s + cs.load_s + cs.warmup_s
            say(f"  {label:44} ready after {total:6.2f} s = download {cs.download_s:6.3f} + load {cs.load_s:5.2f} "
                f"+ warm-up {cs.warmup_s:5.3f} (cache hit: {cs.cache_hit})")  # fmt: skip
            del loaded
        say(f"run of {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}, "
            f"load average after: {os.getloadavg()[0]:.2f}")  # fmt: skip
    finally:
        if server is not None:
            server.stop()
        import shutil  # noqa: PLC0415

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
