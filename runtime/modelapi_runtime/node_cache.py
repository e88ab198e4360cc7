"""The model pod's side of the node cache: ask the node's agent (modelapi_runtime.cache_agent) for the artifact.

The pod presigns a HEAD and a GET of its object with its own credentials (valid ``PRESIGN_SECONDS``; with the
standard library where the credentials are static ones, storage.S3Source.presign) and sends both to the agent, with
the digest its spec expects, if any, and the largest artifact it admits (its bound, its volume's room); the agent
checks the HEAD against the store before it serves a cached copy or fills the cache through the GET, and answers
with the object's size and ETag from that HEAD, so the pod sends no HEAD of its own (storage.fetch).

The bytes are checked like a direct download's (``spec.model.sha256``). When the agent vouches for their digest
(``X-Modelapi-Sha256``: it hashes the entry as it serves it, or the fill as it arrives, and withholds the last bytes
until the digest is known to match), the pod compares that digest with its spec's and writes the stream to disk
without hashing it again, moved from the socket to the file by ``splice(2)`` where the kernel offers it; otherwise it
hashes the bytes as they arrive. A stream that ends short (a corrupt entry, a failed fill) is asked for again.

With its pod's UID (``Placement``), the pod first asks the agent to place a verified entry into its own volume:
it writes a proof named after a random token there (``PROOF_PREFIX``), the agent finds it under the kubelet's pods
directory and links (or copies, with its own CPU) the entry beside it (``PLACED_PREFIX``; cache_agent/placement.py),
and the pod moves that file into place: no byte goes through the pod. A fill in progress, a missing proof, an older
agent or one that cannot see the pods directory stream the bytes as above.

When the agent cannot be used (unreachable, refused for a reason other than the store's own 403/404, a stream that
keeps ending short, no room) the pod downloads directly: the model still starts, the reason is logged and
``modelapi_node_cache_fallback`` is 1. The store's 403 or 404 through the agent is the pod's own answer: it is raised
as ``ArtifactAccessDenied`` / ``ArtifactNotFound``, as a direct download would.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import json
import logging
import os
import secrets
import select
import socket
import stat
import time
import urllib.parse
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from modelapi_runtime.cache_agent.protocol import (
    CHECKSUM_MISMATCH,
    ENDPOINT_NOT_ALLOWED,
    ETAG_HEADER,
    FETCH_PATH,
    ORIGIN_HEADER,
    PLACED_HEADER,
    PLACED_PREFIX,
    PROOF_PREFIX,
    SHA256_HEADER,
    SIZE_HEADER,
    TOO_LARGE,
)
from modelapi_runtime.exceptions import (
    ArtifactAccessDenied,
    ArtifactNotFound,
    ArtifactUnavailable,
    InsufficientStorage,
)
from modelapi_runtime.storage import (
    ATTEMPTS,
    BACKOFF_S,
    SHA256_RE,
    Admission,
    ArtifactOrigin,
    HTTPSource,
    MiB,
    ObjectInfo,
    Pulled,
    S3Source,
    Source,
    check_digest,
    digest_mismatch,
)

log = logging.getLogger(__name__)

PRESIGN_SECONDS = 3600  # a fill of 5 GB at 10 MB/s takes ~9 minutes; its ranged GETs start within this
CONNECT_TIMEOUT_S = 2.0  # the agent is on this pod's own node
READ_TIMEOUT_S = 60.0  # each read: a pod that follows another's fill waits for the store's bytes
CHUNK = 4 * MiB  # a hashed stream is received into one reused buffer this much at a time
PIPE_BYTES = 1 * MiB  # the pipe between the socket and the file (the most an unprivileged process may ask for)
F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ (Linux)
SPLICE_UNSUPPORTED = (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP)


class AgentUnusable(Exception):
    """The agent cannot serve this pod now: download directly."""


def presigned_urls(source: Source) -> tuple[str, str] | None:
    """(HEAD URL, GET URL) of the object, signed with this pod's credentials; None for a local file."""
    if isinstance(source, S3Source):
        try:
            head = source.presign("head_object", PRESIGN_SECONDS)
            get = source.presign("get_object", PRESIGN_SECONDS)
        except Exception as exc:  # botocore's credential errors: the direct path reports them properly
            raise AgentUnusable(f"cannot presign ({type(exc).__name__})") from None
        return head, get
    if isinstance(source, HTTPSource):
        return source.uri, source.uri  # an https:// URI is its own credential (public, or presigned already)
    return None


