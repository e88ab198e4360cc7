"""The node cache over real sockets: the agent's HTTP server, a local store that checks a credential in the query
(as a presigned URL's), moto's S3 server for presigned S3 URLs, and the runtime's fetch through the agent."""

from __future__ import annotations

import hashlib
import http.client
import http.server
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from object_server import ObjectHandler, serving, start_serving

from modelapi_runtime.cache_agent.cache import NodeCache
from modelapi_runtime.cache_agent.protocol import FETCH_PATH
from modelapi_runtime.cache_agent.server import Server, make_server
from modelapi_runtime.cache_agent.settings import CacheAgentSettings
from modelapi_runtime.exceptions import ArtifactAccessDenied, ArtifactTooLarge, ChecksumMismatch, InsufficientStorage
from modelapi_runtime.node_cache import NodeCacheClient, Placement
from modelapi_runtime.storage import TransferOptions, fetch

MiB = 1024 * 1024
GOOD, BAD = "token=good", "token=bad"
OPTIONS = TransferOptions(concurrency=4, part_size=MiB)


def _blob(size: int, seed: int) -> bytes:
    import numpy as np

    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


class _Store(ObjectHandler):
    """Objects readable only with ``?token=good`` (403 otherwise, as S3 answers a bad signature)."""

    def refused(self) -> bool:
        if self.path.partition("?")[2] != GOOD:
            self.answer_empty(403)
            return True
        return False


@pytest.fixture
def store() -> Iterator[tuple[str, type[_Store]]]:
    handler = _Store.fresh()
    with serving(handler) as url:
        yield url, handler


class Agent:
    def __init__(self, server: Server, cache: NodeCache) -> None:
        self.server, self.cache = server, cache
        self.url = f"http://127.0.0.1:{server.server_address[1]}"

    def post(self, head: str, get: str) -> tuple[int, bytes]:
        status, _, body = self.ask({"head": head, "get": get})
        return status, body

    def ask(self, request: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, the body as far as it came: a stream cut short is returned short)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.server.server_address[1], timeout=10)
        try:
            conn.request("POST", FETCH_PATH, json.dumps(request))
            resp = conn.getresponse()
            try:
                body = resp.read()
            except http.client.IncompleteRead as short:
                body = short.partial
            return resp.status, dict(resp.headers), body
        finally:
            conn.close()


@pytest.fixture
def agent_factory(tmp_path: Path) -> Iterator[Any]:
    servers: list[Server] = []

    def make(endpoints: list[str], max_mib: int = 64, pods_dir: Path | None = None) -> Agent:
        settings = CacheAgentSettings(
            dir=str(tmp_path / "node-cache"),
            pods_dir=str(pods_dir) if pods_dir else None,
            max_mib=max_mib,
            allowed_endpoints=endpoints,
            download_part_mib=1,
            download_concurrency=4,
            fill_stall_seconds=5,
        )
        cache = NodeCache(settings)
        server = make_server(cache, "127.0.0.1", 0, 16)
        start_serving(server)
        servers.append(server)
        return Agent(server, cache)

    yield make
    for server in servers:
        server.shutdown()
        server.server_close()


def _pod_fetch(uri: str, pod: Path, agent_url: str, **kwargs: Any) -> tuple[Any, NodeCacheClient]:
    client = NodeCacheClient(agent_url)
    return fetch(uri, pod, options=OPTIONS, remote=client, **kwargs), client


def test_the_first_pod_fills_the_cache_and_the_next_ones_download_nothing(
    store: tuple[str, type[_Store]], agent_factory: Any, tmp_path: Path
) -> None:
    url, handler = store
    data = _blob(3 * MiB + 17, seed=1)
    handler.files["/m/a.onnx"] = data
    agent = agent_factory([url])
    uri = f"{url}/m/a.onnx?{GOOD}"

    first, client = _pod_fetch(uri, tmp_path / "pod-1", agent.url, sha256=hashlib.sha256(data).hexdigest())
    assert (first.origin, first.store_bytes) == ("store", len(data))
    assert first.path.read_bytes() == data
    assert client.fallback is None
    assert handler.sent["/m/a.onnx"] == len(data)

    for pod in ("pod-2", "pod-3-restarted"):
        again, client = _pod_fetch(uri, tmp_path / pod, agent.url)
        assert (again.origin, again.store_bytes) == ("cache", 0)
        assert again.path.read_bytes() == data
        assert client.fallback is None
    assert handler.sent["/m/a.onnx"] == len(data)  # not one more byte left the store

    handler.files["/m/a.onnx"] = data[::-1]  # a new version (new ETag): fetched again, not the stale copy
    newer, _ = _pod_fetch(uri, tmp_path / "pod-4", agent.url)
    assert newer.origin == "store"
    assert newer.path.read_bytes() == data[::-1]


