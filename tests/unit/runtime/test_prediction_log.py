"""The prediction log: records, sampling, the bounded queue, the S3 sink against a real S3 API (moto's server), and
the whole path through the runtime as ``serve`` runs it (the fast HTTP layer and uvicorn's)."""

from __future__ import annotations

import datetime
import gc
import io
import itertools
import logging
import random
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from live_server import live_server, read_response

from modelapi_runtime import prediction_log as pl
from modelapi_runtime.metrics import Metrics
from modelapi_runtime.settings import RuntimeSettings

V1 = orjson.dumps({"instances": [[1, 2, 3, 4]]})


def request(path: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
    for name, value in (headers or {}).items():
        head += f"{name}: {value}\r\n"
    return head.encode() + b"\r\n" + body


def config(**overrides: Any) -> pl.Config:
    values: dict[str, Any] = {
        "sample_rate": 100.0,
        "record": "both",
        "max_record_bytes": 1024,
        "sink": "stdout",
        "s3_prefix": None,
        "batch_records": 1000,
        "batch_seconds": 60.0,
        "model": "m",
        "revision": "abcd1234",
    }
    return pl.Config(**(values | overrides))


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, {"model": "m", "revision": "abcd1234", **labels})
    return 0.0 if value is None else value


# --- records ---------------------------------------------------------------------------------------------------


def test_payloads_within_the_cap_are_kept_whole() -> None:
    assert pl.cut(b"abc", b"defg", 7) == (b"abc", b"defg", False)
    assert pl.cut(None, b"defg", 4) == (None, b"defg", False)


def test_payloads_over_the_cap_share_it_and_say_truncated() -> None:
    request, response, truncated = pl.cut(b"r" * 100, b"a" * 100, 64)
    assert truncated
    assert (len(request or b""), len(response or b"")) == (32, 32)  # the answer keeps half of the cap
    request, response, truncated = pl.cut(b"r" * 100, b"a" * 10, 64)
    assert (len(request or b""), response, truncated) == (54, b"a" * 10, True)  # a short answer leaves the rest
    request, response, truncated = pl.cut(b"r" * 100, None, 64)
    assert (request, response, truncated) == (b"r" * 64, None, True)


def test_a_payload_is_text_or_base64() -> None:
    assert pl.payload(b'{"instances": [[1]]}', False) == ('{"instances": [[1]]}', "utf-8")
    cut_inside_a_character = "é".encode() * 3 + "é".encode()[:1]
    assert pl.payload(cut_inside_a_character, True) == ("ééé", "utf-8")
    assert pl.payload(b"\x00\xff\xfe", False) == ("AP/+", "base64")


def test_a_record_has_the_metadata_and_the_payloads() -> None:
    pending = pl.pending(0.25, "req-1", "v1", 200, 0.0015, b'{"instances": [[1]]}', b"\xff", False)
    record = pl.build_record(pending, "iris", "abcd1234")
    assert record == {
        "kind": "prediction",
        "time": "1970-01-01T00:00:00.250Z",
        "request_id": "req-1",
        "model": "iris",
        "revision": "abcd1234",
        "arm": None,
        "protocol": "v1",
        "status": 200,
        "latency_ms": 1.5,
        "truncated": False,
        "request": '{"instances": [[1]]}',
        "request_encoding": "utf-8",
        "response": "/w==",
        "response_encoding": "base64",
    }
    only_metadata = pl.build_record(pl.pending(0, "r", "v2", 500, 0, None, None, False), "iris", "", arm="canary")
    assert "request" not in only_metadata
    assert "response" not in only_metadata
    assert only_metadata["arm"] == "canary"


