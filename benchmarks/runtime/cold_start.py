"""Cold start from a local S3: parallel ranged download vs one get_object stream, and a cache hit.

    .venv/bin/python benchmarks/runtime/cold_start.py [--mib 1024] [--endpoint http://127.0.0.1:7070]

Without --endpoint it starts moto's S3 server (a Python server: it caps what parallelism can
show; versitygw from the e2e harness is the real gateway). Credentials: the standard AWS chain
(test/test for moto).
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
import time
from pathlib import Path

import boto3

from modelapi_runtime.storage import TransferOptions, fetch

MiB = 1024 * 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--endpoint", default=None)
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
    try:
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        s3.create_bucket(Bucket="bench")
        blob = os.urandom(args.mib * MiB)
        s3.put_object(Bucket="bench", Key="big.bin", Body=blob)
        del blob
        uri = "s3://bench/big.bin"
        results = {}
        for label, options in (
            ("one stream", TransferOptions(concurrency=1, part_size=args.mib * MiB + 1, endpoint=endpoint)),
            ("8 parallel ranges of 16 MiB", TransferOptions(concurrency=8, part_size=16 * MiB, endpoint=endpoint)),
        ):
            with tempfile.TemporaryDirectory() as cache:
                t = time.perf_counter()
                a = fetch(uri, Path(cache), options=options)
                results[label] = time.perf_counter() - t
                t = time.perf_counter()
                hit = fetch(uri, Path(cache), sha256=a.sha256, options=options)
                assert not hit.downloaded
                results["cache hit (sha256 known)"] = time.perf_counter() - t
        for k, v in results.items():
            print(f"{k:32} {v:8.3f} s")
        print(f"parallel speed-up: {results['one stream'] / results['8 parallel ranges of 16 MiB']:.1f}x "
              f"({args.mib} MiB, endpoint {'moto' if server else endpoint})")  # fmt: skip
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