@dataclass(frozen=True, slots=True)
class Placement:
    """What the agent needs to put an entry into this pod's volume: the pod's UID (the downward API), the volume's
    mount (the runtime's model_dir: the volume's root) and the object's size from the pod's own HEAD, when it sent
    one (otherwise the agent's answer names it)."""

    pod_uid: str
    volume: Path
    size: int | None = None


class AgentSource:
    """One object through the node's agent: ``fetch_into`` asks, writes the answer to a file, and asks again when a
    stream ends short."""

    def __init__(
        self,
        agent_url: str,
        urls: tuple[str, str],
        display: str,
        expected: str | None = None,
        *,
        placement: Placement | None = None,
        admit: Admission | None = None,
    ) -> None:
        parts = urllib.parse.urlsplit(agent_url)
        if parts.scheme != "http" or not parts.hostname:
            raise AgentUnusable(f"the node cache URL must be http://HOST:PORT, got {agent_url!r}")
        self.host, self.port = parts.hostname, parts.port or 80
        self.request: dict[str, Any] = {"head": urls[0], "get": urls[1]}
        if expected is not None:
            self.request["sha256"] = expected
        if admit is not None:
            self.request["max_bytes"] = max(admit.limit, -1)
        self.display = display
        self.expected = expected
        self.placement = placement
        self.admit = admit
        self.body = json.dumps(self.request).encode()

    def _post(self) -> tuple[http.client.HTTPConnection, Any, socket.socket]:
        """The connection, the answer and the answer's socket (http.client lets go of it on ``Connection: close``,
        the answer keeps it open)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=CONNECT_TIMEOUT_S)
        try:
            conn.connect()
            sock: socket.socket | None = conn.sock
            if sock is None:
                raise OSError("not connected")
            sock.settimeout(READ_TIMEOUT_S)
            conn.request("POST", FETCH_PATH, self.body, {"Content-Type": "application/json"})
            return conn, conn.getresponse(), sock
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise AgentUnusable(f"the node cache agent at {self.host}:{self.port} is unreachable ({exc})") from None

    def fetch_into(self, dest: Path) -> Pulled:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return self._fetch_once(dest)
            except ArtifactUnavailable:
                if attempt == ATTEMPTS:
                    raise
            time.sleep(BACKOFF_S * attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def _fetch_once(self, dest: Path) -> Pulled:
        if self.placement is None:
            return self._exchange(dest, None)
        token = secrets.token_hex(16)
        volume = self.placement.volume
        proof, placed = volume / (PROOF_PREFIX + token), volume / (PLACED_PREFIX + token)
        try:
            os.close(os.open(proof, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        except OSError as exc:
            log.warning("%s: cannot write the node cache proof (%s); streamed", self.display, exc)
            self.placement = None
            return self._exchange(dest, None)
        self.body = json.dumps({**self.request, "pod": {"uid": self.placement.pod_uid, "token": token}}).encode()
        try:
            return self._exchange(dest, placed)
        finally:
            proof.unlink(missing_ok=True)
            placed.unlink(missing_ok=True)

    def _exchange(self, dest: Path, placed: Path | None) -> Pulled:
        conn, resp, sock = self._post()
        try:
            if resp.status != 200:
                raise _refusal(resp, self.display, self.expected, self.admit)
            etag = resp.headers.get(ETAG_HEADER) or None
            method = resp.headers.get(PLACED_HEADER)
            announced = resp.headers.get(SIZE_HEADER, "")
            if self.placement is not None and self.placement.size is None and announced.isdigit():
                self.placement = replace(self.placement, size=int(announced))  # the store's size, via the agent
            if method is not None and placed is not None:
                return self._take_placed(resp.headers.get(SHA256_HEADER), placed, dest, (method, etag))
            origin: ArtifactOrigin = "cache" if resp.headers.get(ORIGIN_HEADER) == "cache" else "store"
            vouched = resp.headers.get(SHA256_HEADER)
            if vouched is not None and not SHA256_RE.match(vouched):
                raise AgentUnusable(f"the node cache agent sent a malformed {SHA256_HEADER} header")
            if vouched is not None:
                check_digest(self.display, self.expected, vouched)  # before a byte is written
            if resp.length is None:
                raise AgentUnusable("the node cache agent's answer has no Content-Length")
            if self.admit is not None:
                self.admit(resp.length)  # the store's size, through the agent: refused before a byte is written
            digest = None if vouched is not None else hashlib.sha256()
            fd = os.open(dest, os.O_WRONLY | os.O_TRUNC)
            try:
                received = receive(resp, sock, fd, resp.length, digest)
                os.fsync(fd)  # the pod's copy outlives a restart of its container, which trusts it by its name
            except OSError as exc:
                raise self._failure(exc) from None
            finally:
                os.close(fd)
            if received < resp.length:
                # cut short on purpose (a corrupt entry, a failed fill, another digest): asked again
                raise ArtifactUnavailable(
                    f"{self.display}: the node cache's stream ended after {received} of {resp.length} bytes"
                )
            sha256 = vouched if digest is None else digest.hexdigest()
            return Pulled(sha256, received, origin, etag)
        finally:
            conn.close()

    def _take_placed(self, vouched: str | None, placed: Path, dest: Path, answer: tuple[str, str | None]) -> Pulled:
        """The file the agent put into this pod's volume, moved to ``dest``; its digest is the agent's (it checked
        the entry: cache_agent/cache.py ``_intact``). A placement that is not as announced is asked for again,
        streamed. ``answer``: the placement's method and the object's ETag."""
        method, etag = answer
        try:
            if vouched is None or not SHA256_RE.match(vouched):
                raise OSError(f"no valid {SHA256_HEADER} header")
            check_digest(self.display, self.expected, vouched)
            st = placed.lstat()
            if not stat.S_ISREG(st.st_mode) or (self.placement and self.placement.size not in (None, st.st_size)):
                raise OSError("not a regular file of the object's size")
            if self.admit is not None:
                self.admit(st.st_size)  # raises ArtifactTooLarge / InsufficientStorage: the placed file is removed
            os.replace(placed, dest)
        except OSError as exc:
            self.placement = None  # the next attempt streams
            raise ArtifactUnavailable(f"{self.display}: the node cache's placed file is unusable ({exc})") from None
        log.info("%s: placed in this pod's volume by the node cache agent (%s)", self.display, method)
        return Pulled(vouched, st.st_size, "cache", etag)

    def _failure(self, exc: OSError) -> Exception:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return InsufficientStorage(
                f"{self.display}: the model volume ran out of space while the artifact was written"
            )
        return ArtifactUnavailable(f"{self.display}: the node cache's stream failed ({exc})")


def receive(resp: Any, sock: socket.socket, fd: int, length: int, digest: Any | None) -> int:
    """Writes up to ``length`` bytes of the answer's body to ``fd``; how many came before the stream ended.

    Unhashed (``digest`` None) the bytes go from the socket to the file through a pipe with ``splice(2)``: no copy
    into this process and no buffer to allocate. Hashed, or where splice is not offered, one reused buffer."""
    received = 0
    if digest is None and length and hasattr(os, "splice"):
        received = _take_read_ahead(resp, fd, length)
        received += _splice(sock, fd, length - received)
    buffer = memoryview(bytearray(min(CHUNK, max(length - received, 1))))
    while received < length:
        n = resp.fp.readinto(buffer[: min(len(buffer), length - received)])  # 0 at the end of the stream
        if not n:
            break
        _write_all(fd, buffer[:n])
        if digest is not None:
            digest.update(buffer[:n])
        received += n
    return received


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        data = data[os.write(fd, data) :]


def _take_read_ahead(resp: Any, fd: int, length: int) -> int:
    """The body bytes http.client's reader took from the socket with the headers, written to ``fd``."""
    ahead = resp.fp.peek()[:length]  # buffered bytes (one read of the socket if none are)
    data = resp.fp.read(len(ahead))
    _write_all(fd, memoryview(data))
    return len(data)