def test_pods_that_start_together_share_one_download(
    store: tuple[str, type[_Store]], agent_factory: Any, tmp_path: Path
) -> None:
    url, handler = store
    data = _blob(8 * MiB, seed=2)
    handler.files["/m/b.onnx"], handler.stall_s = data, 0.1  # the fill lasts while the second pod arrives
    agent = agent_factory([url])
    results: dict[str, Any] = {}

    def pod(name: str) -> None:
        results[name] = _pod_fetch(f"{url}/m/b.onnx?{GOOD}", tmp_path / name, agent.url)[0]

    threads = [threading.Thread(target=pod, args=(f"pod-{n}",)) for n in range(3)]
    for thread in threads:
        thread.start()
        time.sleep(0.05)
    for thread in threads:
        thread.join(30)
    assert sorted(a.origin for a in results.values()) == ["cache", "cache", "store"]
    assert all(a.path.read_bytes() == data for a in results.values())
    assert handler.sent["/m/b.onnx"] == len(data)


def test_a_pod_whose_credentials_cannot_read_the_object_is_refused_the_cached_copy(
    store: tuple[str, type[_Store]], agent_factory: Any, tmp_path: Path
) -> None:
    url, handler = store
    data = _blob(2 * MiB, seed=3)
    handler.files["/m/c.onnx"] = data
    agent = agent_factory([url])
    _pod_fetch(f"{url}/m/c.onnx?{GOOD}", tmp_path / "pod-1", agent.url)  # cached now

    bad = f"{url}/m/c.onnx?{BAD}"
    cached = agent.post(bad, bad)
    handler.files["/m/never-cached.onnx"] = data
    never = f"{url}/m/never-cached.onnx?{BAD}"
    uncached = agent.post(never, never)
    assert cached[0] == uncached[0] == 403
    assert json.loads(cached[1])["reason"] == json.loads(uncached[1])["reason"] == "Forbidden"
    assert b"token" not in cached[1]  # the query (a credential) is never echoed
    assert len(cached[1]) < 1024  # an error, not the artifact
    # a GET URL the pod could read does not help: the HEAD decides, and both must name the same object
    assert agent.post(bad, f"{url}/m/c.onnx?{GOOD}")[0] == 403
    assert agent.post(f"{url}/m/c.onnx?{GOOD}", f"{url}/m/never-cached.onnx?{GOOD}")[0] == 400

    with pytest.raises(ArtifactAccessDenied):  # the runtime says so as a direct download would
        _pod_fetch(bad, tmp_path / "pod-2", agent.url)


def test_a_pod_that_asks_the_agent_sends_no_head_and_keeps_the_stores_etag_from_the_answer(
    store: tuple[str, type[_Store]], agent_factory: Any, tmp_path: Path
) -> None:
    url, handler = store
    data = _blob(2 * MiB, seed=21)
    handler.files["/m/h.onnx"] = data
    agent = agent_factory([url])
    uri = f"{url}/m/h.onnx?{GOOD}"
    for pod in ("pod-1", "pod-2"):  # a miss (the agent fills), then a hit
        before = len(handler.requests)
        artifact, client = _pod_fetch(uri, tmp_path / pod, agent.url)
        assert client.fallback is None
        heads = [r for r in handler.requests[before:] if r.startswith("HEAD ")]
        assert len(heads) == 1  # the agent's access check with the pod's URL; none from the pod itself
        ref = json.loads(next((tmp_path / pod / "refs").iterdir()).read_text())
        assert ref == {"etag": f'"{hashlib.md5(data).hexdigest()}"', "size": len(data), "sha256": artifact.sha256}

    # a restarted container (the same volume, no sha256 in the spec) compares the ref with its own HEAD: no agent
    hits = _agent_metrics(agent)["modelapi_cache_hits_total"]
    again, _ = _pod_fetch(uri, tmp_path / "pod-2", agent.url)
    assert (again.downloaded, again.origin) == (False, "cache")
    assert _agent_metrics(agent)["modelapi_cache_hits_total"] == hits


