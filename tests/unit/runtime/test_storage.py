"""Artifact pull against real servers: a local HTTP server with byte ranges, and moto's S3 server."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from object_server import ObjectHandler, serving

from modelapi_runtime import storage
from modelapi_runtime.exceptions import (
    ArtifactAccessDenied,
    ArtifactNotFound,
    ArtifactTooLarge,
    ArtifactUnavailable,
    ChecksumMismatch,
    InsufficientStorage,
    InvalidArtifactSpec,
)
from modelapi_runtime.storage import ObjectInfo, TransferOptions, display_uri, download, fetch

MiB = 1024 * 1024
SMALL_PARTS = TransferOptions(concurrency=4, part_size=256 * 1024)


def _blob(size: int, seed: int = 7) -> bytes:
    import numpy as np

    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


# --- file:// -------------------------------------------------------------------------------------


def test_file_uri_is_verified_in_place(tmp_path: Path) -> None:
    data = _blob(1000)
    src = tmp_path / "model.onnx"
    src.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    a = fetch(src.as_uri(), tmp_path / "cache", sha256=digest.upper())
    assert a.path == src
    assert a.sha256 == digest
    assert not a.downloaded
    with pytest.raises(ChecksumMismatch, match="sha256 is"):
        fetch(src.as_uri(), tmp_path / "cache", sha256="0" * 64)
    with pytest.raises(ArtifactNotFound):
        fetch((tmp_path / "nope.onnx").as_uri(), tmp_path / "cache")
    with pytest.raises(InvalidArtifactSpec, match="64 hexadecimal"):
        fetch(src.as_uri(), tmp_path / "cache", sha256="abc")
    with pytest.raises(InvalidArtifactSpec, match="unsupported scheme"):
        fetch("gs://bucket/model.onnx", tmp_path / "cache")


def test_display_uri_drops_credentials() -> None:
    uri = "https://user:secret@host.example:8443/m/model.onnx?X-Amz-Signature=abc&X-Amz-Credential=AKIA"
    shown = display_uri(uri)
    assert shown == "https://host.example:8443/m/model.onnx?<redacted>"
    assert display_uri("s3://models/iris/1/model.onnx") == "s3://models/iris/1/model.onnx"


# --- https:// (a real local HTTP server with Range support) --------------------------------------


class _Handler(ObjectHandler):
    status_for: dict[str, int] = {}  # path with query -> a status answered with no body
    redirects: dict[str, str] = {}  # path with query -> Location (answered 302)

    def refused(self) -> bool:
        location = self.redirects.get(self.path)
        if location:
            self.answer_empty(302, Location=location)
            return True
        code = self.status_for.get(self.path)
        if code:
            self.answer_empty(code)
            return True
        return False


@pytest.fixture
def http_server() -> Iterator[tuple[str, type[_Handler]]]:
    handler = _Handler.fresh(status_for={}, redirects={})
    with serving(handler) as url:
        yield url, handler


def test_https_parallel_ranged_download_and_cache(http_server: tuple[str, type[_Handler]], tmp_path: Path) -> None:
    base, handler = http_server
    data = _blob(3 * MiB + 123)
    handler.files["/m/model.onnx"] = data
    a = fetch(f"{base}/m/model.onnx", tmp_path, options=SMALL_PARTS)
    assert a.downloaded
    assert a.path.read_bytes() == data
    assert a.sha256 == hashlib.sha256(data).hexdigest()
    ranged = [r for r in handler.requests if r.startswith("GET") and "bytes=" in r]
    assert len(ranged) == 13  # ceil((3 MiB + 123) / 256 KiB)
    assert list((tmp_path / "tmp").iterdir()) == []  # no partial files left

    # A restart without a digest: one HEAD, the ETag matches, no GET.
    handler.requests.clear()
    b = fetch(f"{base}/m/model.onnx", tmp_path, options=SMALL_PARTS)
    assert not b.downloaded
    assert b.path == a.path
    assert [r.split()[0] for r in handler.requests] == ["HEAD"]

    # With the digest known: no request at all.
    handler.requests.clear()
    c = fetch(f"{base}/m/model.onnx", tmp_path, sha256=a.sha256, options=SMALL_PARTS)
    assert not c.downloaded
    assert handler.requests == []


def test_https_without_ranges_streams_once(http_server: tuple[str, type[_Handler]], tmp_path: Path) -> None:
    base, handler = http_server
    handler.ranges = False
    data = _blob(MiB)
    handler.files["/model.onnx"] = data
    a = fetch(f"{base}/model.onnx", tmp_path, options=SMALL_PARTS)
    assert a.path.read_bytes() == data


@pytest.mark.parametrize(
    ("status", "error"),
    [(404, ArtifactNotFound), (403, ArtifactAccessDenied), (401, ArtifactAccessDenied), (503, ArtifactUnavailable)],
)
def test_https_errors_are_distinct_and_credential_free(
    http_server: tuple[str, type[_Handler]], tmp_path: Path, status: int, error: type[Exception],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setattr(storage, "BACKOFF_S", 0.01)
    base, handler = http_server
    handler.status_for["/m.onnx?sig=SECRET"] = status
    with pytest.raises(error) as info:
        fetch(f"{base}/m.onnx?sig=SECRET", tmp_path)
    assert "SECRET" not in str(info.value)


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost (its own CA), and its key."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@pytest.fixture
def https_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, type[_Handler]]]:
    """A real TLS server with a self-signed certificate that this test (and only it) trusts."""
    import ssl

    cert, key = _self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    handler = _Handler.fresh(status_for={}, redirects={})
    with serving(handler, tls=context) as url:
        yield url, handler


def test_https_follows_a_redirect_that_stays_on_https(https_server: tuple[str, type[_Handler]], tmp_path: Path) -> None:
    base, handler = https_server
    data = _blob(300_000)
    handler.files["/moved.onnx"] = data
    handler.redirects["/m.onnx?sig=SECRET"] = f"{base}/moved.onnx"
    artifact = fetch(f"{base}/m.onnx?sig=SECRET", tmp_path / "cache", sha256=hashlib.sha256(data).hexdigest())
    assert artifact.path.read_bytes() == data


def test_https_refuses_a_downgrade_redirect_to_http(
    https_server: tuple[str, type[_Handler]], http_server: tuple[str, type[_Handler]], tmp_path: Path
) -> None:
    base, handler = https_server
    plain, plain_handler = http_server
    plain_handler.files["/evil.onnx"] = _blob(1000)
    handler.redirects["/m.onnx?sig=SECRET"] = f"{plain}/evil.onnx?sig=SECRET2"
    with pytest.raises(ArtifactAccessDenied, match="a downgrade from https; refused") as info:
        fetch(f"{base}/m.onnx?sig=SECRET", tmp_path / "cache")
    assert "SECRET" not in str(info.value)
    assert f"{plain}/evil.onnx?<redacted>" in str(info.value)
    assert plain_handler.requests == [], "nothing was sent in clear text"
    assert not list((tmp_path / "cache").rglob("blobs/sha256/*"))


def test_http_to_http_redirects_are_followed(http_server: tuple[str, type[_Handler]], tmp_path: Path) -> None:
    base, handler = http_server
    handler.files["/new.onnx"] = data = _blob(5000)
    handler.redirects["/old.onnx"] = "/new.onnx"
    assert fetch(f"{base}/old.onnx", tmp_path / "cache").path.read_bytes() == data


def test_a_url_http_client_refuses_is_an_invalid_spec_without_its_query(
    http_server: tuple[str, type[_Handler]], tmp_path: Path
) -> None:
    base, _ = http_server
    with pytest.raises(InvalidArtifactSpec, match="not a valid URL") as info:
        fetch(f"{base}/m.onnx?sig=SECRET\x01x", tmp_path / "cache")
    assert "SECRET" not in str(info.value)


@pytest.mark.parametrize(
    ("current", "target", "refused"),
    [
        ("https://a.example/m", "http://a.example/m", True),
        ("https://a.example/m", "ftp://a.example/m", True),
        ("HTTPS://a.example/m", "HTTP://a.example/m", True),
        ("https://a.example/m", "https://b.example/m", False),
        ("http://a.example/m", "http://b.example/m", False),
        ("http://a.example/m", "https://b.example/m", False),
    ],
)
def test_check_redirect(current: str, target: str, refused: bool) -> None:
    if refused:
        with pytest.raises(ArtifactAccessDenied, match="downgrade"):
            storage.check_redirect(current, target)
    else:
        storage.check_redirect(current, target)


def test_checksum_mismatch_leaves_nothing_in_the_cache(http_server: tuple[str, type[_Handler]], tmp_path: Path) -> None:
    base, handler = http_server
    handler.files["/m.onnx"] = _blob(MiB)
    with pytest.raises(ChecksumMismatch):
        fetch(f"{base}/m.onnx", tmp_path, sha256="1" * 64, options=SMALL_PARTS)
    assert list((tmp_path / "blobs" / "sha256").iterdir()) == []
    assert list((tmp_path / "tmp").iterdir()) == []


def test_stalled_transfer_fails_in_bounded_time(
    http_server: tuple[str, type[_Handler]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage, "READ_TIMEOUT_S", 0.3)
    monkeypatch.setattr(storage, "BACKOFF_S", 0.01)
    base, handler = http_server
    handler.files["/m.onnx"] = _blob(1000)
    handler.stall_s = 2.0
    started = time.monotonic()
    with pytest.raises(ArtifactUnavailable):
        fetch(f"{base}/m.onnx", tmp_path)
    # ATTEMPTS x read timeout (+ backoff), far below the stall: the timeout, not the server, ended it.
    assert time.monotonic() - started < storage.ATTEMPTS * 0.3 + 1.0


def test_unreachable_server_is_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storage, "BACKOFF_S", 0.01)
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ArtifactUnavailable, match="cannot reach"):
        fetch(f"http://127.0.0.1:{port}/m.onnx", tmp_path)


# --- s3:// (moto's S3 server: a real S3 API over HTTP) -------------------------------------------


@pytest.fixture
def s3(s3_client: Any) -> Any:
    """The S3 client (s3_client), with a bucket `models`."""
    if "models" not in [b["Name"] for b in s3_client.list_buckets().get("Buckets", [])]:
        s3_client.create_bucket(Bucket="models")
    return s3_client


def test_s3_parallel_ranged_download_then_cache_hit(s3: Any, s3_endpoint: str, tmp_path: Path) -> None:
    data = _blob(2 * MiB + 5)
    s3.put_object(Bucket="models", Key="iris/1/model.onnx", Body=data)
    options = TransferOptions(concurrency=4, part_size=256 * 1024, endpoint=s3_endpoint, region="us-east-1")
    a = fetch("s3://models/iris/1/model.onnx", tmp_path, options=options)
    assert a.downloaded
    assert a.path.read_bytes() == data
    b = fetch("s3://models/iris/1/model.onnx", tmp_path, options=options)
    assert not b.downloaded  # ETag unchanged
    s3.put_object(Bucket="models", Key="iris/1/model.onnx", Body=data[:-1])
    c = fetch("s3://models/iris/1/model.onnx", tmp_path, options=options)
    assert c.downloaded  # a new object under the same key is fetched again
    assert c.sha256 == hashlib.sha256(data[:-1]).hexdigest()


def test_s3_errors(s3: Any, s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storage, "BACKOFF_S", 0.01)
    options = TransferOptions(endpoint=s3_endpoint, region="us-east-1")
    with pytest.raises(ArtifactNotFound, match="not found"):
        fetch("s3://models/missing.onnx", tmp_path, options=options)
    with pytest.raises(ArtifactNotFound):
        fetch("s3://no-such-bucket/model.onnx", tmp_path, options=options)
    s3.put_object(Bucket="models", Key="m.onnx", Body=b"12345")
    with pytest.raises(ChecksumMismatch):
        fetch("s3://models/m.onnx", tmp_path, sha256="2" * 64, options=options)
    with pytest.raises(InvalidArtifactSpec):
        fetch("s3://models", tmp_path, options=options)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(ArtifactAccessDenied, match="no S3 credentials"):
        fetch("s3://models/m.onnx", tmp_path, options=options)


def test_s3_unreachable_endpoint(s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storage, "BACKOFF_S", 0.01)
    with pytest.raises(ArtifactUnavailable):
        fetch("s3://models/m.onnx", tmp_path, options=TransferOptions(endpoint="http://127.0.0.1:9"))


def test_s3_client_error_mapping() -> None:
    """The codes moto does not produce (it enforces no IAM by default) still map right."""
    from botocore.exceptions import ClientError

    src = storage.S3Source.__new__(storage.S3Source)
    src.display = "s3://b/k"

    def err(code: str, status: int) -> Exception:
        return ClientError(
            {
                "Error": {"Code": code},
                "ResponseMetadata": {
                    "HTTPStatusCode": status,
                    "HTTPHeaders": {},
                    "HostId": "",
                    "RequestId": "",
                    "RetryAttempts": 0,
                },
            },
            "GetObject",
        )

    assert isinstance(src._wrap(err("AccessDenied", 403)), ArtifactAccessDenied)
    assert isinstance(src._wrap(err("SignatureDoesNotMatch", 403)), ArtifactAccessDenied)
    assert isinstance(src._wrap(err("ExpiredToken", 400)), ArtifactAccessDenied)
    assert isinstance(src._wrap(err("NoSuchKey", 404)), ArtifactNotFound)
    assert isinstance(src._wrap(err("SlowDown", 503)), ArtifactUnavailable)
    assert isinstance(src._wrap(err("InternalError", 500)), ArtifactUnavailable)


class _FlakySource:
    """Our own Source seam: fails the first ``fail_stream`` streams midway, and every read of the
    range starting at ``bad_start`` ``fail_range`` times."""

    display = "test://flaky"

    def __init__(self, data: bytes, *, fail_stream: int = 0, bad_start: int = -1, fail_range: int = 0) -> None:
        self.data, self.fail_stream, self.bad_start, self.fail_range = data, fail_stream, bad_start, fail_range
        self.streams = 0

    def stat(self) -> ObjectInfo:
        return ObjectInfo(size=len(self.data), etag="e", ranges=True)

    def read_range(self, start: int, end: int) -> Iterator[bytes]:
        for i in range(start, end + 1, 300):
            if start == self.bad_start and self.fail_range > 0 and i >= start + 300:  # midway, after some bytes
                self.fail_range -= 1
                raise ArtifactUnavailable("range failed")
            yield self.data[i : min(i + 300, end + 1)]

    def stream(self) -> Iterator[bytes]:
        self.streams += 1
        for i in range(0, len(self.data), 1000):
            if self.streams <= self.fail_stream and i >= len(self.data) // 2:
                raise ArtifactUnavailable("stream broke")
            yield self.data[i : i + 1000]


@pytest.mark.parametrize("ranges", [False, True])
def test_download_retries_keep_the_bytes_and_digest_right(
    tmp_path: Path, ranges: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage, "BACKOFF_S", 0.0)
    data = os.urandom(10_000)
    src = _FlakySource(data, fail_stream=2, bad_start=3000, fail_range=2)
    info = ObjectInfo(size=len(data), etag="e", ranges=ranges)
    digest, size = download(src, info, tmp_path / "out", TransferOptions(concurrency=3, part_size=1000))
    assert (size, digest) == (len(data), hashlib.sha256(data).hexdigest())
    assert (tmp_path / "out").read_bytes() == data
    assert src.streams == (0 if ranges else 3)


@pytest.mark.parametrize("ranges", [False, True])
def test_download_gives_up_after_the_attempts(tmp_path: Path, ranges: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storage, "BACKOFF_S", 0.0)
    src = _FlakySource(os.urandom(5000), fail_stream=99, bad_start=2000, fail_range=99)
    info = ObjectInfo(size=5000, etag="e", ranges=ranges)
    with pytest.raises(ArtifactUnavailable):
        download(src, info, tmp_path / "out", TransferOptions(concurrency=2, part_size=1000))


class _ShortRanges(_FlakySource):
    """Answers every range one byte short (a server that cuts its answer), or one byte long."""

    def __init__(self, data: bytes, delta: int) -> None:
        super().__init__(data)
        self.delta, self.reads = delta, 0

    def read_range(self, start: int, end: int) -> Iterator[bytes]:
        self.reads += 1
        yield self.data[start : end + 1 + self.delta] if self.delta < 0 else self.data[start : end + 1] + b"x"


@pytest.mark.parametrize("delta", [-1, 1])
def test_a_range_answered_short_or_long_is_retried_then_refused(
    tmp_path: Path, delta: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage, "BACKOFF_S", 0.0)
    src = _ShortRanges(os.urandom(4000), delta)
    with pytest.raises(ArtifactUnavailable, match="short read" if delta < 0 else "more bytes"):
        download(
            src, ObjectInfo(4000, "e", ranges=True), tmp_path / "out", TransferOptions(concurrency=1, part_size=1000)
        )
    # the first part's attempts, and the second part's if it started before the first gave up
    assert src.reads in (storage.ATTEMPTS, 2 * storage.ATTEMPTS)


def test_an_artifact_over_the_bound_is_refused_from_its_head_before_any_download(
    http_server: tuple[str, type[_Handler]], tmp_path: Path
) -> None:
    url, handler = http_server
    handler.files["/big.onnx"] = _blob(3 * MiB)
    options = TransferOptions(concurrency=2, part_size=MiB, max_bytes=2 * MiB)
    with pytest.raises(ArtifactTooLarge, match=r"is 0\.00 GiB \(3145728 bytes\), over the bound of .*2097152"):
        fetch(f"{url}/big.onnx", tmp_path, options=options)
    assert [r for r in handler.requests if r.startswith("GET")] == []  # refused on the HEAD's size alone
    assert fetch(f"{url}/big.onnx", tmp_path, options=TransferOptions(max_bytes=3 * MiB)).size == 3 * MiB


def test_check_room_names_the_size_and_what_is_free() -> None:
    storage.check_room("s3://b/k", None, 10, 0)  # unknown size (a server without Content-Length): nothing to check
    storage.check_room("s3://b/k", 10, 0, 10 + 64 * MiB)  # no bound, the disk holds it and the least headroom exactly
    with pytest.raises(InsufficientStorage, match=r"the disk under the model volume has .*\(99 bytes\) free"):
        storage.check_room("s3://b/k", 100, 0, 99)
    with pytest.raises(InsufficientStorage, match=r"with headroom it needs .*\(67108964 bytes\)"):
        storage.check_room("s3://b/k", 100, 0, 100 + 64 * MiB - 1)  # the artifact fits, its headroom does not
    assert storage.room_needed(10 * 1024 * MiB) == 11 * 1024 * MiB  # 10 % past 640 MiB
    with pytest.raises(ArtifactTooLarge, match="s3://b/k: the artifact is"):
        storage.check_room("s3://b/k", 100, 99, 10**12)


def test_free_disk_is_checked_from_the_head_before_any_download_and_partials_are_cleared(
    http_server: tuple[str, type[_Handler]], tmp_path: Path
) -> None:
    url, handler = http_server
    data = _blob(3 * MiB)
    handler.files["/disk.onnx"] = data
    cache = tmp_path / "models"
    (cache / "tmp").mkdir(parents=True)
    partial = cache / "tmp" / "pull-left-by-a-killed-container"
    partial.write_bytes(b"\0" * MiB)
    assert storage.clear_partials(cache) == MiB
    assert not partial.exists()

    seen: list[Path] = []

    def volume(free: int) -> Any:
        def statvfs_says(directory: Path) -> int:  # the seam: statvfs of the volume, as a small filesystem answers
            seen.append(directory)
            return min(free, storage.free_bytes(directory))

        return statvfs_says

    needed = storage.room_needed(len(data))
    with pytest.raises(InsufficientStorage, match=rf"\({needed} bytes\).*\({needed - 1} bytes\) free"):
        fetch(
            f"{url}/disk.onnx",
            cache,
            options=TransferOptions(concurrency=2, part_size=MiB),
            free_space=volume(needed - 1),
        )
    assert seen == [cache]
    assert [r for r in handler.requests if r.startswith("GET")] == []  # refused on the HEAD's size alone
    assert list((cache / "tmp").iterdir()) == []
    got = fetch(
        f"{url}/disk.onnx", cache, options=TransferOptions(concurrency=2, part_size=MiB), free_space=volume(needed)
    )
    assert got.path.read_bytes() == data
    assert 0 < storage.free_bytes(tmp_path) <= shutil.disk_usage(tmp_path).free


@pytest.mark.parametrize(
    "free", [0, 1, 64 * MiB - 1, 64 * MiB, 64 * MiB + 1, 704 * MiB, 704 * MiB + 1, 10**12 + 7, 3 * 10**13 + 11]
)
@pytest.mark.parametrize("max_bytes", [0, 1, 100 * MiB, 10**15])
def test_the_limit_sent_to_the_node_cache_is_exactly_what_check_room_admits(free: int, max_bytes: int) -> None:
    """The largest artifact the pod tells the agent it admits: every size up to it passes ``check_room``, the next
    one does not (so the agent refuses what the pod would, and nothing the pod would take)."""
    limit = storage.largest_admitted(max_bytes, free)
    if limit >= 0:
        storage.check_room("x", limit, max_bytes, free)
    with pytest.raises((ArtifactTooLarge, InsufficientStorage)):
        storage.check_room("x", limit + 1, max_bytes, free)