def _splice(sock: socket.socket, fd: int, count: int) -> int:
    """Moves up to ``count`` bytes from the socket to the file's position; stops early at the end of the stream or
    where the kernel cannot splice these files (the caller copies the rest)."""
    moved = 0
    pipe_r, pipe_w = os.pipe()
    try:
        try:
            import fcntl  # noqa: PLC0415 - Linux, like splice itself

            fcntl.fcntl(pipe_w, F_SETPIPE_SZ, PIPE_BYTES)
        except OSError:
            pass  # the default pipe (64 KiB) works, with more calls
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        while moved < count:
            try:
                n = os.splice(sock.fileno(), pipe_w, min(PIPE_BYTES, count - moved), flags=os.SPLICE_F_MOVE)
            except BlockingIOError:  # the socket has a timeout, so it is non-blocking: wait for it
                if not poller.poll(READ_TIMEOUT_S * 1000):
                    raise TimeoutError(f"no bytes for {READ_TIMEOUT_S:.0f}s") from None
                continue
            except OSError as exc:
                if exc.errno in SPLICE_UNSUPPORTED and moved == 0:
                    return 0
                raise
            if n == 0:
                break  # the agent closed the stream
            moved += _drain(pipe_r, fd, n)
        return moved
    finally:
        os.close(pipe_r)
        os.close(pipe_w)