def test_an_artifact_over_the_pods_bound_or_room_is_refused_by_the_agent_before_any_fill(
    store: tuple[str, type[_Store]], agent_factory: Any, tmp_path: Path
) -> None:
    url, handler = store
    data = _blob(3 * MiB, seed=22)
    handler.files["/m/l.onnx"] = data
    agent = agent_factory([url])
    uri = f"{url}/m/l.onnx?{GOOD}"

    status, _, body = agent.ask({"head": uri, "get": uri, "max_bytes": MiB})
    assert status == 413
    assert json.loads(body)["reason"] == "TooLarge"
    assert json.loads(body)["size"] == len(data)
    for bad in ("big", -2, 1.5, True):
        assert agent.ask({"head": uri, "get": uri, "max_bytes": bad})[0] == 400

    bounded = TransferOptions(concurrency=4, part_size=MiB, max_bytes=2 * MiB)
    with pytest.raises(ArtifactTooLarge, match=r"over the bound of 0\.00 GiB \(2097152 bytes\)"):
        fetch(uri, tmp_path / "pod-1", options=bounded, remote=NodeCacheClient(agent.url))
    with pytest.raises(InsufficientStorage, match="the disk under the model volume has"):
        fetch(uri, tmp_path / "pod-2", options=OPTIONS, remote=NodeCacheClient(agent.url), free_space=lambda _: MiB)
    assert "/m/l.onnx" not in handler.sent  # not one byte was fetched from the store
    assert _agent_metrics(agent)["modelapi_cache_misses_total"] == 0
    assert not any((tmp_path / "node-cache" / "objects").iterdir())