def test_record_times_and_latencies_are_those_of_a_plain_formatter() -> None:
    """The writer's shortcuts (the date and time formatted once per second, the milliseconds looked up, the latency
    rounded without round()): the time is datetime's, the latency in milliseconds within half a microsecond."""
    rng = random.Random(18)
    rfc3339 = pl.Rfc3339()
    times = [*sorted(rng.uniform(1.7e9, 1.7e9 + 5) for _ in range(2000)), 0.0, 0.999, 59.9995, 1.7e9 + 0.5]
    for t in times:
        millis = int(t * 1000)
        expected = datetime.datetime.fromtimestamp(millis // 1000, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
        assert rfc3339(t) == f"{expected}.{millis % 1000:03d}Z", t
    for latency_s in [0.0, 0.0000004, 0.0000005, 0.0015, 0.0123456, 1.5, 37.25] + [
        rng.uniform(0, 2) for _ in range(500)
    ]:
        got = pl.build_record(pl.pending(0, "r", "v1", 200, latency_s, None, None, False), "m", "")["latency_ms"]
        assert isinstance(got, float)
        assert abs(got - latency_s * 1000) <= 0.0005 + 1e-9, latency_s
        assert len(orjson.dumps(got).split(b".")[-1]) <= 3, got


def test_a_cut_payload_keeps_its_text_up_to_the_cut_character() -> None:
    text = "añ€😀".encode()  # characters of 1, 2, 3 and 4 bytes
    for end in range(len(text) + 1):
        kept, encoding = pl.payload(text[:end], True)
        assert encoding == "utf-8"
        assert text[:end].startswith(kept.encode()), end
        assert len(text[:end]) - len(kept.encode()) < 4, end
    assert pl.payload(b"\xff" * 8, True) == ("//////////8=", "base64")  # not text, whatever the cut


# --- the arm: the operator's <name>-arms ConfigMap, as the kubelet mounts it ----------------------------------------


def publish(folder: Path, data: dict[str, bytes]) -> None:
    """Write a ConfigMap volume's files the way the kubelet does: a new timestamped folder, the ``..data`` link
    swapped to it in one rename, a link per key into ``..data``, the old folder removed."""
    folder.mkdir(exist_ok=True)
    version = folder / f"..{time.monotonic_ns()}"
    version.mkdir()
    for key, value in data.items():
        (version / key).write_bytes(value)
    old = (folder / "..data").resolve() if (folder / "..data").is_symlink() else None
    (folder / "..data_tmp").symlink_to(version.name)
    (folder / "..data_tmp").replace(folder / "..data")
    for key in data:
        if not (folder / key).is_symlink():
            (folder / key).symlink_to(f"..data/{key}")
    for entry in folder.iterdir():
        if entry.is_symlink() and not entry.name.startswith("..") and entry.name not in data:
            entry.unlink()
    if old is not None:
        for item in old.iterdir():
            item.unlink()
        old.rmdir()


def test_the_arm_is_read_from_the_revisions_file_and_follows_a_swap(tmp_path: Path) -> None:
    arms = tmp_path / "arms"
    reader = pl.ArmReader(str(arms), "abcd1234")
    assert reader.current(0.0) is None  # no ConfigMap yet: the volume is optional
    publish(arms, {"abcd1234": b"canary", "0000aaaa": b"stable"})
    assert reader.current(0.5) is None  # read at most once per ARM_CHECK_S
    assert reader.current(1.0) == "canary"
    publish(arms, {"abcd1234": b"stable", "0000aaaa": b"lastKnownGood"})  # promoted
    assert reader.current(1.5) == "canary"
    assert reader.current(2.0) == "stable"
    assert pl.ArmReader(str(arms), "0000aaaa").current(0.0) is None  # a role that is not an arm
    publish(arms, {"0000aaaa": b"stable"})  # this revision left the map
    assert reader.current(3.0) is None
    assert pl.ArmReader(None, "abcd1234").current(0.0) is None  # no folder configured: no arm


@pytest.mark.parametrize("content", [b"", b"\xff\xfe\x00", b"canary-ish", b"x" * 100_000, b"Stable"])
def test_garbage_in_the_arms_file_is_no_arm(tmp_path: Path, content: bytes) -> None:
    publish(tmp_path / "arms", {"abcd1234": content})
    assert pl.ArmReader(str(tmp_path / "arms"), "abcd1234").current(0.0) is None


def test_the_writer_puts_the_arm_in_each_record(tmp_path: Path) -> None:
    publish(tmp_path / "arms", {"abcd1234": b"canary\n"})
    out = io.BytesIO()
    log = pl.PredictionLog(config(arms_dir=str(tmp_path / "arms")), pl.StdoutSink(out), Metrics("m", "abcd1234"))
    log.start()
    log.offer("r1", "v1", 200, 0.001, V1, b"{}")
    log.stop()
    assert [orjson.loads(line)["arm"] for line in out.getvalue().splitlines()] == ["canary"]


# --- sampling and the queue --------------------------------------------------------------------------------------


def test_the_sample_rate_is_a_percentage() -> None:
    random.seed(18)
    metrics = Metrics("m", "abcd1234")
    ten = pl.PredictionLog(config(sample_rate=10.0), pl.StdoutSink(io.BytesIO()), metrics)
    drawn = sum(ten.sample() for _ in range(20_000))
    assert 1_800 < drawn < 2_200
    every = pl.PredictionLog(config(sample_rate=100.0), pl.StdoutSink(io.BytesIO()), metrics)
    assert all(every.sample() for _ in range(1000))
    tiny = pl.PredictionLog(config(sample_rate=0.01), pl.StdoutSink(io.BytesIO()), metrics)
    assert sum(tiny.sample() for _ in range(10_000)) < 10


def test_sampled_requests_are_independent_draws_made_once_per_sampled_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """The gaps between sampled requests are geometric (each request sampled with the rate's probability, whatever
    came before), and only a sampled request draws a random number: an unsampled one costs a decrement."""
    rng = random.Random(18)
    draws = 0

    def counted() -> float:
        nonlocal draws
        draws += 1
        return rng.random()

    monkeypatch.setattr(random, "random", counted)
    log = pl.PredictionLog(config(sample_rate=10.0), pl.StdoutSink(io.BytesIO()), Metrics("m", "abcd1234"))
    picks = [log.sample() for _ in range(200_000)]
    sampled = sum(picks)
    assert 19_400 < sampled < 20_600
    assert draws == sampled + 1  # one draw at the start, then one per sampled request
    gaps = [b - a for a, b in itertools.pairwise(i for i, picked in enumerate(picks) if picked)]
    for k in (1, 2, 5, 10, 30):  # P(gap = k) = 0.9^(k-1) * 0.1
        expected = 0.9 ** (k - 1) * 0.1 * len(gaps)
        assert abs(gaps.count(k) - expected) < 5 * expected**0.5 + 5, (k, gaps.count(k), expected)
    after_a_pick = [picks[i + 1] for i in range(len(picks) - 1) if picks[i]]  # no memory of the last draw
    assert 0.08 < sum(after_a_pick) / len(after_a_pick) < 0.12
    assert not any(pl.PredictionLog(config(sample_rate=0.0), pl.StdoutSink(io.BytesIO()), Metrics("m", "")).sample()
                   for _ in range(1000))  # fmt: skip


def test_what_to_record_is_honoured() -> None:
    metrics = Metrics("m", "abcd1234")
    for record, kept in (("inputs", (b"in", None)), ("outputs", (None, b"out")), ("both", (b"in", b"out"))):
        log = pl.PredictionLog(config(record=record), pl.StdoutSink(io.BytesIO()), metrics)
        log.offer("r", "v1", 200, 0.001, b"in", b"out")
        pending = log.queue.popleft()
        assert pending[5:7] == kept, record


def test_a_queued_record_is_left_alone_by_the_garbage_collector() -> None:
    """A record waits in the queue for up to half a second: every collection meanwhile would traverse it again."""
    log = pl.PredictionLog(config(), pl.StdoutSink(io.BytesIO()), Metrics("m", "abcd1234"))
    log.offer("r", "v1", 200, 0.001, b"in", b"out")
    gc.collect(0)
    assert not gc.is_tracked(log.queue[0])


def test_a_full_queue_drops_and_counts_without_blocking() -> None:
    metrics = Metrics("m", "abcd1234")
    log = pl.PredictionLog(config(), pl.StdoutSink(io.BytesIO()), metrics)  # no writer: nothing empties it
    started = time.perf_counter()
    for i in range(pl.QUEUE_RECORDS + 25):
        log.offer(f"r{i}", "v1", 200, 0.001, b"x", b"y")
    assert time.perf_counter() - started < 5
    assert len(log.queue) == pl.QUEUE_RECORDS
    assert sample(metrics, "modelapi_prediction_log_dropped_total") == 25


def test_the_queue_is_bounded_in_bytes_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pl, "QUEUE_BYTES", 10_000)
    metrics = Metrics("m", "abcd1234")
    log = pl.PredictionLog(config(max_record_bytes=1024), pl.StdoutSink(io.BytesIO()), metrics)
    for _ in range(20):
        log.offer("r", "v1", 200, 0.001, b"x" * 4096, b"y" * 4096)  # cut to 1024 bytes each
    assert len(log.queue) == 9
    assert sample(metrics, "modelapi_prediction_log_dropped_total") == 11