def _drain(pipe_r: int, fd: int, n: int) -> int:
    """Moves the ``n`` bytes in the pipe to the file (copied through memory if the file cannot take a splice)."""
    left = n
    while left:
        try:
            left -= os.splice(pipe_r, fd, left, flags=os.SPLICE_F_MOVE)
        except OSError as exc:
            if exc.errno not in SPLICE_UNSUPPORTED:
                raise
            data = os.read(pipe_r, left)
            _write_all(fd, memoryview(data))
            left -= len(data)
    return n


def _refusal(resp: Any, display: str, expected: str | None, admit: Admission | None) -> Exception:
    try:
        body = json.loads(resp.read(64 * 1024))
    except (ValueError, OSError, http.client.HTTPException):
        body = {}
    if not isinstance(body, dict):
        body = {}
    reason, message, actual = (str(body.get(k, "")) for k in ("reason", "message", "sha256"))
    if resp.status == 403 and reason != ENDPOINT_NOT_ALLOWED:
        return ArtifactAccessDenied(f"{display}: access denied (the store refused this pod's credentials)")
    if resp.status == 404:
        return ArtifactNotFound(f"{display}: object not found")
    if resp.status == 409 and reason == CHECKSUM_MISMATCH and expected is not None and SHA256_RE.match(actual):
        return digest_mismatch(display, expected, actual)  # the store's object is not the one the spec names
    size = body.get("size")
    if resp.status == 413 and reason == TOO_LARGE and admit is not None and type(size) is int:
        admit(size)  # the pod's own refusal, with its own message (ArtifactTooLarge, InsufficientStorage)
    return AgentUnusable(f"the node cache agent answered {resp.status}: {message or 'no reason given'}")


class NodeCacheClient:
    """A ``storage.RemoteFetcher``: the node's agent, or None (fallback) with the reason kept in ``fallback``."""

    def __init__(self, agent_url: str, placement: Placement | None = None) -> None:
        self.agent_url = agent_url
        self.placement = placement
        self.fallback: str | None = None

    def __call__(
        self,
        source: Source,
        info: ObjectInfo | None,
        dest: Path,
        expected: str | None = None,
        admit: Admission | None = None,
    ) -> Pulled | None:
        try:
            urls = presigned_urls(source)
            if urls is None:
                return None
            size = info.size if info is not None else None
            placement = replace(self.placement, size=size) if self.placement else None
            agent = AgentSource(self.agent_url, urls, source.display, expected, placement=placement, admit=admit)
            return agent.fetch_into(dest)
        except (AgentUnusable, ArtifactUnavailable) as exc:
            self.fallback = str(exc.message if isinstance(exc, ArtifactUnavailable) else exc)
            log.warning("%s: node cache not used, downloading directly: %s", source.display, self.fallback)
            return None
