"""The pod's CPU for one node-cache hit, outside Kubernetes: what a cache hit costs a model pod's CPU quota.

A local store (HTTP, ranges) and the cache agent (``modelapi_runtime.cache_agent``) run in one child process, the
pod's ``storage.fetch`` through ``NodeCacheClient`` in another, and each hit is measured by ``getrusage`` of the pod's
process (its CPU) and the wall clock. One fill first, then ``--hits`` hits into fresh pod directories. With
``--before DIR`` (a ``runtime/`` directory of another commit, e.g. ``git archive bb4d05f runtime | tar -x -C DIR``) the
two trees' agents and pods take turns, four hits at a time::

    python benchmarks/coldstart/hit_cpu.py --mib 256 --hits 16 --before /tmp/before/runtime

Figures: RESULTS.md, "Where a cache hit's transfer went".
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUNTIME = HERE.parents[1] / "runtime"

NODE = r"""
import hashlib, http.server, sys, threading
sys.path.insert(0, sys.argv[1])
from modelapi_runtime.cache_agent.cache import NodeCache
from modelapi_runtime.cache_agent.server import make_server
from modelapi_runtime.cache_agent.settings import CacheAgentSettings
data = open(sys.argv[2], "rb").read()
etag = hashlib.md5(data).hexdigest()
class Store(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args): pass
    def do_HEAD(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("ETag", f'"{etag}"')
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
    def do_GET(self):
        rng = self.headers.get("Range")
        s, e = (int(v) for v in rng.removeprefix("bytes=").split("-")) if rng else (0, len(data) - 1)
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(e - s + 1))
        self.end_headers()
        self.wfile.write(memoryview(data)[s : e + 1])
store = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Store)
threading.Thread(target=store.serve_forever, daemon=True).start()
url = f"http://127.0.0.1:{store.server_address[1]}"
allowed = [url, *sys.argv[4:]]  # and an S3 endpoint (start_cpu.py --s3)
agent = make_server(NodeCache(CacheAgentSettings(dir=sys.argv[3], max_mib=1 << 16, allowed_endpoints=allowed)),
                    "127.0.0.1", 0, 16)
print(f"http://127.0.0.1:{agent.server_address[1]} {url}", flush=True)
agent.serve_forever()
"""

POD = r"""
import json, resource, shutil, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from modelapi_runtime.node_cache import NodeCacheClient
from modelapi_runtime.storage import fetch
agent, store, sha256, work, count = sys.argv[2], sys.argv[3], sys.argv[4], Path(sys.argv[5]), int(sys.argv[6])
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
for i in range(count):
    pod = work / f"pod-{i}"
    c, t = cpu(), time.perf_counter()
    got = fetch(f"{store}/model.onnx", pod, sha256=sha256, remote=NodeCacheClient(agent))
    print(json.dumps({"origin": got.origin, "wall": time.perf_counter() - t, "cpu": cpu() - c}), flush=True)
    shutil.rmtree(pod)
"""


class Tree:
    def __init__(self, name: str, runtime: Path, artifact: Path, sha256: str, work: Path) -> None:
        self.name, self.runtime, self.sha256 = name, runtime, sha256
        self.work = work / name
        self.node = subprocess.Popen(
            [sys.executable, "-c", NODE, str(runtime), str(artifact), str(self.work / "node-cache")],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.node.stdout is not None
        self.agent, self.store = self.node.stdout.readline().split()

    def pods(self, count: int) -> list[dict[str, float | str]]:
        out = subprocess.run(
            [sys.executable, "-c", POD, str(self.runtime), self.agent, self.store, self.sha256, str(self.work / "pods"),
             str(count)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        return [json.loads(line) for line in out.stdout.splitlines()]

    def close(self) -> None:
        self.node.terminate()
        self.node.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--hits", type=int, default=16)
    parser.add_argument("--before", type=Path, help="another commit's runtime/ directory, measured in turns")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hit-cpu-") as tmp:
        work = Path(tmp)
        artifact = work / "model.onnx"
        artifact.write_bytes(os.urandom(args.mib * 1024 * 1024))
        sha256 = hashlib.sha256(artifact.read_bytes()).hexdigest()
        trees = [Tree("this tree", RUNTIME, artifact, sha256, work)]
        if args.before:
            trees.insert(0, Tree("before", args.before, artifact, sha256, work))
        hits: dict[str, list[dict[str, float | str]]] = {tree.name: [] for tree in trees}
        try:
            for tree in trees:
                fill = tree.pods(1)[0]
                print(f"{tree.name}: the fill, origin {fill['origin']}, pod CPU {fill['cpu']:.3f} s")
            while len(hits[trees[-1].name]) < args.hits:
                for tree in trees:
                    hits[tree.name] += tree.pods(min(4, args.hits - len(hits[tree.name])))
        finally:
            for tree in trees:
                tree.close()
    load = os.getloadavg()[0]
    print(
        f"{args.mib} MiB, {args.hits} hits each, 1-minute load {load:.1f}, {time.strftime('%H:%M UTC', time.gmtime())}"
    )
    for name, runs in hits.items():
        assert all(run["origin"] == "cache" for run in runs), runs
        cpu = statistics.median(float(run["cpu"]) for run in runs)
        wall = statistics.median(float(run["wall"]) for run in runs)
        print(f"{name}: pod CPU median {cpu:.3f} s, wall median {wall:.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
