"""Artifact pull: s3://, https:// (http://) and file:// into a digest-keyed local cache.

Large objects are fetched as parallel ranged GETs. Parts are written to a temporary file *in
order* while a window of later parts downloads, so the SHA-256 is computed while streaming and
memory stays bounded (window x part size). The file is renamed into the cache only once its digest
is known and matches, so the cache never holds a partial or unverified artifact.

Cache layout under ``cache_dir``::

    blobs/sha256/<hex>      verified artifacts, content-addressed (this pod's own copy; the node's cache
                            shared by replicas is the cache agent's, modelapi_runtime.cache_agent)
    refs/<sha256(uri)>.json the digest last seen for a URI, with its ETag and size (used when the
                            spec gives no sha256: a HEAD decides whether the cached blob is current)
    tmp/                    partial downloads

Errors are the ``ArtifactError`` family and never carry credentials: URIs are shown without
userinfo, and a query string shows as ``?<redacted>`` (a presigned URL's query *is* a credential).
Redirects are followed except from https to anything else (a downgrade would let the network read the
request and substitute the artifact): that is refused as ``ArtifactAccessDenied``.
"""

from __future__ import annotations

import collections
import hashlib
import http.client
import itertools
import json
import logging
import math
import os
import re
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal, Protocol, TypeVar

from modelapi_runtime.exceptions import (
    ArtifactAccessDenied,
    ArtifactError,
    ArtifactNotFound,
    ArtifactTooLarge,
    ArtifactUnavailable,
    ChecksumMismatch,
    InsufficientStorage,
    InvalidArtifactSpec,
)
from modelapi_runtime.sigv4 import static_signer

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

MiB = 1024 * 1024
CONNECT_TIMEOUT_S = 4.0
READ_TIMEOUT_S = 15.0
ATTEMPTS = 3  # per part: worst case 3 x (4 + 15) s + backoff < 60 s for a stalled transfer
BACKOFF_S = 0.25
STREAM_CHUNKS_IN_FLIGHT = 4  # one stream: chunks (4 MiB) received but not yet written and hashed
RANGE_CHUNK = 1 * MiB  # a ranged GET is received and written this much at a time: memory never holds a whole part
HASH_CHUNK = 4 * MiB  # the digest reads what the workers wrote back from the file (the page cache) this much at a time
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# free disk beyond the artifact before a download starts: the operator's headroom on the model volume (10 %, at
# least 64 MiB) for the handler, the refs and the kubelet's own eviction threshold on the node's disk
ROOM_HEADROOM_SHARE = 0.1
ROOM_HEADROOM_MIN = 64 * MiB
PARTIAL_PREFIX = "pull-"
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    size: int | None
    etag: str | None
    ranges: bool  # the source answers byte-range requests


ArtifactOrigin = Literal["cache", "store"]


@dataclass(frozen=True, slots=True)
class Artifact:
    path: Path
    sha256: str
    size: int
    downloaded: bool  # False: a cache hit or a local file read in place
    seconds: float
    origin: ArtifactOrigin = "cache"  # where the bytes came from: a cache (the pod's, the node's) or the store
    store_bytes: int = 0  # bytes that left the store for this fetch (0 on any cache hit)


@dataclass(frozen=True, slots=True)
class Pulled:
    """What a remote fetcher (the node cache) wrote into the temporary file it was given."""

    sha256: str
    size: int
    origin: ArtifactOrigin
    etag: str | None = None  # the object's version as the store's HEAD gave it (for the refs), when known


@dataclass(frozen=True, slots=True)
class Admission:
    """Called with an artifact's size: returns, or raises ArtifactTooLarge / InsufficientStorage (``check_room``);
    ``limit`` is the largest size it admits (what the pod tells the node's agent)."""

    display: str
    max_bytes: int  # 0: any
    free: int

    def __call__(self, size: int | None) -> None:
        check_room(self.display, size, self.max_bytes, self.free)

    @property
    def limit(self) -> int:
        return largest_admitted(self.max_bytes, self.free)


