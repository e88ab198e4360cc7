"""The prediction log: a sample of inference requests, recorded with their payloads, off the request path.

The request path does two cheap things for a sampled request, after its answer is written: it cuts the payloads to
the record's cap (a slice) and appends a ``Pending`` tuple to a bounded queue (waking the writer only when many wait). A
full queue drops the record and counts it (``modelapi_prediction_log_dropped_total``): logging never slows or fails
a request. One writer thread turns pending records into JSON lines and hands them to the sink:

- ``stdout``: one JSON object per line on the runtime's stdout (its log lines go to stderr, and every record has
  ``"kind": "prediction"``);
- ``s3``: newline-delimited JSON objects under a prefix, one object per ``batch_records`` records or
  ``batch_seconds`` seconds (or 64 MiB), whichever comes first, written with boto3 (the model's own endpoint and
  credentials).

A sink that fails (no bucket, no permission, unreachable) loses that batch, counts the error
(``modelapi_prediction_log_errors_total``), sets ``modelapi_prediction_log_failing{reason}`` to 1 (what the operator
reads for the ModelAPI's condition) and logs at most one line per interval; serving goes on. :meth:`PredictionLog.stop`
writes what is left (the SIGTERM drain ends with it).
"""

from __future__ import annotations

import base64
import collections
import functools
import io
import logging
import math
import os
import random
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Literal, Protocol

import orjson

from modelapi_runtime.settings import RuntimeSettings
from modelapi_runtime.storage import TransferOptions, make_s3_client

if TYPE_CHECKING:
    from prometheus_client import Counter

    from modelapi_runtime.metrics import Metrics

log = logging.getLogger(__name__)

Record = Literal["inputs", "outputs", "both"]
KIND = "prediction"
# The queue between the request path and the writer: this many records, and this many payload bytes, at most.
QUEUE_RECORDS = 10_000
QUEUE_BYTES = 64 * 1024 * 1024
# An S3 object is written early once its lines reach this size (batchRecords records of up to maxRecordBytes each
# could otherwise hold gigabytes in memory).
OBJECT_BYTES = 64 * 1024 * 1024
ERROR_LOG_INTERVAL_S = 60.0
# The arm of this revision (stable or canary) is read at most this often, by the writer.
ARM_CHECK_S = 1.0
Arm = Literal["stable", "canary"]
ARMS: tuple[Arm, ...] = ("stable", "canary")
# The writer wakes this often and writes everything queued (for batch_seconds too, and to notice a stop); sooner
# only when WAKE_AT records wait. Waking it per record costs a thread switch and a GIL hand-over each, measured at
# about a third of a tiny model's req/s at 10 % sampling.
TICK_S = 0.5
WAKE_AT = 1000
# The gap to the next sampled request at a sample rate of 0 (never reached).
NEVER = 2**62
# Sink errors, as a bounded label: what the store said, in a few words.
FailureReason = Literal["AccessDenied", "NoSuchBucket", "Unreachable", "WriteFailed"]


@dataclass(frozen=True, slots=True)
class Config:
    """What to record, and where (from :class:`RuntimeSettings`' ``prediction_log_*`` fields)."""

    sample_rate: float  # percent, 0 to 100
    record: Record
    max_record_bytes: int
    sink: Literal["stdout", "s3"]
    s3_prefix: str | None
    batch_records: int
    batch_seconds: float
    model: str
    revision: str
    arms_dir: str | None = None

    @classmethod
    def of(cls, settings: RuntimeSettings) -> Config | None:
        """The configuration, or None when the prediction log is off (sample rate 0)."""
        if settings.prediction_log_sample_rate <= 0:
            return None
        return cls(
            sample_rate=settings.prediction_log_sample_rate,
            record=settings.prediction_log_record,
            max_record_bytes=settings.prediction_log_max_record_bytes,
            sink=settings.prediction_log_sink,
            s3_prefix=settings.prediction_log_s3_prefix,
            batch_records=settings.prediction_log_batch_records,
            batch_seconds=settings.prediction_log_batch_seconds,
            model=settings.name,
            revision=settings.revision,
            arms_dir=settings.prediction_log_arms_dir,
        )