def test_the_writer_writes_json_lines_and_counts_them() -> None:
    metrics = Metrics("m", "abcd1234")
    out = io.BytesIO()
    log = pl.PredictionLog(config(), pl.StdoutSink(out), metrics)
    log.start()
    for i in range(5):
        log.offer(f"r{i}", "v1", 200, 0.001, V1, b'{"predictions": [[3]]}')
    log.stop()
    lines = out.getvalue().splitlines()
    assert [orjson.loads(line)["request_id"] for line in lines] == [f"r{i}" for i in range(5)]
    assert sample(metrics, "modelapi_prediction_log_records_total") == 5


def test_the_stdout_sink_writes_a_batch_to_file_descriptor_1_in_one_write(capfd: pytest.CaptureFixture[str]) -> None:
    stream = pl.stdout_stream()
    writes: list[int] = []
    raw_write = stream.raw.write  # type: ignore[attr-defined]

    def counted(data: Any) -> int:
        writes.append(len(data))
        written: int = raw_write(data)
        return written

    stream.raw.write = counted  # type: ignore[attr-defined]
    lines = [b'{"kind": "prediction", "n": %d, "pad": "%s"}\n' % (i, b"x" * 300) for i in range(1000)]
    assert pl.StdoutSink(stream).write(lines, 0.0) == 1000
    assert len(writes) == 1, "the standard stream's 8 KiB buffer took one write() per 20-odd such lines"
    assert capfd.readouterr().out.encode() == b"".join(lines)