# Fetches the object into the given file through another path (the node cache), or returns None to download it
# directly; given the source (its credentials), the object's HEAD as this pod saw it (None when the pod did not
# send one: the node's agent sends it with the pod's presigned URL and answers with its size and ETag), the sha256
# the spec expects and the admission, to call before a byte is written.
RemoteFetcher = Callable[["Source", "ObjectInfo | None", Path, "str | None", Admission], Pulled | None]


@dataclass(frozen=True, slots=True)
class TransferOptions:
    concurrency: int = 8
    part_size: int = 16 * MiB
    endpoint: str | None = None
    region: str | None = None
    max_bytes: int = 0  # the largest artifact accepted (0: any)


class Source(Protocol):
    display: str

    def stat(self) -> ObjectInfo: ...
    def read_range(self, start: int, end: int) -> Iterator[bytes]: ...  # inclusive end, like HTTP Range; in chunks
    def stream(self) -> Iterator[bytes]: ...


REDACTED_QUERY = "<redacted>"


def display_uri(uri: str) -> str:
    """The URI without userinfo or fragment, its query (if any) shown as ``?<redacted>``: safe for logs,
    conditions and events."""
    try:
        parts = urllib.parse.urlsplit(uri)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
    except ValueError:  # not even a URL (e.g. a bad port): show nothing of it that could be a credential
        return "<invalid URI>"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, REDACTED_QUERY if parts.query else "", ""))


def check_redirect(current: str, target: str) -> None:
    """Refuse a redirect that leaves https (``target`` is absolute, as urllib resolves it before asking)."""
    leaving = urllib.parse.urlsplit(current).scheme.lower() == "https"
    if leaving and urllib.parse.urlsplit(target).scheme.lower() != "https":
        raise ArtifactAccessDenied(
            f"{display_uri(current)}: the server redirected to {display_uri(target)}, a downgrade from https; "
            "refused (the artifact and its credentials never travel in clear text): use a URI whose server "
            "stays on https"
        )


class _NoDowngradeRedirects(urllib.request.HTTPRedirectHandler):
    """urllib's redirects (301, 302, 303, 307, 308; at most 10), minus https -> http."""

    def redirect_request(  # noqa: PLR0917 - urllib's signature
        self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> urllib.request.Request | None:
        try:
            check_redirect(req.full_url, newurl)
        except ArtifactAccessDenied:
            fp.close()  # the redirect response holds its socket
            raise
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_NoDowngradeRedirects)


# --- sources -------------------------------------------------------------------------------------


class FileSource:
    def __init__(self, uri: str) -> None:
        parts = urllib.parse.urlsplit(uri)
        self.path = Path(urllib.parse.unquote(parts.path))
        self.display = display_uri(uri)

    def _wrap(self, exc: OSError) -> ArtifactError:
        if isinstance(exc, FileNotFoundError | IsADirectoryError | NotADirectoryError):
            return ArtifactNotFound(f"{self.display}: no such file")
        if isinstance(exc, PermissionError):
            return ArtifactAccessDenied(f"{self.display}: permission denied")
        return ArtifactUnavailable(f"{self.display}: {exc.strerror or type(exc).__name__}")

    def stat(self) -> ObjectInfo:
        try:
            st = self.path.stat()
        except OSError as exc:
            raise self._wrap(exc) from None
        if not self.path.is_file():
            raise ArtifactNotFound(f"{self.display}: not a regular file")
        return ObjectInfo(size=st.st_size, etag=f"{st.st_mtime_ns}-{st.st_size}", ranges=True)

    def read_range(self, start: int, end: int) -> Iterator[bytes]:
        try:
            fd = os.open(self.path, os.O_RDONLY)
            try:
                while start <= end and (chunk := os.pread(fd, min(RANGE_CHUNK, end - start + 1), start)):
                    start += len(chunk)
                    yield chunk
            finally:
                os.close(fd)
        except OSError as exc:
            raise self._wrap(exc) from None

    def stream(self) -> Iterator[bytes]:
        try:
            with self.path.open("rb") as f:
                while chunk := f.read(4 * MiB):
                    yield chunk
        except OSError as exc:
            raise self._wrap(exc) from None