# A sampled request as the request path leaves it, payloads already cut to the cap: (time: seconds since the epoch,
# when answered; request id; protocol; status; latency in seconds; request; response; truncated; payload bytes). A
# plain tuple, not an object of a class: the garbage collector stops tracking a tuple of strings, numbers and bytes
# at the first collection it survives, while an object stays tracked, traversed again by every collection, for as
# long as it waits in the queue (about a thousand of them, half a second each).
Pending = tuple[float, str, str, int, float, bytes | None, bytes | None, bool, int]


def pending(  # noqa: PLR0917 - the fields of a record
    when: float,
    request_id: str,
    protocol: str,
    status: int,
    latency_s: float,
    request: bytes | None,
    response: bytes | None,
    truncated: bool,
) -> Pending:
    size = len(request or b"") + len(response or b"")
    return (when, request_id, protocol, status, latency_s, request, response, truncated, size)


def cut(request: bytes | None, response: bytes | None, cap: int) -> tuple[bytes | None, bytes | None, bool]:
    """The payloads cut so that together they hold at most ``cap`` bytes (the response keeps at least half of the
    cap when it needs it), and whether anything was cut."""
    req_len, resp_len = len(request or b""), len(response or b"")
    if req_len + resp_len <= cap:
        return request, response, False
    request_cap = cap - min(resp_len, cap // 2)
    if request is not None:
        request = request[:request_cap]
    if response is not None:
        response = response[: cap - len(request or b"")]
    return request, response, True


def payload(data: bytes, truncated: bool) -> tuple[str, str]:
    """(text, encoding): UTF-8 text as it is (a cut multi-byte character dropped), anything else (the v2 binary
    extension's tensors) in base64."""
    try:  # the common case, first and alone: a whole UTF-8 payload
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    if truncated:  # a cut may fall inside a character of up to 4 bytes
        for end in range(len(data) - 1, max(len(data) - 4, -1), -1):
            try:
                return data[:end].decode("utf-8"), "utf-8"
            except UnicodeDecodeError:
                continue
    return base64.b64encode(data).decode("ascii"), "base64"


# ".000Z" to ".999Z": the milliseconds part of a record's time, formatted once.
MILLISECONDS = tuple(f".{ms:03d}Z" for ms in range(1000))


class Rfc3339:
    """Seconds since the epoch as RFC 3339 in UTC with milliseconds; the date and time part is formatted once per
    second, the milliseconds looked up (the writer formats thousands of records a second). One per thread."""

    __slots__ = ("second", "text")

    def __init__(self) -> None:
        self.second = -1
        self.text = ""

    def __call__(self, t: float) -> str:
        second, ms = divmod(int(t * 1000), 1000)
        if second != self.second:
            self.second, self.text = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return self.text + MILLISECONDS[ms]


class ArmReader:
    """This revision's arm, from the file named by the revision in the operator's ``<name>-arms`` ConfigMap (mounted
    as a folder): its content is the revision's role. Read by the writer thread, at most once per ``ARM_CHECK_S``, and
    parsed again only when the file changed (the kubelet swaps a ConfigMap volume's files atomically: a new file, so a
    new inode and mtime). None: no folder, no file, or a role that is not an arm (``next``, ``lastKnownGood``, or
    anything else)."""

    __slots__ = ("arm", "checked_at", "path", "seen")

    def __init__(self, arms_dir: str | None, revision: str) -> None:
        self.path = os.path.join(arms_dir, revision) if arms_dir and revision else None
        self.arm: Arm | None = None
        self.checked_at = -ARM_CHECK_S
        self.seen: tuple[int, int] | None = None  # (inode, mtime in ns) of the file last read

    def current(self, now: float) -> Arm | None:
        """The arm as of at most ``ARM_CHECK_S`` before ``now`` (time.monotonic())."""
        if self.path is None or now - self.checked_at < ARM_CHECK_S:
            return self.arm
        self.checked_at = now
        try:
            stat = os.stat(self.path)
        except OSError:  # no ConfigMap yet (the volume is optional), or this revision is not in it
            self.seen, self.arm = None, None
            return None
        if (stat.st_ino, stat.st_mtime_ns) == self.seen:
            return self.arm
        try:
            with open(self.path, "rb") as file:
                text = file.read(64).strip()
        except OSError:  # swapped between the stat and the open: the arm as it was, read again next time
            return self.arm
        self.seen = (stat.st_ino, stat.st_mtime_ns)
        self.arm = next((arm for arm in ARMS if text == arm.encode()), None)
        return self.arm


def build_record(
    p: Pending, model: str, revision: str, rfc3339: Rfc3339 | None = None, arm: Arm | None = None
) -> dict[str, object]:
    """The JSON object of one record (docs/api.md "Prediction log" lists the fields)."""
    when, request_id, protocol, status, latency_s, request, response, truncated, _ = p
    record: dict[str, object] = {
        "kind": KIND,
        "time": (rfc3339 or Rfc3339())(when),
        "request_id": request_id,
        "model": model,
        "revision": revision,
        "arm": arm,
        "protocol": protocol,
        "status": status,
        "latency_ms": int(latency_s * 1_000_000 + 0.5) / 1000,  # microseconds, rounded (round() costs more)
        "truncated": truncated,
    }
    if request is not None:
        record["request"], record["request_encoding"] = payload(request, truncated)
    if response is not None:
        record["response"], record["response_encoding"] = payload(response, truncated)
    return record


class Sink(Protocol):
    def write(self, lines: list[bytes], now: float) -> int:
        """Take these JSON lines (each ends with its newline); returns how many records were written (now or of an
        earlier batch)."""

    def due(self, now: float) -> bool:
        """Whether buffered lines should be written now (always False for a sink that buffers nothing)."""

    def flush(self, now: float) -> int:
        """Write what is buffered; returns how many records were written."""


# The stdout sink's own buffer on the runtime's stdout: a batch of small records leaves in a few write() calls (the
# standard stream's 8 KiB buffer made one per 20-odd tiny records, and the writer thread gives the GIL up at each, to
# a loop thread that then holds it until the switch interval forces it back). Allocated once, so never faulted in
# again; a line longer than it is written directly.
STDOUT_BUFFER_BYTES = 1024 * 1024


def stdout_stream() -> IO[bytes]:
    """The runtime's stdout (file descriptor 1, left open) behind a buffer of ``STDOUT_BUFFER_BYTES``: nothing else in
    the runtime writes to stdout (its log lines go to stderr), so the two buffers never interleave."""
    return io.BufferedWriter(io.FileIO(1, "wb", closefd=False), buffer_size=STDOUT_BUFFER_BYTES)


class StdoutSink:
    """JSON lines on a binary stream (the runtime's stdout), flushed per batch of lines. The lines go through the
    stream's buffer one by one: no copy of the whole batch (with large payloads, megabytes allocated and freed per
    batch, each new one faulted in page by page)."""

    def __init__(self, stream: IO[bytes] | None = None) -> None:
        self.stream = stream if stream is not None else stdout_stream()

    def write(self, lines: list[bytes], now: float) -> int:
        self.stream.writelines(lines)
        self.stream.flush()
        return len(lines)

    def due(self, now: float) -> bool:
        return False

    def flush(self, now: float) -> int:
        return 0


class SinkError(Exception):
    def __init__(self, reason: FailureReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def split_s3_prefix(prefix: str) -> tuple[str, str]:
    """``s3://bucket/path/`` -> (bucket, "path/")."""
    parts = urllib.parse.urlsplit(prefix)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"{prefix!r}: expected s3://BUCKET/PATH/")
    return parts.netloc, parts.path.lstrip("/")


class S3Sink:
    """Newline-delimited JSON objects, one per ``batch_records`` records or ``batch_seconds`` seconds, at
    ``<prefix><model>/<revision>/<yyyy>/<mm>/<dd>/<hhmmss>-<pod>-<n>.jsonl``. ``put`` is the store's PutObject
    (boto3's ``put_object``); a failed batch is dropped (memory stays bounded) and raised as a :class:`SinkError`."""

    def __init__(
        self,
        prefix: str,
        *,
        model: str,
        revision: str,
        batch_records: int,
        batch_seconds: float,
        put: Callable[..., object],
        pod: str | None = None,
    ) -> None:
        self.bucket, path = split_s3_prefix(prefix)
        if path and not path.endswith("/"):
            path += "/"
        self.key_prefix = f"{path}{model}/{revision or 'none'}/"
        self.batch_records = batch_records
        self.batch_seconds = batch_seconds
        self.put = put
        self.pod = pod or os.environ.get("HOSTNAME") or socket.gethostname()
        self.lines: list[bytes] = []
        self.size = 0
        self.first_at = 0.0
        self.sequence = 0

    def key(self, now: float) -> str:
        self.sequence += 1
        stamp = time.strftime("%Y/%m/%d/%H%M%S", time.gmtime(now))
        return f"{self.key_prefix}{stamp}-{self.pod}-{self.sequence:06d}.jsonl"

    def write(self, lines: list[bytes], now: float) -> int:
        written = 0
        for line in lines:
            if not self.lines:
                self.first_at = now
            self.lines.append(line)
            self.size += len(line)
            if len(self.lines) >= self.batch_records or self.size >= OBJECT_BYTES:
                written += self.flush(now)
        return written

    def due(self, now: float) -> bool:
        return bool(self.lines) and now - self.first_at >= self.batch_seconds

    def flush(self, now: float) -> int:
        lines, self.lines, self.size = self.lines, [], 0
        if not lines:
            return 0
        key = self.key(now)
        try:
            self.put(Bucket=self.bucket, Key=key, Body=b"".join(lines),
                     ContentType="application/x-ndjson")  # fmt: skip
        except Exception as exc:
            raise classify(exc, f"s3://{self.bucket}/{key}") from None
        return len(lines)


def classify(exc: Exception, where: str) -> SinkError:
    """A bounded reason for a failed write, and a message naming where it went."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = str(response.get("Error", {}).get("Code", ""))
        status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code == "NoSuchBucket":
            return SinkError("NoSuchBucket", f"{where}: the bucket does not exist")
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken") or status in (
            401,
            403,
        ):
            return SinkError("AccessDenied", f"{where}: access denied ({code or status})")
        return SinkError("WriteFailed", f"{where}: S3 error {code or status}")
    name = type(exc).__name__
    if name in ("NoCredentialsError", "PartialCredentialsError"):
        return SinkError("AccessDenied", f"{where}: no S3 credentials found")
    if isinstance(exc, OSError) or name in ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError"):
        return SinkError("Unreachable", f"{where}: the store is unreachable ({name})")
    return SinkError("WriteFailed", f"{where}: {name}: {exc}")


class PredictionLog:
    """The sampler and the bounded queue (request path, event loop thread) and the writer (its own thread)."""

    def __init__(self, config: Config, sink: Sink, metrics: Metrics) -> None:
        self.config = config
        self.sink = sink
        self.rate = config.sample_rate / 100
        # log(1 - rate): the gaps between sampled requests are drawn from it (None: a rate of 100 % or of 0)
        self.log_unsampled = math.log1p(-self.rate) if 0 < self.rate < 1 else None
        self.countdown = self.gap()  # requests to go until the next sampled one, that one included
        self.record_inputs = config.record in ("inputs", "both")
        self.record_outputs = config.record in ("outputs", "both")
        self.cap = config.max_record_bytes
        self.queue: collections.deque[Pending] = collections.deque()
        # each written by one thread only: queued = offered - taken (no lock between the loop and the writer)
        self.offered = self.offered_bytes = 0
        self.taken = self.taken_bytes = 0
        self.wake = threading.Event()
        self.stopping = False
        self.thread: threading.Thread | None = None
        self.dropped: Counter = metrics.prediction_log_dropped
        self.written: Counter = metrics.prediction_log_records
        self.errors: Counter = metrics.prediction_log_errors
        self.set_failing = metrics.set_prediction_log_failing
        self.error_logged_at: float | None = None  # time.monotonic() of the last line about a failed write
        self.unlogged_errors = 0
        self.rfc3339 = Rfc3339()  # the writer's
        self.arms = ArmReader(config.arms_dir, config.revision)  # the writer's

    # -- the request path (the event loop's thread) ----------------------------------------------------------

    def sample(self) -> bool:
        """Whether this request is recorded: each one is, independently, with the sample rate's probability. The
        random draw is made once per sampled request, for the gap to the next one, which is then counted down: an
        unsampled request costs a decrement (the fast HTTP layer inlines it)."""
        self.countdown -= 1
        if self.countdown:
            return False
        self.countdown = self.gap()
        return True

    def gap(self) -> int:
        """Requests from here to the next sampled one, that one included: k with probability (1 - p)^(k - 1) * p for
        the sample rate p (geometric: the wait for the next success of independent draws), from one uniform draw."""
        if self.log_unsampled is None:
            return 1 if self.rate >= 1 else NEVER
        # 1 - random() lies in (0, 1]: its log is finite and at most 0, the quotient at least 0
        return int(math.log(1.0 - random.random()) / self.log_unsampled) + 1  # noqa: S311 - sampling, not security

    def offer(  # noqa: PLR0917 - one call per front end
        self,
        request_id: str,
        protocol: str,
        status: int,
        latency_s: float,
        request: bytes | None,
        response: bytes | None,
    ) -> None:
        """Queue a sampled request's record (dropped and counted when the queue is full)."""
        if not self.record_inputs:
            request = None
        if not self.record_outputs:
            response = None
        truncated = False
        if (0 if request is None else len(request)) + (0 if response is None else len(response)) > self.cap:
            request, response, truncated = cut(request, response, self.cap)
        record = pending(time.time(), request_id, protocol, status, latency_s, request, response, truncated)
        size = record[-1]
        if self.offered - self.taken >= QUEUE_RECORDS or self.offered_bytes - self.taken_bytes + size > QUEUE_BYTES:
            self.dropped.inc()
            return
        self.queue.append(record)
        self.offered += 1
        self.offered_bytes += size
        if self.offered - self.taken >= WAKE_AT and not self.wake.is_set():
            self.wake.set()

    # -- the writer thread ------------------------------------------------------------------------------------

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self.thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued and buffered, then end the writer (at most ``timeout`` seconds)."""
        self.stopping = True
        self.wake.set()
        if self.thread is not None:
            self.thread.join(timeout)
            self.thread = None

    def _run(self) -> None:
        while True:
            self.wake.wait(TICK_S)
            self.wake.clear()
            stopping = self.stopping
            self._drain()
            now = time.time()
            if stopping or self.sink.due(now):
                self._guarded(self.sink.flush, now)
            if stopping:
                return

    def _drain(self) -> None:
        config = self.config
        while self.queue:
            arm = self.arms.current(time.monotonic())
            lines: list[bytes] = []
            size = 0
            while self.queue and len(lines) < config.batch_records:
                pending = self.queue.popleft()
                size += pending[-1]
                record = build_record(pending, config.model, config.revision, self.rfc3339, arm)
                lines.append(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))  # no copy to add it
            self.taken += len(lines)
            self.taken_bytes += size
            self._guarded(functools.partial(self.sink.write, lines), time.time())

    def _guarded(self, write: Callable[[float], int], now: float) -> None:
        try:
            written = write(now)
        except SinkError as exc:
            self._failed(exc.reason, exc.message)
        except Exception as exc:  # a bug or an unexpected library error: counted and logged, never fatal
            self._failed("WriteFailed", f"{type(exc).__name__}: {exc}")
        else:
            if written:
                self.written.inc(written)
                self.set_failing(None)

    def _failed(self, reason: FailureReason, message: str) -> None:
        self.errors.inc()
        self.set_failing(reason)
        now = time.monotonic()
        if self.error_logged_at is not None and now - self.error_logged_at < ERROR_LOG_INTERVAL_S:
            self.unlogged_errors += 1
            return
        more = f" ({self.unlogged_errors} more since the last such line)" if self.unlogged_errors else ""
        log.warning("prediction log: write failed, records lost: %s: %s%s", reason, message, more)
        self.error_logged_at, self.unlogged_errors = now, 0


def open_prediction_log(settings: RuntimeSettings, metrics: Metrics) -> PredictionLog | None:
    """The prediction log these settings ask for, or None (off)."""
    config = Config.of(settings)
    if config is None:
        return None
    sink: Sink
    if config.sink == "s3":
        if not config.s3_prefix:
            raise ValueError("prediction_log_sink s3 needs prediction_log_s3_prefix (s3://BUCKET/PATH/)")
        client = make_s3_client(TransferOptions(endpoint=settings.s3_endpoint, region=settings.s3_region))
        sink = S3Sink(
            config.s3_prefix,
            model=config.model,
            revision=config.revision,
            batch_records=config.batch_records,
            batch_seconds=config.batch_seconds,
            put=client.put_object,
        )
    else:
        sink = StdoutSink()
    return PredictionLog(config, sink, metrics)