# --- the S3 sink (moto's S3 server: a real S3 API over HTTP) -----------------------------------------------------


@pytest.fixture
def s3(s3_client: Any) -> Any:
    """The S3 client (s3_client), with an empty bucket `logs`."""
    for bucket in s3_client.list_buckets().get("Buckets", []):
        for item in s3_client.list_objects_v2(Bucket=bucket["Name"]).get("Contents", []):
            s3_client.delete_object(Bucket=bucket["Name"], Key=item["Key"])
    s3_client.create_bucket(Bucket="logs")
    return s3_client


def objects(s3: Any, prefix: str = "") -> list[list[dict[str, Any]]]:
    listed = s3.list_objects_v2(Bucket="logs", Prefix=prefix).get("Contents", [])
    keys = sorted(item["Key"] for item in listed)
    return [
        [orjson.loads(line) for line in s3.get_object(Bucket="logs", Key=key)["Body"].read().splitlines()]
        for key in keys
    ]


def s3_log(s3_endpoint: str, metrics: Metrics, prefix: str = "s3://logs/preds/", **overrides: Any) -> pl.PredictionLog:
    settings = RuntimeSettings(
        model_uri="file:///m.onnx",
        name="m",
        revision="abcd1234",
        s3_endpoint=s3_endpoint,
        s3_region="us-east-1",
        prediction_log_sample_rate=100,
        prediction_log_sink="s3",
        prediction_log_s3_prefix=prefix,
        **overrides,
    )
    log = pl.open_prediction_log(settings, metrics)
    assert log is not None
    return log


def test_s3_objects_hold_batch_records_each_and_the_rest_at_stop(s3: Any, s3_endpoint: str) -> None:
    metrics = Metrics("m", "abcd1234")
    log = s3_log(s3_endpoint, metrics, prediction_log_batch_records=3)
    log.start()
    for i in range(7):
        log.offer(f"r{i}", "v1", 200, 0.001, V1, b"{}")
    log.stop()
    found = objects(s3, "preds/m/abcd1234/")
    assert [len(batch) for batch in found] == [3, 3, 1]
    assert [record["request_id"] for batch in found for record in batch] == [f"r{i}" for i in range(7)]
    assert sample(metrics, "modelapi_prediction_log_records_total") == 7
    keys = [item["Key"] for item in s3.list_objects_v2(Bucket="logs")["Contents"]]
    assert all(key.endswith(".jsonl") for key in keys), keys


def test_s3_objects_are_written_after_batch_seconds(s3: Any, s3_endpoint: str) -> None:
    metrics = Metrics("m", "abcd1234")
    log = s3_log(s3_endpoint, metrics, prediction_log_batch_seconds=1)
    log.start()
    try:
        log.offer("early", "v1", 200, 0.001, V1, b"{}")
        deadline = time.monotonic() + 10
        while not objects(s3) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [[r["request_id"] for r in batch] for batch in objects(s3)] == [["early"]]
    finally:
        log.stop()