class HTTPSource:
    opener: urllib.request.OpenerDirector = _OPENER

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.display = display_uri(uri)

    def _open(self, method: str, headers: dict[str, str]) -> Any:
        request = urllib.request.Request(self.uri, method=method, headers=headers)  # noqa: S310 - scheme checked
        try:
            # urllib applies one timeout to connect and to every blocking read.
            return self.opener.open(request, timeout=READ_TIMEOUT_S)
        except urllib.error.HTTPError as exc:
            exc.close()  # it holds the response's socket
            raise self._status_error(exc.code) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ArtifactUnavailable(f"{self.display}: cannot reach the server ({reason})") from None
        except (ValueError, http.client.InvalidURL) as exc:  # a URL http.client refuses: its text quotes the URL
            raise InvalidArtifactSpec(f"{self.display}: not a valid URL ({type(exc).__name__})") from None

    def _status_error(self, code: int) -> ArtifactError:
        if code in (404, 410):
            return ArtifactNotFound(f"{self.display}: HTTP {code} (not found)")
        if code in (401, 403):
            return ArtifactAccessDenied(f"{self.display}: HTTP {code} (access denied)")
        return ArtifactUnavailable(f"{self.display}: HTTP {code}")

    def stat(self) -> ObjectInfo:
        with self._open("HEAD", {}) as resp:
            length = resp.headers.get("Content-Length")
            return ObjectInfo(
                size=int(length) if length and length.isdigit() else None,
                etag=resp.headers.get("ETag") or resp.headers.get("Last-Modified"),
                ranges=resp.headers.get("Accept-Ranges", "").lower() == "bytes",
            )

    def read_range(self, start: int, end: int) -> Iterator[bytes]:
        with self._open("GET", {"Range": f"bytes={start}-{end}"}) as resp:
            if resp.status != 206:
                raise ArtifactUnavailable(f"{self.display}: server ignored the byte range (HTTP {resp.status})")
            try:
                while chunk := resp.read(RANGE_CHUNK):
                    yield chunk
            except (TimeoutError, OSError) as exc:
                raise ArtifactUnavailable(f"{self.display}: transfer failed ({exc})") from None

    def stream(self) -> Iterator[bytes]:
        with self._open("GET", {}) as resp:
            try:
                while chunk := resp.read(4 * MiB):
                    yield chunk
            except (TimeoutError, OSError) as exc:
                raise ArtifactUnavailable(f"{self.display}: transfer failed ({exc})") from None


