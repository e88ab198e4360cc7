"""A small closed-loop HTTP load generator (stdlib only, for machines without wrk).

N keep-alive connections, each sending the same POST back to back for D seconds; prints one JSON
line: {"rps", "p50_ms", "p95_ms", "p99_ms", "errors"}.

    python load.py URL BODY_FILE [--connections 16] [--duration 20] [--header-length N]
"""

from __future__ import annotations

import argparse
import http.client
import json
import threading
import time
import urllib.parse
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("body", type=Path)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--duration", type=float, default=20)
    ap.add_argument("--header-length", type=int, default=None)
    args = ap.parse_args()
    url = urllib.parse.urlsplit(args.url)
    body = args.body.read_bytes()
    headers = {"Content-Type": "application/json"}
    if args.header_length:
        headers = {
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(args.header_length),
        }
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop = time.monotonic() + args.duration

    def worker() -> None:
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        mine: list[float] = []
        while time.monotonic() < stop:
            t = time.perf_counter()
            try:
                conn.request("POST", url.path, body=body, headers=headers)
                resp = conn.getresponse()
                resp.read()
                if resp.status != 200:
                    errors[0] += 1
            except OSError:
                errors[0] += 1
                conn.close()
                conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
                continue
            mine.append(time.perf_counter() - t)
        with lock:
            latencies.extend(mine)

    started = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(args.connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else 0.0

    print(json.dumps({"rps": round(len(latencies) / elapsed, 1), "p50_ms": round(pct(0.50), 2),
                      "p95_ms": round(pct(0.95), 2), "p99_ms": round(pct(0.99), 2), "errors": errors[0]}))  # fmt: skip


if __name__ == "__main__":
    main()