def test_a_missing_bucket_is_counted_reported_and_logged_once(
    s3: Any, s3_endpoint: str, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = Metrics("m", "abcd1234")
    log = s3_log(s3_endpoint, metrics, prefix="s3://no-such-bucket/x/", prediction_log_batch_records=1)
    with caplog.at_level(logging.WARNING, logger="modelapi_runtime.prediction_log"):
        log.start()
        for i in range(4):
            log.offer(f"r{i}", "v1", 200, 0.001, V1, b"{}")
        log.stop()
    assert sample(metrics, "modelapi_prediction_log_errors_total") == 4
    assert sample(metrics, "modelapi_prediction_log_failing", reason="NoSuchBucket") == 1
    assert sample(metrics, "modelapi_prediction_log_failing", reason="AccessDenied") == 0
    assert sample(metrics, "modelapi_prediction_log_records_total") == 0
    warned = [r for r in caplog.records if "prediction log" in r.getMessage()]
    assert len(warned) == 1
    assert "NoSuchBucket" in warned[0].getMessage()
    assert "no-such-bucket" in warned[0].getMessage()


def test_an_unreachable_store_is_a_bounded_reason(s3: Any) -> None:
    metrics = Metrics("m", "abcd1234")
    log = s3_log("http://127.0.0.1:9", metrics, prediction_log_batch_records=1)
    log.start()
    log.offer("r", "v1", 200, 0.001, V1, b"{}")
    log.stop(timeout=60)
    assert sample(metrics, "modelapi_prediction_log_failing", reason="Unreachable") == 1


def test_the_failure_reasons_are_the_metric_labels() -> None:
    from typing import get_args

    from modelapi_runtime.metrics import PREDICTION_LOG_FAILURES

    assert set(get_args(pl.FailureReason)) == set(PREDICTION_LOG_FAILURES)


# --- through the runtime, as ``serve`` runs it ----------------------------------------------------------------


@pytest.mark.parametrize("http", ["fast", "uvicorn"])
def test_served_requests_reach_s3_with_the_id_the_client_got(
    s3: Any, s3_endpoint: str, model_dir: Path, tmp_path: Path, http: str
) -> None:
    uri = (model_dir / "affine.onnx").as_uri()
    settings: dict[str, Any] = {
        "http": http,
        "revision": "abcd1234",
        "s3_endpoint": s3_endpoint,
        "s3_region": "us-east-1",
        "prediction_log_sample_rate": 100,
        "prediction_log_sink": "s3",
        "prediction_log_s3_prefix": "s3://logs/served/",
        "prediction_log_max_record_bytes": 256,
    }
    answers = []
    with live_server(uri, str(tmp_path / "cache"), **settings) as live:
        sock = live.connect()
        sock.sendall(request("/v1/models/m:predict", V1, {"X-Request-Id": "client-7"}))
        answers.append(read_response(sock))
        sock.sendall(request("/v1/models/m:predict", V1))
        answers.append(read_response(sock))
        sock.sendall(request("/v1/models/m:predict", b'{"instances": [[1, 2]]}'))  # wrong shape: 4xx
        answers.append(read_response(sock))
        big = orjson.dumps({"instances": [[1, 2, 3, 4]] * 50})
        sock.sendall(request("/v1/models/m:predict", big))
        answers.append(read_response(sock))
        sock.close()
        assert objects(s3) == []  # batched: nothing written before 1000 records or 60 s...
    records = [record for batch in objects(s3, "served/m/abcd1234/") for record in batch]  # ...or the stop
    assert [a[0] for a in answers] == [200, 200, 422, 200]
    assert [r["status"] for r in records] == [200, 200, 422, 200]
    assert [r["request_id"] for r in records] == [a[1]["x-request-id"] for a in answers]
    assert records[0]["request_id"] == "client-7"
    assert records[0]["request"] == V1.decode()
    assert orjson.loads(records[0]["response"]) == orjson.loads(answers[0][2])
    assert not records[0]["truncated"]
    assert records[3]["truncated"]
    assert len(records[3]["request"]) + len(records[3]["response"]) <= 256
    assert all(r["model"] == "m" and r["revision"] == "abcd1234" and r["latency_ms"] > 0 for r in records)


def test_without_the_prediction_log_answers_carry_no_request_id(model_dir: Path, tmp_path: Path) -> None:
    with live_server((model_dir / "affine.onnx").as_uri(), str(tmp_path / "cache")) as live:
        assert live.app.state.runtime.predictions is None
        sock = live.connect()
        sock.sendall(request("/v1/models/m:predict", V1))
        status, headers, _ = read_response(sock)
        sock.close()
    assert status == 200
    assert "x-request-id" not in headers


def test_an_s3_object_is_written_early_at_its_size_bound(
    s3: Any, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pl, "OBJECT_BYTES", 1000)
    metrics = Metrics("m", "abcd1234")
    log = s3_log(s3_endpoint, metrics, prediction_log_max_record_bytes=512)
    log.start()
    try:
        for i in range(4):
            log.offer(f"r{i}", "v1", 200, 0.001, b"x" * 400, None)  # about 600 bytes a line
        deadline = time.monotonic() + 10
        while len(objects(s3)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [len(batch) for batch in objects(s3)] == [2, 2]  # batchRecords (1000) never reached
    finally:
        log.stop()