class S3Source:
    """boto3 with the standard credential chain (env, web identity / IRSA, profile, instance role).

    boto3 is imported and its client made only when the object is read or stat'ed here, or presigned with
    credentials ``sigv4`` does not sign: a node-cache hit with static credentials presigns its URLs with the standard
    library and never imports boto3 (about 0.1-0.2 CPU-s of a start)."""

    def __init__(self, uri: str, options: TransferOptions) -> None:
        parts = urllib.parse.urlsplit(uri)
        self.bucket = parts.netloc
        self.key = urllib.parse.unquote(parts.path.lstrip("/"))
        if not self.bucket or not self.key:
            raise InvalidArtifactSpec(f"{display_uri(uri)}: expected s3://BUCKET/KEY")
        self.display = f"s3://{self.bucket}/{self.key}"
        self.options = options
        self._client: S3Client | None = None

    @property
    def client(self) -> S3Client:
        if self._client is None:
            self._client = make_s3_client(self.options)
        return self._client

    def presign(self, operation: Literal["head_object", "get_object"], expires: int) -> str:
        """A presigned URL of the object (SigV4): by ``sigv4`` where it can sign, by botocore otherwise; raises
        whatever botocore raises for missing credentials."""
        signer = static_signer(self.options.endpoint, self.options.region)
        if signer is not None:
            return signer.presign("HEAD" if operation == "head_object" else "GET", self.bucket, self.key, expires)
        params = {"Bucket": self.bucket, "Key": self.key}
        return self.client.generate_presigned_url(operation, Params=params, ExpiresIn=expires)

    def _wrap(self, exc: Exception) -> ArtifactError:
        from botocore.exceptions import ClientError, NoCredentialsError, PartialCredentialsError  # noqa: PLC0415

        if isinstance(exc, NoCredentialsError | PartialCredentialsError):
            return ArtifactAccessDenied(
                f"{self.display}: no S3 credentials found (credentialsSecret or a ServiceAccount with "
                "workload identity)"
            )
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            if code in ("NoSuchKey", "NoSuchBucket", "404", "NotFound") or status == 404:
                what = "bucket" if code == "NoSuchBucket" else "object"
                return ArtifactNotFound(f"{self.display}: {what} not found")
            if code in (
                "AccessDenied",
                "403",
                "Forbidden",
                "InvalidAccessKeyId",
                "SignatureDoesNotMatch",
                "ExpiredToken",
                "InvalidToken",
            ) or status in (401, 403):
                return ArtifactAccessDenied(f"{self.display}: access denied ({code or status})")
            return ArtifactUnavailable(f"{self.display}: S3 error {code or status}")
        return ArtifactUnavailable(f"{self.display}: S3 unreachable ({type(exc).__name__})")

    def stat(self) -> ObjectInfo:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.key)
        except Exception as exc:
            raise self._wrap(exc) from None
        return ObjectInfo(size=int(head["ContentLength"]), etag=head.get("ETag"), ranges=True)

    def read_range(self, start: int, end: int) -> Iterator[bytes]:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self.key, Range=f"bytes={start}-{end}")["Body"]
            while chunk := body.read(RANGE_CHUNK):
                yield chunk
        except ArtifactError:
            raise
        except Exception as exc:
            raise self._wrap(exc) from None

    def stream(self) -> Iterator[bytes]:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self.key)["Body"]
            while chunk := body.read(4 * MiB):
                yield chunk
        except ArtifactError:
            raise
        except Exception as exc:
            raise self._wrap(exc) from None


def make_s3_client(options: TransferOptions) -> S3Client:
    import boto3  # noqa: PLC0415 - only where boto3 reads or signs: a node-cache hit does without it
    from botocore.config import Config  # noqa: PLC0415

    config = Config(
        # SigV4 for presigned URLs too (the node cache): botocore would presign with SigV2, which stores refuse
        signature_version="s3v4",
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
        retries={"max_attempts": 1, "mode": "standard"},  # retried per part below, within a bound
        max_pool_connections=max(10, options.concurrency + 2),
        s3={"addressing_style": "path"} if options.endpoint else {},
    )
    return boto3.session.Session().client(
        "s3", endpoint_url=options.endpoint or None, region_name=options.region or None, config=config
    )


def open_source(uri: str, options: TransferOptions) -> Source:
    scheme = urllib.parse.urlsplit(uri).scheme.lower()
    if scheme == "s3":
        return S3Source(uri, options)
    if scheme in ("https", "http"):
        return HTTPSource(uri)
    if scheme == "file":
        return FileSource(uri)
    raise InvalidArtifactSpec(f"{display_uri(uri)}: unsupported scheme {scheme!r} (s3, https, file)")


# --- transfer ------------------------------------------------------------------------------------


