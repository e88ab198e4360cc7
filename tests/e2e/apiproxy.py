"""A fault-injecting reverse proxy between one operator process and the real kube-apiserver (issue 9, items 3, 7).

The operator gets a kubeconfig whose server is this proxy (plain HTTP on loopback); the proxy forwards every request
to kube-apiserver over TLS with the request's own ``Authorization`` header, so the operator keeps its identity. What
the tests can do to the traffic:

- ``inject(Faults(...))``: answer a share of the requests (writes only, or every request) with 429 (with
  ``Retry-After``), 500 or 503, before they reach kube-apiserver; ``inject(None)`` heals;
- ``silence_watches(True)``: every open watch stream stops forwarding (its upstream request is dropped, the operator's
  connection stays open and quiet, as behind a half-dead load balancer), and every new watch request is answered with
  headers and then nothing; ``silence_watches(False)`` lets new watches through again (a silenced stream stays dead:
  only the operator can notice and reconnect);
- ``records()``: every request, with the status the operator got and whether the proxy made it up. Two operators
  behind two proxies tell apart who wrote what.

It runs its own event loop in a daemon thread, so a synchronous test drives it with plain method calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import re
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

from .conftest import Cluster

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Not forwarded either way: hop-by-hop headers, and the framing/encoding headers aiohttp sets itself.
_DROPPED_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "content-encoding",
        "accept-encoding",
    }
)
_REASONS = {429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable"}
_RESOURCE = re.compile(r"^/apis?/(?:[^/]+/)?v[^/]+/(?:namespaces/[^/]+/)?(?P<plural>[^/]+)")


@dataclass(frozen=True)
class Faults:
    """Which requests fail and how: ``share`` of the matching requests get the next status of ``statuses``."""

    statuses: tuple[int, ...] = (429, 500, 503)
    share: float = 1.0
    writes_only: bool = True
    retry_after: int | None = 1  # seconds, sent with 429 and 503 (header and Status details, as kube-apiserver does)
    spare: str | None = None  # a regex: matching paths are never failed (e.g. kopf's peering heartbeats)


@dataclass(frozen=True)
class Record:
    at: float  # time.monotonic() when the request arrived
    method: str
    path: str
    watch: bool
    status: int
    injected: bool
    silenced: bool = False

    @property
    def resource(self) -> str:
        """The resource's plural (``deployments``), or the path when it is not a resource path."""
        match = _RESOURCE.match(self.path)
        if match is None:
            return self.path
        plural = match.group("plural")
        return "namespaces" if plural == "namespaces" and self.path.count("/") <= 4 else plural

    @property
    def write(self) -> bool:
        return self.method in WRITE_METHODS


class _Stream:
    """One watch stream being relayed."""

    def __init__(self) -> None:
        self.silenced = asyncio.Event()