def test_a_corrupt_entry_is_detected_dropped_and_fetched_again(
    store: tuple[str, type[_Store]], agent_factory: Any, tmp_path: Path
) -> None:
    url, handler = store
    data = _blob(3 * MiB, seed=4)
    handler.files["/m/d.onnx"] = data
    agent = agent_factory([url])
    uri = f"{url}/m/d.onnx?{GOOD}"
    _pod_fetch(uri, tmp_path / "pod-1", agent.url)
    (blob,) = [p for p in (tmp_path / "node-cache" / "objects").iterdir() if p.suffix != ".json"]
    with blob.open("r+b") as f:  # one flipped byte in the middle
        f.seek(len(data) // 2)
        byte = f.read(1)
        f.seek(len(data) // 2)
        f.write(bytes([byte[0] ^ 0xFF]))

    again, client = _pod_fetch(uri, tmp_path / "pod-2", agent.url, sha256=hashlib.sha256(data).hexdigest())
    assert again.path.read_bytes() == data
    assert client.fallback is None
    assert again.origin == "store"  # the agent dropped the copy and filled it again
    assert handler.sent["/m/d.onnx"] == 2 * len(data)
    assert hashlib.sha256(blob.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
    third, _ = _pod_fetch(uri, tmp_path / "pod-3", agent.url)
    assert third.origin == "cache"


def _pod_volume(pods: Path) -> tuple[str, Path]:
    """A new pod's UID and its emptyDir ``models`` under the kubelet's pods directory ``pods``."""
    uid = str(uuid.uuid4())
    volume = pods / uid / "volumes" / "kubernetes.io~empty-dir" / "models"
    volume.mkdir(parents=True)
    return uid, volume


def test_a_verified_entry_is_placed_in_the_pods_volume_as_a_hard_link_and_not_streamed(
    store: tuple[str, type[_Store]], agent_factory: Any, tmp_path: Path
) -> None:
    url, handler = store
    data = _blob(3 * MiB + 1, seed=11)
    handler.files["/m/p.onnx"] = data
    pods = tmp_path / "kubelet" / "pods"
    agent = agent_factory([url], pods_dir=pods)
    uri = f"{url}/m/p.onnx?{GOOD}"
    expected = hashlib.sha256(data).hexdigest()

    uid, volume = _pod_volume(pods)  # replica 1: a miss, streamed while the agent fills
    first = fetch(uri, volume, options=OPTIONS, remote=NodeCacheClient(agent.url, Placement(uid, volume)))
    assert first.origin == "store"
    served = _agent_metrics(agent).get('modelapi_cache_served_bytes_total{origin="cache"}', 0.0)

    uid, volume = _pod_volume(pods)  # replica 2: the entry linked into its volume
    client = NodeCacheClient(agent.url, Placement(uid, volume))
    second = fetch(uri, volume, sha256=expected, options=OPTIONS, remote=client)
    (blob,) = [p for p in (tmp_path / "node-cache" / "objects").iterdir() if p.suffix != ".json"]
    assert (second.origin, second.store_bytes, client.fallback) == ("cache", 0, None)
    assert second.path.stat().st_ino == blob.stat().st_ino
    assert second.path.stat().st_mode & 0o777 == 0o444
    assert second.path.read_bytes() == data
    assert sorted(p.name for p in volume.iterdir()) == ["blobs", "refs", "tmp"]  # no proof or placed file left
    metrics = _agent_metrics(agent)
    assert metrics['modelapi_cache_placed_total{method="link"}'] == 1
    assert metrics['modelapi_cache_placed_bytes_total{method="link"}'] == len(data)
    assert metrics.get('modelapi_cache_served_bytes_total{origin="cache"}', 0.0) == served  # nothing streamed
    assert handler.sent["/m/p.onnx"] == len(data)


def test_a_pod_not_on_this_node_or_without_access_is_not_placed_anything(
    store: tuple[str, type[_Store]], agent_factory: Any, tmp_path: Path
) -> None:
    url, handler = store
    data = _blob(MiB, seed=12)
    handler.files["/m/q.onnx"] = data
    pods = tmp_path / "kubelet" / "pods"
    agent = agent_factory([url], pods_dir=pods)
    _pod_fetch(f"{url}/m/q.onnx?{GOOD}", tmp_path / "pod-1", agent.url)

    elsewhere = tmp_path / "another-node-pod"  # its UID is not under this kubelet: streamed, as before
    client = NodeCacheClient(agent.url, Placement(str(uuid.uuid4()), elsewhere))
    streamed = fetch(f"{url}/m/q.onnx?{GOOD}", elsewhere, options=OPTIONS, remote=client)
    assert (streamed.origin, client.fallback) == ("cache", None)
    assert streamed.path.stat().st_nlink == 1
    assert _agent_metrics(agent)["modelapi_cache_placement_refusals_total"] == 1

    uid, volume = _pod_volume(pods)  # credentials that cannot read the object: refused before any placement
    client = NodeCacheClient(agent.url, Placement(uid, volume))
    with pytest.raises(ArtifactAccessDenied):
        fetch(f"{url}/m/q.onnx?{BAD}", volume, options=OPTIONS, remote=client)
    assert not [p for p in volume.rglob("*") if p.is_file()]


def test_evicting_a_placed_entry_leaves_the_pods_linked_file_whole(
    store: tuple[str, type[_Store]], agent_factory: Any, tmp_path: Path
) -> None:
    url, handler = store
    one, two = _blob(3 * MiB, seed=14), _blob(3 * MiB, seed=15)
    handler.files["/m/one.onnx"], handler.files["/m/two.onnx"] = one, two
    pods = tmp_path / "kubelet" / "pods"
    agent = agent_factory([url], max_mib=4, pods_dir=pods)
    _pod_fetch(f"{url}/m/one.onnx?{GOOD}", tmp_path / "pod-1", agent.url)
    uid, volume = _pod_volume(pods)
    placed = fetch(
        f"{url}/m/one.onnx?{GOOD}", volume, options=OPTIONS, remote=NodeCacheClient(agent.url, Placement(uid, volume))
    )
    assert placed.origin == "cache"
    assert placed.path.stat().st_nlink == 2  # the entry and the pod's name for it

    _pod_fetch(f"{url}/m/two.onnx?{GOOD}", tmp_path / "pod-3", agent.url)  # fits only by evicting the first
    assert _agent_metrics(agent)["modelapi_cache_evictions_total"] == 1
    assert placed.path.stat().st_nlink == 1  # the cache let go of its name; the pod's file is the same inode
    assert placed.path.read_bytes() == one


def test_a_corrupt_entry_is_detected_before_it_is_placed_and_fetched_again(
    store: tuple[str, type[_Store]], agent_factory: Any, tmp_path: Path
) -> None:
    url, handler = store
    data = _blob(2 * MiB, seed=13)
    handler.files["/m/r.onnx"] = data
    pods = tmp_path / "kubelet" / "pods"
    agent = agent_factory([url], pods_dir=pods)
    uri = f"{url}/m/r.onnx?{GOOD}"
    _pod_fetch(uri, tmp_path / "pod-1", agent.url)
    (blob,) = [p for p in (tmp_path / "node-cache" / "objects").iterdir() if p.suffix != ".json"]
    with blob.open("r+b") as f:  # one flipped byte: its mtime moves, so the agent hashes it again
        f.seek(len(data) // 3)
        byte = f.read(1)
        f.seek(len(data) // 3)
        f.write(bytes([byte[0] ^ 0xFF]))

    uid, volume = _pod_volume(pods)
    client = NodeCacheClient(agent.url, Placement(uid, volume))
    again = fetch(uri, volume, sha256=hashlib.sha256(data).hexdigest(), options=OPTIONS, remote=client)
    assert again.origin == "store"  # dropped, filled again and streamed
    assert again.path.read_bytes() == data
    assert _agent_metrics(agent)["modelapi_cache_corrupt_entries_total"] == 1
    assert handler.sent["/m/r.onnx"] == 2 * len(data)

    uid, volume = _pod_volume(pods)  # the fresh entry is placed again
    placed = fetch(uri, volume, options=OPTIONS, remote=NodeCacheClient(agent.url, Placement(uid, volume)))
    assert placed.origin == "cache"
    assert placed.path.read_bytes() == data
    assert _agent_metrics(agent)['modelapi_cache_placed_total{method="link"}'] == 1


def test_eviction_under_a_small_bound_never_removes_an_artifact_being_read(
    store: tuple[str, type[_Store]], agent_factory: Any, tmp_path: Path
) -> None:
    url, handler = store
    a, b = _blob(12 * MiB, seed=5), _blob(12 * MiB, seed=6)
    handler.files["/m/a.onnx"], handler.files["/m/b.onnx"] = a, b
    agent = agent_factory([url], max_mib=20)  # room for one of them
    uri_a, uri_b = f"{url}/m/a.onnx?{GOOD}", f"{url}/m/b.onnx?{GOOD}"
    _pod_fetch(uri_a, tmp_path / "pod-a", agent.url)

    # a pod reading A slowly: the agent cannot finish sending, so A stays leased
    reader = socket.socket()
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    reader.connect(("127.0.0.1", agent.server.server_address[1]))
    body = json.dumps({"head": uri_a, "get": uri_a}).encode()
    reader.sendall(f"POST {FETCH_PATH} HTTP/1.1\r\nHost: agent\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    assert reader.recv(1024).startswith(b"HTTP/1.1 200")
    key_a = next(k for k in agent.cache.index.entries if k.endswith("/m/a.onnx"))
    assert agent.cache.index.entries[key_a].leases == 1

    b_first, client = _pod_fetch(uri_b, tmp_path / "pod-b1", agent.url)
    assert b_first.path.read_bytes() == b  # served: the pod downloaded it itself
    assert client.fallback is not None
    assert "507" in client.fallback
    assert key_a in agent.cache.index.entries  # A, in use, was not evicted

    reader.close()  # the slow pod goes; its lease ends when the agent's write fails
    deadline = time.monotonic() + 10
    while agent.cache.index.entries[key_a].leases and time.monotonic() < deadline:
        time.sleep(0.05)
    b_second, client = _pod_fetch(uri_b, tmp_path / "pod-b2", agent.url)
    assert (b_second.origin, client.fallback) == ("store", None)  # through the agent now: A made room
    assert key_a not in agent.cache.index.entries
    assert agent.cache.index.used_bytes <= 20 * MiB
    b_third, _ = _pod_fetch(uri_b, tmp_path / "pod-b3", agent.url)
    assert b_third.origin == "cache"


def test_an_artifact_larger_than_the_cache_is_downloaded_by_the_pod(
    store: tuple[str, type[_Store]], agent_factory: Any, tmp_path: Path
) -> None:
    url, handler = store
    handler.files["/m/big.onnx"] = _blob(3 * MiB, seed=7)
    agent = agent_factory([url], max_mib=2)
    uri = f"{url}/m/big.onnx?{GOOD}"
    status, body = agent.post(uri, uri)
    assert status == 507
    assert "more than the whole cache" in json.loads(body)["message"]
    artifact, client = _pod_fetch(uri, tmp_path / "pod", agent.url)
    assert artifact.origin == "store"
    assert client.fallback is not None
    assert "507" in client.fallback


def test_the_pod_downloads_itself_when_the_agent_is_unreachable_or_may_not_call_the_store(
    store: tuple[str, type[_Store]], agent_factory: Any, tmp_path: Path
) -> None:
    url, handler = store
    data = _blob(MiB, seed=8)
    handler.files["/m/e.onnx"] = data
    uri = f"{url}/m/e.onnx?{GOOD}"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    artifact, client = _pod_fetch(uri, tmp_path / "pod-1", f"http://127.0.0.1:{closed_port}")
    assert artifact.path.read_bytes() == data
    assert artifact.origin == "store"
    assert client.fallback is not None
    assert "unreachable" in client.fallback

    elsewhere = agent_factory(["http://127.0.0.1:1"])
    status, body = elsewhere.post(uri, uri)
    assert status == 403
    assert json.loads(body)["reason"] == "EndpointNotAllowed"
    assert handler.sent["/m/e.onnx"] == len(data)  # the agent never called the store it may not call
    artifact, client = _pod_fetch(uri, tmp_path / "pod-2", elsewhere.url)
    assert artifact.path.read_bytes() == data
    assert client.fallback is not None
    assert "EndpointNotAllowed" not in client.fallback
    assert "may not call" in client.fallback


def test_the_pod_still_checks_the_spec_digest_of_bytes_from_the_agent(
    store: tuple[str, type[_Store]], agent_factory: Any, tmp_path: Path
) -> None:
    url, handler = store
    data = _blob(MiB, seed=9)
    handler.files["/m/f.onnx"] = data
    agent = agent_factory([url])
    with pytest.raises(ChecksumMismatch, match=hashlib.sha256(data).hexdigest()) as raised:
        _pod_fetch(f"{url}/m/f.onnx?{GOOD}", tmp_path / "pod", agent.url, sha256="0" * 64)
    assert "0" * 64 in raised.value.message
    # the fill's stream was cut short, the pod asked again and the entry was refused with its digest: the store
    # was read once, and the pod never fell back to downloading it itself
    assert handler.sent["/m/f.onnx"] == len(data)
    assert _agent_metrics(agent)['modelapi_cache_refusals_total{reason="ChecksumMismatch"}'] == 1


def test_the_agent_vouches_only_for_bytes_that_have_the_requested_digest(
    store: tuple[str, type[_Store]], agent_factory: Any
) -> None:
    url, handler = store
    data = _blob(3 * MiB, seed=11)
    digest, other = hashlib.sha256(data).hexdigest(), "ab" * 32
    handler.files["/m/v.onnx"] = data
    agent = agent_factory([url])
    obj = f"{url}/m/v.onnx?{GOOD}"

    # a fill asked for another digest: vouched for as asked, and its last bytes are withheld
    status, headers, body = agent.ask({"head": obj, "get": obj, "sha256": other})
    assert (status, headers["X-Modelapi-Sha256"], headers["X-Modelapi-Origin"]) == (200, other, "store")
    assert int(headers["Content-Length"]) == len(data)
    assert len(body) < len(data)
    assert body == data[: len(body)]

    # the entry it became: refused up front with its digest when another is asked for, served whole otherwise
    status, _, body = agent.ask({"head": obj, "get": obj, "sha256": other})
    assert status == 409
    assert json.loads(body) == {
        "reason": "ChecksumMismatch",
        "message": f"{url}/m/v.onnx?<redacted>: the object's sha256 is {digest}, the pod asked for {other}",
        "sha256": digest,
    }
    for request in ({"sha256": digest}, {}):
        status, headers, body = agent.ask({"head": obj, "get": obj, **request})
        assert (status, headers["X-Modelapi-Sha256"], headers["X-Modelapi-Origin"]) == (200, digest, "cache")
        assert body == data
    status, _, body = agent.ask({"head": obj, "get": obj, "sha256": "A" * 64})
    assert (status, json.loads(body)["reason"]) == (400, "BadRequest")
    assert handler.sent["/m/v.onnx"] == len(data)


def test_an_empty_object_is_not_vouched_for_the_pod_hashes_it(
    store: tuple[str, type[_Store]], agent_factory: Any, tmp_path: Path
) -> None:
    url, handler = store
    handler.files["/m/empty.onnx"] = handler.files["/m/empty-too.onnx"] = b""
    agent = agent_factory([url])
    obj = f"{url}/m/empty.onnx?{GOOD}"
    # a fill of nothing has no last byte to withhold: the pod gets no digest and finds the mismatch itself
    with pytest.raises(ChecksumMismatch, match=hashlib.sha256(b"").hexdigest()):
        _pod_fetch(obj, tmp_path / "pod", agent.url, sha256="ab" * 32)
    other = f"{url}/m/empty-too.onnx?{GOOD}"
    status, headers, body = agent.ask({"head": other, "get": other, "sha256": "ab" * 32})
    assert (status, body, "X-Modelapi-Sha256" in headers) == (200, b"", False)
    status, _, body = agent.ask({"head": obj, "get": obj, "sha256": "ab" * 32})  # the entry: refused up front
    assert (status, json.loads(body)["sha256"]) == (409, hashlib.sha256(b"").hexdigest())


def test_the_agent_survives_a_restart_with_its_entries(
    store: tuple[str, type[_Store]], agent_factory: Any, tmp_path: Path
) -> None:
    url, handler = store
    handler.files["/m/g.onnx"] = _blob(MiB, seed=10)
    uri = f"{url}/m/g.onnx?{GOOD}"
    _pod_fetch(uri, tmp_path / "pod-1", agent_factory([url]).url)
    restarted = agent_factory([url])  # a new agent on the same directory
    artifact, _ = _pod_fetch(uri, tmp_path / "pod-2", restarted.url)
    assert artifact.origin == "cache"


# --- presigned S3 URLs (moto's S3 server) ------------------------------------------------------------------------


def test_s3_artifacts_go_through_the_agent_with_urls_presigned_by_the_pod(
    s3_endpoint: str, s3_client: Any, agent_factory: Any, tmp_path: Path
) -> None:
    s3 = s3_client
    s3.create_bucket(Bucket="cache-test")
    data = _blob(3 * MiB, seed=11)
    s3.put_object(Bucket="cache-test", Key="iris/1/model.onnx", Body=data)
    agent = agent_factory([s3_endpoint])
    options = TransferOptions(concurrency=4, part_size=MiB, endpoint=s3_endpoint, region="us-east-1")
    origins = []
    for pod in ("pod-1", "pod-2"):
        client = NodeCacheClient(agent.url)
        artifact = fetch("s3://cache-test/iris/1/model.onnx", tmp_path / pod, options=options, remote=client)
        assert artifact.path.read_bytes() == data
        assert client.fallback is None
        origins.append((artifact.origin, artifact.store_bytes))
    assert origins == [("store", len(data)), ("cache", 0)]


def _agent_metrics(agent: Agent) -> dict[str, float]:
    """The agent's GET /metrics, each series (name with its labels) to its value."""
    conn = http.client.HTTPConnection("127.0.0.1", agent.server.server_address[1], timeout=10)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    finally:
        conn.close()
    series = (line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("modelapi_cache_"))
    return {name: float(value) for name, value in series if not name.split("{")[0].endswith("_created")}


def test_the_agent_metrics_count_hits_misses_bytes_evictions_and_refusals(
    store: tuple[str, type[_Store]], agent_factory: Any, tmp_path: Path
) -> None:
    url, handler = store
    one, two = _blob(3 * MiB, seed=8), _blob(2 * MiB, seed=9)
    handler.files["/m/one.onnx"], handler.files["/m/two.onnx"] = one, two
    agent = agent_factory([url], max_mib=4)  # room for one of them at a time
    empty = _agent_metrics(agent)
    assert empty["modelapi_cache_hits_total"] == empty["modelapi_cache_misses_total"] == 0
    assert empty["modelapi_cache_entries"] == empty["modelapi_cache_bytes"] == 0
    assert empty["modelapi_cache_max_bytes"] == 4 * MiB

    _pod_fetch(f"{url}/m/one.onnx?{GOOD}", tmp_path / "pod-1", agent.url)  # a miss: filled from the store
    _pod_fetch(f"{url}/m/one.onnx?{GOOD}", tmp_path / "pod-2", agent.url)  # a hit
    assert agent.post(f"{url}/m/one.onnx?{BAD}", f"{url}/m/one.onnx?{BAD}")[0] == 403
    moved = _agent_metrics(agent)
    assert moved["modelapi_cache_misses_total"] == 1
    assert moved["modelapi_cache_hits_total"] == 1
    assert moved["modelapi_cache_store_bytes_total"] == len(one)
    assert moved['modelapi_cache_served_bytes_total{origin="store"}'] == len(one)
    assert moved['modelapi_cache_served_bytes_total{origin="cache"}'] == len(one)
    assert moved['modelapi_cache_refusals_total{reason="Forbidden"}'] == 1
    assert (moved["modelapi_cache_entries"], moved["modelapi_cache_bytes"]) == (1, len(one))
    assert moved["modelapi_cache_evictions_total"] == 0

    _pod_fetch(f"{url}/m/two.onnx?{GOOD}", tmp_path / "pod-3", agent.url)  # evicts the first
    evicted = _agent_metrics(agent)
    assert evicted["modelapi_cache_evictions_total"] == 1
    assert (evicted["modelapi_cache_entries"], evicted["modelapi_cache_bytes"]) == (1, len(two))
    assert evicted["modelapi_cache_misses_total"] == 2
    assert evicted["modelapi_cache_reserved_bytes"] == 0

    (blob,) = [p for p in (tmp_path / "node-cache" / "objects").iterdir() if p.suffix != ".json"]
    blob.write_bytes(b"\0" * len(two))  # corrupt on disk: dropped when served, filled again
    _pod_fetch(f"{url}/m/two.onnx?{GOOD}", tmp_path / "pod-4", agent.url)
    assert _agent_metrics(agent)["modelapi_cache_corrupt_entries_total"] == 1


def test_every_agent_series_has_a_row_in_docs_metrics() -> None:
    from prometheus_client import CollectorRegistry

    from modelapi_runtime.cache_agent.metrics import PREFIX, AgentMetrics

    doc = (Path(__file__).resolve().parents[3] / "docs" / "metrics.md").read_text()
    families = AgentMetrics(CollectorRegistry()).registry.collect()
    names = [f.name + ("_total" if f.type == "counter" else "") for f in families if f.name.startswith(PREFIX)]
    assert len(names) == 14
    missing = [name for name in names if f"| `{name}` |" not in doc]
    assert not missing, f"node cache agent series without a row in docs/metrics.md: {missing}"
    documented = set(re.findall(rf"^\| `({PREFIX}\w+)` \|", doc, re.M))
    assert documented == set(names), f"rows in docs/metrics.md for series the agent does not export: {documented}"
