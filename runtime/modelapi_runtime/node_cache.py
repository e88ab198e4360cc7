"""The model pod's side of the node cache: ask the node's agent (modelapi_runtime.cache_agent) for the artifact.

The pod presigns a HEAD and a GET of its object with its own credentials (valid ``PRESIGN_SECONDS``) and sends both
to the agent, which checks the HEAD against the store before it serves a cached copy or fills the cache through the
GET. The bytes are hashed here as they arrive and checked like a direct download's (``spec.model.sha256``).

When the agent cannot be used (unreachable, refused for a reason other than the store's own 403/404, a stream that
keeps ending short, no room) the pod downloads directly: the model still starts, the reason is logged and
``modelapi_node_cache_fallback`` is 1. The store's 403 or 404 through the agent is the pod's own answer: it is raised
as ``ArtifactAccessDenied`` / ``ArtifactNotFound``, as a direct download would.
"""

from __future__ import annotations

import http.client
import json
import logging
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from modelapi_runtime.cache_agent.protocol import ENDPOINT_NOT_ALLOWED, FETCH_PATH, ORIGIN_HEADER
from modelapi_runtime.exceptions import ArtifactAccessDenied, ArtifactNotFound, ArtifactUnavailable
from modelapi_runtime.storage import (
    HTTPSource,
    MiB,
    ObjectInfo,
    Pulled,
    S3Source,
    Source,
    TransferOptions,
    download,
)

log = logging.getLogger(__name__)

PRESIGN_SECONDS = 3600  # a fill of 5 GB at 10 MB/s takes ~9 minutes; its ranged GETs start within this
CONNECT_TIMEOUT_S = 2.0  # the agent is on this pod's own node
READ_TIMEOUT_S = 60.0  # each read: a pod that follows another's fill waits for the store's bytes


class AgentUnusable(Exception):
    """The agent cannot serve this pod now: download directly."""


def presigned_urls(source: Source) -> tuple[str, str] | None:
    """(HEAD URL, GET URL) of the object, signed with this pod's credentials; None for a local file."""
    if isinstance(source, S3Source):
        params = {"Bucket": source.bucket, "Key": source.key}
        try:
            head = source.client.generate_presigned_url("head_object", Params=params, ExpiresIn=PRESIGN_SECONDS)
            get = source.client.generate_presigned_url("get_object", Params=params, ExpiresIn=PRESIGN_SECONDS)
        except Exception as exc:  # botocore's credential errors: the direct path reports them properly
            raise AgentUnusable(f"cannot presign ({type(exc).__name__})") from None
        return head, get
    if isinstance(source, HTTPSource):
        return source.uri, source.uri  # an https:// URI is its own credential (public, or presigned already)
    return None


class AgentSource:
    """The agent's answer as a one-stream source: each ``stream()`` asks again (a short stream is retried)."""

    def __init__(self, agent_url: str, urls: tuple[str, str], display: str) -> None:
        parts = urllib.parse.urlsplit(agent_url)
        if parts.scheme != "http" or not parts.hostname:
            raise AgentUnusable(f"the node cache URL must be http://HOST:PORT, got {agent_url!r}")
        self.host, self.port = parts.hostname, parts.port or 80
        self.body = json.dumps({"head": urls[0], "get": urls[1]}).encode()
        self.display = display
        self.origin = "store"

    def stat(self) -> ObjectInfo:  # pragma: no cover - the pod's own HEAD is used
        raise NotImplementedError

    def read_range(self, start: int, end: int) -> Iterator[bytes]:  # pragma: no cover - one stream only
        raise NotImplementedError

    def _post(self) -> tuple[http.client.HTTPConnection, Any]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=CONNECT_TIMEOUT_S)
        try:
            conn.connect()
            if conn.sock is not None:
                conn.sock.settimeout(READ_TIMEOUT_S)
            conn.request("POST", FETCH_PATH, self.body, {"Content-Type": "application/json"})
            return conn, conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise AgentUnusable(f"the node cache agent at {self.host}:{self.port} is unreachable ({exc})") from None

    def stream(self) -> Iterator[bytes]:
        conn, resp = self._post()
        try:
            if resp.status != 200:
                raise _refusal(resp, self.display)
            self.origin = resp.headers.get(ORIGIN_HEADER, "store")
            expected, received = resp.length, 0  # Content-Length (None without one)
            try:
                while chunk := resp.read(4 * MiB):
                    received += len(chunk)
                    yield chunk
            except (OSError, http.client.HTTPException) as exc:
                raise ArtifactUnavailable(f"{self.display}: the node cache's stream failed ({exc})") from None
            if expected is not None and received < expected:
                # cut short on purpose (a corrupt entry, a failed fill): asked again by the caller's retry
                raise ArtifactUnavailable(
                    f"{self.display}: the node cache's stream ended after {received} of {expected} bytes"
                )
        finally:
            conn.close()


def _refusal(resp: Any, display: str) -> Exception:
    try:
        body = json.loads(resp.read(64 * 1024))
    except (ValueError, OSError, http.client.HTTPException):
        body = {}
    reason, message = (str(body.get(k, "")) for k in ("reason", "message")) if isinstance(body, dict) else ("", "")
    if resp.status == 403 and reason != ENDPOINT_NOT_ALLOWED:
        return ArtifactAccessDenied(f"{display}: access denied (the store refused this pod's credentials)")
    if resp.status == 404:
        return ArtifactNotFound(f"{display}: object not found")
    return AgentUnusable(f"the node cache agent answered {resp.status}: {message or 'no reason given'}")


class NodeCacheClient:
    """A ``storage.RemoteFetcher``: the node's agent, or None (fallback) with the reason kept in ``fallback``."""

    def __init__(self, agent_url: str) -> None:
        self.agent_url = agent_url
        self.fallback: str | None = None

    def __call__(self, source: Source, info: ObjectInfo, dest: Path) -> Pulled | None:
        try:
            urls = presigned_urls(source)
            if urls is None:
                return None
            agent = AgentSource(self.agent_url, urls, source.display)
            sha256, size = download(agent, ObjectInfo(info.size, info.etag, ranges=False), dest, TransferOptions())
        except (AgentUnusable, ArtifactUnavailable) as exc:
            self.fallback = str(exc.message if isinstance(exc, ArtifactUnavailable) else exc)
            log.warning("%s: node cache not used, downloading directly: %s", source.display, self.fallback)
            return None
        return Pulled(sha256, size, "cache" if agent.origin == "cache" else "store")