class ApiProxy:
    def __init__(self, cluster: Cluster, *, seed: int = 0) -> None:
        self.upstream = cluster.env["KUBE_APISERVER_URL"].rstrip("/")
        self._ca_file = cluster.env["KUBE_CA_FILE"]
        self._random = random.Random(seed)
        self._faults: Faults | None = None
        self._statuses: Iterator[int] = iter(())
        self._silent = False
        self._streams: set[_Stream] = set()
        self._records: list[Record] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="apiproxy", daemon=True)
        self._runner: web.ServerRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._stopping: asyncio.Event | None = None
        self.port = 0

    # -- control (from the test's thread) ----------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ApiProxy:
        self._thread.start()
        self.port = self._call(self._start())
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._call(self._stop())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        if not self._thread.is_alive() and not self._loop.is_closed():
            # whatever is left (a relay the runner's shutdown cancelled) ends here, so that no socket is left open
            pending = asyncio.all_tasks(self._loop)
            for task in pending:
                task.cancel()
            self._loop.run_until_complete(_drain(pending))
            self._loop.close()

    def inject(self, faults: Faults | None) -> None:
        """Fail requests from now on as ``faults`` says; None lets everything through again."""
        with self._lock:
            self._faults = faults
            self._statuses = itertools.cycle(faults.statuses) if faults else iter(())

    def silence_watches(self, silent: bool) -> int:
        """Silence every open watch stream and every new one (True), or let new ones through (False). Returns how
        many open streams were silenced now."""
        self._silent = silent
        return self._call(self._silence_open()) if silent else 0

    def records(self) -> list[Record]:
        with self._lock:
            return list(self._records)

    def kubeconfig(self, path: Path, token: str) -> Path:
        """A kubeconfig for the operator: this proxy as the server, ``token`` as the identity."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "proxy", "cluster": {"server": self.url}}],
            "users": [{"name": "operator", "user": {"token": token}}],
            "contexts": [{"name": "proxy", "context": {"cluster": "proxy", "user": "operator"}}],
            "current-context": "proxy",
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    # -- the server (on the proxy's loop) ----------------------------------------------------------
    async def _start(self) -> int:
        self._stopping = asyncio.Event()
        context = ssl.create_default_context(cafile=self._ca_file)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context, limit=0),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            auto_decompress=False,
        )
        self._runner = web.ServerRunner(web.Server(self._handle), shutdown_timeout=2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        sockets = self._runner.addresses
        port: int = sockets[0][1]
        return port

    async def _stop(self) -> None:
        assert self._stopping is not None
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()
            await asyncio.sleep(0.25)  # aiohttp's advice: let the TLS connections close before the loop stops

    async def _silence_open(self) -> int:
        streams = [stream for stream in self._streams if not stream.silenced.is_set()]
        for stream in streams:
            stream.silenced.set()
        return len(streams)

    def _record(self, request: web.BaseRequest, arrived: float, watch: bool, status: int, **flags: bool) -> None:
        with self._lock:
            self._records.append(Record(arrived, request.method, request.path, watch, status, **flags))

    def _fault_for(self, request: web.BaseRequest) -> tuple[int, Faults] | None:
        with self._lock:
            faults = self._faults
            if faults is None:
                return None
            if faults.writes_only and request.method not in WRITE_METHODS:
                return None
            if faults.spare and re.search(faults.spare, request.path):
                return None
            if self._random.random() >= faults.share:
                return None
            return next(self._statuses), faults

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        arrived = time.monotonic()
        watch = request.query.get("watch") in {"true", "1"}
        fault = self._fault_for(request)
        if fault is not None:
            status, faults = fault
            self._record(request, arrived, watch, status, injected=True)
            return _status_response(status, faults.retry_after)
        if watch and self._silent:
            self._record(request, arrived, watch, 200, injected=False, silenced=True)
            return await self._hold(request, web.StreamResponse(status=200))
        assert self._session is not None
        headers = {key: value for key, value in request.headers.items() if key.lower() not in _DROPPED_HEADERS}
        headers["Accept-Encoding"] = "identity"  # aiohttp would ask for gzip, and the bytes are relayed as they come
        body = await request.read()
        try:
            upstream = await self._session.request(
                request.method, self.upstream + request.path_qs, headers=headers, data=body or None
            )
        except (aiohttp.ClientError, OSError) as error:
            self._record(request, arrived, watch, 502, injected=False)
            return web.Response(status=502, text=f"apiproxy: upstream unreachable: {error}")
        self._record(request, arrived, watch, upstream.status, injected=False)
        headers = {key: value for key, value in upstream.headers.items() if key.lower() not in _DROPPED_HEADERS}
        if not watch:
            try:
                return web.Response(status=upstream.status, body=await upstream.read(), headers=headers)
            finally:
                upstream.release()
        response = web.StreamResponse(status=upstream.status, headers=headers)
        return await self._relay(request, upstream, response)

    async def _relay(
        self, request: web.BaseRequest, upstream: aiohttp.ClientResponse, response: web.StreamResponse
    ) -> web.StreamResponse:
        stream = _Stream()
        self._streams.add(stream)
        try:
            await response.prepare(request)
            assert self._stopping is not None
            silenced = asyncio.ensure_future(stream.silenced.wait())
            stopping = asyncio.ensure_future(self._stopping.wait())
            try:
                while True:
                    read = asyncio.ensure_future(upstream.content.readany())
                    await asyncio.wait({read, silenced, stopping}, return_when=asyncio.FIRST_COMPLETED)
                    if stopping.done():
                        read.cancel()
                        break
                    if silenced.done():
                        read.cancel()
                        upstream.close()  # kube-apiserver sees the watch end; the operator sees nothing at all
                        return await self._hold(request, response)
                    chunk = read.result()
                    if not chunk:
                        break
                    await response.write(chunk)
            finally:
                silenced.cancel()
                stopping.cancel()
            await response.write_eof()
        except (ConnectionResetError, aiohttp.ClientError, asyncio.CancelledError):
            pass
        finally:
            self._streams.discard(stream)
            upstream.close()
        return response

    async def _hold(self, request: web.BaseRequest, response: web.StreamResponse) -> web.StreamResponse:
        """Keep the client's connection open and send nothing until the client gives up (or the proxy stops)."""
        assert self._stopping is not None
        if not response.prepared:
            response.content_type = "application/json"
            await response.prepare(request)
        while not self._stopping.is_set():
            transport = request.transport
            if transport is None or transport.is_closing():
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=0.5)
        return response


async def _drain(tasks: set[asyncio.Task[Any]]) -> None:
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(0.25)  # TLS transports close over the next iterations of the loop


def _status_response(status: int, retry_after: int | None) -> web.Response:
    """What kube-apiserver itself sends for these statuses: a v1 Status, and Retry-After for 429 and 503."""
    payload: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f"injected by the e2e apiproxy ({status})",
        "reason": _REASONS.get(status, "InternalError"),
        "code": status,
    }
    headers = {}
    if retry_after is not None and status in {429, 503}:
        payload["details"] = {"retryAfterSeconds": retry_after}
        headers["Retry-After"] = str(retry_after)
    return web.Response(status=status, text=json.dumps(payload), content_type="application/json", headers=headers)