def _retry(call: Callable[[], T]) -> T:
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return call()
        except ArtifactUnavailable:
            if attempt == ATTEMPTS:
                raise
            time.sleep(BACKOFF_S * attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def _parts(size: int, part_size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, size, part_size):
        yield start, min(start + part_size, size) - 1


Progress = Callable[[int], None]


def download(
    source: Source, info: ObjectInfo, dest: Path, options: TransferOptions, progress: Progress | None = None
) -> tuple[str, int]:
    """Write the object to ``dest``; returns (sha256 hex, size). Parallel ranges when possible.

    ``progress`` is told how many bytes from the start of ``dest`` are written and hashed, in order: a reader may
    read that far while the rest downloads (the node cache streams a fill to pods this way).

    The digest is the one stage that must see the bytes in order, so it is the only thing the
    calling thread does: the receiving and the file writes run in other threads (hashlib, socket
    reads and file writes all release the GIL), and what limits a transfer is then the slowest of
    the network, the disk and SHA-256 instead of their sum.
    """
    with dest.open("w+b") as out:  # read too: the digest of a ranged download reads the parts back
        if info.ranges and info.size is not None and info.size > options.part_size:
            digest, written = _download_ranges(source, info.size, out.fileno(), options, progress)
        else:
            digest, written = _download_stream(source, out)
        out.flush()
        os.fsync(out.fileno())
    if info.size is not None and written != info.size:
        raise ArtifactUnavailable(f"{source.display}: got {written} bytes, expected {info.size}")
    if progress is not None:
        progress(written)
    return digest.hexdigest(), written


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _write_range(source: Source, fd: int, start: int, end: int) -> int:
    """One ranged GET written at its offset as it arrives (``RANGE_CHUNK`` at a time); its length."""
    offset = start
    for chunk in source.read_range(start, end):
        if offset + len(chunk) > end + 1:
            raise ArtifactUnavailable(f"{source.display}: the range {start}-{end} got more bytes than it asked for")
        _pwrite_all(fd, chunk, offset)
        offset += len(chunk)
    if offset != end + 1:
        raise ArtifactUnavailable(f"{source.display}: short read ({offset - start} of {end - start + 1} bytes)")
    return end - start + 1


def _hash_written(digest: Any, fd: int, start: int, length: int) -> None:
    """Adds ``length`` bytes of the file from ``start`` to the digest, read back ``HASH_CHUNK`` at a time."""
    end = start + length
    while start < end:
        chunk = os.pread(fd, min(HASH_CHUNK, end - start), start)
        if not chunk:
            raise ArtifactUnavailable(f"the download's file is shorter than what was written ({start} of {end})")
        digest.update(chunk)
        start += len(chunk)


def _download_ranges(
    source: Source, size: int, fd: int, options: TransferOptions, progress: Progress | None = None
) -> tuple[Any, int]:
    """Workers GET their range and write it at its offset as it arrives; this thread hashes the parts in order,
    reading them back from the file (the page cache).

    Memory holds about ``concurrency x RANGE_CHUNK`` of the object (plus one ``HASH_CHUNK``), whatever the part size:
    the RSS of a download does not grow with the artifact (issue 14: within 200 MiB of idle for 1 GiB).
    """

    def part(start: int, end: int) -> int:
        return _retry(lambda: _write_range(source, fd, start, end))

    digest, written = hashlib.sha256(), 0
    parts = _parts(size, options.part_size)
    window = max(2, options.concurrency * 2)
    with ThreadPoolExecutor(options.concurrency, thread_name_prefix="pull") as pool:
        pending = collections.deque(pool.submit(part, s, e) for s, e in itertools.islice(parts, window))
        try:
            while pending:
                length = pending.popleft().result()
                _hash_written(digest, fd, written, length)
                written += length
                if progress is not None:
                    progress(written)
                nxt = next(parts, None)
                if nxt is not None:
                    pending.append(pool.submit(part, *nxt))
        finally:
            for f in pending:
                f.cancel()
    return digest, written


def _download_stream(source: Source, out: BinaryIO) -> tuple[Any, int]:
    """One stream; a failure restarts it from byte 0. A second thread writes and hashes while this
    one receives the next chunk (one worker: the chunks stay in order)."""
    for attempt in range(1, ATTEMPTS + 1):
        out.seek(0)
        out.truncate()
        digest = hashlib.sha256()

        def sink(chunk: bytes, digest: Any = digest) -> int:
            out.write(chunk)
            digest.update(chunk)
            return len(chunk)

        written = 0
        with ThreadPoolExecutor(1, thread_name_prefix="pull-sink") as pool:
            pending: collections.deque[Future[int]] = collections.deque()
            try:
                for chunk in source.stream():
                    pending.append(pool.submit(sink, chunk))
                    if len(pending) > STREAM_CHUNKS_IN_FLIGHT:
                        written += pending.popleft().result()
                while pending:
                    written += pending.popleft().result()
                return digest, written
            except ArtifactUnavailable:
                for f in pending:
                    f.cancel()
                if attempt == ATTEMPTS:
                    raise
        time.sleep(BACKOFF_S * attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(4 * MiB):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(
    uri: str,
    cache_dir: Path,
    *,
    sha256: str | None = None,
    options: TransferOptions | None = None,
    remote: RemoteFetcher | None = None,
    free_space: Callable[[Path], int] | None = None,
) -> Artifact:
    """The artifact at ``uri`` as a verified local file, from the cache when possible.

    Before anything is downloaded, the object's size (its HEAD) is checked against ``options.max_bytes`` and against
    the free space under ``cache_dir`` (``free_space``, statvfs by default) with its headroom (``check_room``).

    ``remote`` (the node cache) is asked before a direct download. What it writes is checked here against
    ``spec.model.sha256`` like a download; its digest is either computed by the pod as the bytes arrive or, for a
    stream the node's agent vouches for, the agent's (the agent completes such a stream only if the bytes have that
    digest: node_cache.py).
    """
    options = options or TransferOptions()
    started = time.perf_counter()
    expected = sha256.lower().strip() if sha256 else None
    if expected is not None and not SHA256_RE.match(expected):
        raise InvalidArtifactSpec(f"sha256 must be 64 hexadecimal characters, got {len(expected)}")
    blobs = cache_dir / "blobs" / "sha256"
    if expected is not None and (blobs / expected).is_file():
        blob = blobs / expected
        log.info("artifact %s: cache hit %s", display_uri(uri), expected[:12])
        return Artifact(blob, expected, blob.stat().st_size, False, time.perf_counter() - started)

    source = open_source(uri, options)
    if isinstance(source, FileSource):
        # A mounted volume is already local: verify in place instead of copying.
        local = source.stat()
        actual = hash_file(source.path)
        check_digest(source.display, expected, actual)
        return Artifact(source.path, actual, local.size or 0, False, time.perf_counter() - started)

    ref = cache_dir / "refs" / (hashlib.sha256(uri.encode()).hexdigest() + ".json")
    cached = _read_ref(ref) if expected is None else None
    # The pod's own HEAD: skipped when the node's agent is asked and no ref needs comparing, since the agent sends
    # the same HEAD with the pod's presigned URL before it answers (its size and ETag come back with the answer)
    info = source.stat() if remote is None or cached is not None else None
    if info is not None and cached and info.etag and (cached.get("etag"), cached.get("size")) == (info.etag, info.size):
        blob = blobs / str(cached["sha256"])
        if blob.is_file():
            log.info("artifact %s: cache hit (etag)", source.display)
            return Artifact(blob, str(cached["sha256"]), blob.stat().st_size, False, time.perf_counter() - started)

    for d in (blobs, cache_dir / "tmp", ref.parent):
        d.mkdir(parents=True, exist_ok=True)
    admit = Admission(source.display, options.max_bytes, (free_space or free_bytes)(cache_dir))
    if info is not None:
        admit(info.size)
    fd, tmp_name = tempfile.mkstemp(dir=cache_dir / "tmp", prefix=PARTIAL_PREFIX)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        pulled = remote(source, info, tmp, expected, admit) if remote is not None else None
        if pulled is None:
            if info is None:
                info = source.stat()
                admit(info.size)
            pulled = Pulled(*download(source, info, tmp, options), origin="store", etag=info.etag)
        actual, size = pulled.sha256, pulled.size
        check_digest(source.display, expected, actual)
        os.replace(tmp, blobs / actual)
    finally:
        tmp.unlink(missing_ok=True)
    if pulled.etag:
        _write_ref(ref, {"etag": pulled.etag, "size": size, "sha256": actual})
    seconds = time.perf_counter() - started
    log.info("artifact %s: %d bytes from the %s in %.2fs", source.display, size, pulled.origin, seconds)
    store_bytes = size if pulled.origin == "store" else 0
    return Artifact(blobs / actual, actual, size, True, seconds, pulled.origin, store_bytes)


def _gib(size: int) -> str:
    return f"{size / 1024**3:.2f} GiB ({size} bytes)"


def free_bytes(directory: Path) -> int:
    """What this (unprivileged) process may still write on the filesystem under ``directory``: statvfs's
    ``f_bavail x f_frsize``, the blocks reserved for root left out."""
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


def room_needed(size: int) -> int:
    """Free disk an artifact of ``size`` bytes needs before its download starts: its size plus the headroom."""
    return size + max(math.ceil(size * ROOM_HEADROOM_SHARE), ROOM_HEADROOM_MIN)


def clear_partials(cache_dir: Path) -> int:
    """Removes partial downloads a killed process left in ``cache_dir`` (a container restarted mid-download would
    otherwise fill its volume a little more on every restart); the bytes freed. Only the directory's one owner (the
    runtime at start-up) may call it: another process's download in progress would be removed too."""
    freed = 0
    for partial in (cache_dir / "tmp").glob(PARTIAL_PREFIX + "*"):
        try:
            size = partial.stat().st_size
            partial.unlink()
        except OSError:
            continue
        freed += size
    if freed:
        log.info("removed %d bytes of partial downloads from %s", freed, cache_dir / "tmp")
    return freed


def largest_admitted(max_bytes: int, free: int) -> int:
    """The largest artifact ``check_room`` admits with this bound and free space (-1: none)."""
    largest = min(free - ROOM_HEADROOM_MIN, math.floor(free / (1 + ROOM_HEADROOM_SHARE)))
    while largest >= 0 and room_needed(largest) > free:  # the float share's rounding: a step or two at most
        largest -= 1
    return min(largest, max_bytes) if max_bytes else largest


def check_room(display: str, size: int | None, max_bytes: int, free: int) -> None:
    """Refuse an artifact over the bound, or one the disk under the cache cannot hold with its headroom, before
    downloading it."""
    if size is None:
        return
    if max_bytes and size > max_bytes:
        raise ArtifactTooLarge(
            f"{display}: the artifact is {_gib(size)}, over the bound of {_gib(max_bytes)} (spec.storage."
            "maxArtifactSize, at most spec.storage.cacheSize); raise them, or use a smaller artifact"
        )
    needed = room_needed(size)
    if needed > free:
        raise InsufficientStorage(
            f"{display}: the artifact is {_gib(size)}, with headroom it needs {_gib(needed)}, and the disk under the "
            f"model volume has {_gib(free)} free; the pod needs a node with more free disk (ephemeral storage)"
        )


def check_digest(display: str, expected: str | None, actual: str) -> None:
    if expected is not None and actual != expected:
        raise digest_mismatch(display, expected, actual)


def digest_mismatch(display: str, expected: str, actual: str) -> ChecksumMismatch:
    return ChecksumMismatch(
        f"{display}: sha256 is {actual}, the spec expects {expected}; the artifact was not served "
        "(upload the intended file or update spec.model.sha256)"
    )


def _read_ref(ref: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(ref.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_ref(ref: Path, data: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=ref.parent, prefix=".ref-")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    os.replace(tmp, ref)
