"""Tracing: the W3C ``traceparent`` parser, the sampler, the exporter's bounded queue, and the whole path through the
runtime as ``serve`` runs it (both HTTP layers, with dynamic batching) to an OTLP/HTTP receiver on a real socket.

The receiver here only collects what it is sent (the e2e test sends to a real OpenTelemetry Collector)."""

from __future__ import annotations

import asyncio
import http.server
import json
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from live_server import live_server, read_response

from modelapi_runtime import tracing
from modelapi_runtime.activator.holding import Holder
from modelapi_runtime.activator.server import build_app
from modelapi_runtime.activator.settings import ActivatorSettings
from modelapi_runtime.activator.targets import TARGET_HEADER, Directory, Endpoint, Target
from modelapi_runtime.tracing import Parent, parse_traceparent

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
CALLER = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
V1 = json.dumps({"instances": [[1, 2, 3, 4]]}).encode()


# --- the traceparent header ------------------------------------------------------------------------------------


def test_a_valid_traceparent_is_the_parent() -> None:
    assert parse_traceparent(CALLER.encode(), b"vendor=abc") == Parent(CALLER_TRACE, CALLER_SPAN, True, "vendor=abc")
    assert parse_traceparent(f"00-{CALLER_TRACE}-{CALLER_SPAN}-00".encode()) == Parent(CALLER_TRACE, CALLER_SPAN, False)
    # a later version may add fields after a dash; its first four are read the same
    assert parse_traceparent(f"01-{CALLER_TRACE}-{CALLER_SPAN}-03-extra".encode()) == Parent(
        CALLER_TRACE, CALLER_SPAN, True
    )


@pytest.mark.parametrize(
    "value",
    [
        f"ff-{CALLER_TRACE}-{CALLER_SPAN}-01",  # version ff is invalid
        f"0g-{CALLER_TRACE}-{CALLER_SPAN}-01",  # version not hex
        f"00-{CALLER_TRACE}-{CALLER_SPAN}-01-extra",  # version 00 has exactly four fields
        f"01-{CALLER_TRACE}-{CALLER_SPAN}-01extra",  # a later version's extra fields start with a dash
        f"00-{'0' * 32}-{CALLER_SPAN}-01",  # all-zero trace id
        f"00-{CALLER_TRACE}-{'0' * 16}-01",  # all-zero parent id
        f"00-{CALLER_TRACE[:-1]}-{CALLER_SPAN}0-01",  # trace id one short
        f"00-{CALLER_TRACE}-{CALLER_SPAN[:-1]}-001",  # parent id one short
        f"00-{CALLER_TRACE}-{CALLER_SPAN}-1",  # flags one short
        f"00-{CALLER_TRACE.upper()}-{CALLER_SPAN}-01",  # upper-case hex
        f"00-{CALLER_TRACE[:-1]}x-{CALLER_SPAN}-01",  # not hex
        f"00_{CALLER_TRACE}_{CALLER_SPAN}_01",  # wrong separators
        "",
        "garbage",
        "00-" + "é" * 32 + f"-{CALLER_SPAN}-01",
    ],
)
def test_a_malformed_traceparent_is_ignored(value: str) -> None:
    assert parse_traceparent(value.encode()) is None


def test_a_tracestate_is_kept_only_when_sane() -> None:
    assert parse_traceparent(CALLER.encode(), b"a=1" * 200) == Parent(CALLER_TRACE, CALLER_SPAN, True, None)
    assert parse_traceparent(CALLER.encode(), b"a=\x01") == Parent(CALLER_TRACE, CALLER_SPAN, True, None)


# --- configuration and sampling -----------------------------------------------------------------------------------


def test_tracing_is_off_without_an_endpoint() -> None:
    assert tracing.TraceConfig.from_env({}) is None
    assert tracing.open_tracer({}, "m", "r") is None
    on = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"}
    assert tracing.TraceConfig.from_env(on | {"OTEL_TRACES_EXPORTER": "none"}) is None
    assert tracing.TraceConfig.from_env(on | {"OTEL_SDK_DISABLED": "true"}) is None
    config = tracing.TraceConfig.from_env(on | {"OTEL_SERVICE_NAME": "iris", "OTEL_TRACES_SAMPLER_ARG": "0.25"})
    assert config is not None
    assert (config.url, config.service_name, config.ratio) == ("http://collector:4318/v1/traces", "iris", 0.25)
    traces = tracing.TraceConfig.from_env(on | {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://other:4318/t"})
    assert traces is not None
    assert traces.url == "http://other:4318/t"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OTEL_TRACES_SAMPLER_ARG": "1.5"}, "OTEL_TRACES_SAMPLER_ARG='1.5': expected a number from 0 to 1"),
        ({"OTEL_TRACES_SAMPLER": "sometimes"}, "OTEL_TRACES_SAMPLER='sometimes': expected one of"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "only OTLP over HTTP"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, "expected http://HOST:PORT"),
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "only otlp (or none)"),
    ],
)
def test_a_bad_tracing_variable_is_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(tracing.TracingConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        tracing.TraceConfig.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"} | env)


def _tracer(**env: str) -> tracing.Tracer:
    tracer = tracing.open_tracer({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"} | env, "m", "r")
    assert tracer is not None
    return tracer


def test_a_sampled_caller_is_always_recorded_and_an_unsampled_one_never() -> None:
    tracer = _tracer(OTEL_TRACES_SAMPLER="parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG="0")
    trace = tracer.start("v1", CALLER.encode())
    assert trace is not None
    assert (trace.trace_id, trace.parent_id) == (CALLER_TRACE, CALLER_SPAN)
    assert trace.header() == f"00-{CALLER_TRACE}-{trace.span_id}-01".encode()
    assert tracer.start("v1", f"00-{CALLER_TRACE}-{CALLER_SPAN}-00".encode()) is None
    assert tracer.start("v1", None) is None  # a new trace at ratio 0
    assert tracer.start("v1", b"00-garbage") is None


def test_the_root_ratio_samples_about_that_share() -> None:
    tracer = _tracer(OTEL_TRACES_SAMPLER="parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG="0.25")
    sampled = sum(tracer.start("v2", None) is not None for _ in range(4000))
    assert 800 < sampled < 1200
    always = _tracer()
    trace = always.start("v2", b"01-not-a-trace")
    assert trace is not None
    assert trace.parent_id is None
    assert trace.trace_id != CALLER_TRACE


def test_a_full_queue_drops_and_counts() -> None:
    dropped: list[int] = []
    config = tracing.TraceConfig(url="http://c:4318/v1/traces", max_queue_spans=6)
    exporter = tracing.Exporter(config, [], post=lambda *_: None, on_dropped=dropped.append)
    tracer = tracing.Tracer(config, exporter)
    for _ in range(3):
        trace = tracer.start("v1", None)
        assert trace is not None
        tracer.finish(trace, 404)  # no phases: the server span only
    run = tracer.batch_run(4)
    tracer.finish_batch(run)
    assert dropped == []
    full = tracer.start("v1", None)
    assert full is not None
    full.phases(0.0, 0.1, 0.0, 0.0, 0.2, 0.3, 1)
    tracer.finish(full, 200)  # five spans do not fit in the two left
    assert dropped == [5]
    assert len(exporter.queue) == 4


# --- the whole path: the runtime as serve runs it, spans to an OTLP/HTTP receiver -----------------------------------


class Receiver:
    """An OTLP/HTTP JSON receiver on a real socket: collects the spans POSTed to /v1/traces (or answers ``status``)."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.resources: list[dict[str, Any]] = []
        self.status = 200
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.status == 200 and self.path == "/v1/traces":
                    assert self.headers["Content-Type"] == "application/json"
                    for resource_spans in json.loads(body)["resourceSpans"]:
                        receiver.resources.append(resource_spans["resource"])
                        for scope in resource_spans["scopeSpans"]:
                            receiver.spans += scope["spans"]
                self.send_response(receiver.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *_: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def trace(self, trace_id: str, count: int, timeout: float = 10) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            spans = [s for s in self.spans if s["traceId"] == trace_id]
            if len(spans) >= count or time.monotonic() > deadline:
                return spans
            time.sleep(0.05)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def _post(live: Any, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    head = f"POST {path} HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    sock = live.connect()
    try:
        sock.sendall(head.encode() + b"\r\n" + body)
        return read_response(sock)
    finally:
        sock.close()


def _attrs(span: dict[str, Any]) -> dict[str, str]:
    return {a["key"]: next(iter(a["value"].values())) for a in span["attributes"]}


@pytest.mark.parametrize("http", ["fast", "uvicorn"])
def test_a_callers_trace_holds_the_request_spans_and_the_batch_link(
    receiver: Receiver, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, http: str
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    uri = (model_dir / "affine.onnx").as_uri()
    with live_server(uri, str(tmp_path / "cache"), http=http, revision="abcd1234", max_batch_size=4) as live:
        with ThreadPoolExecutor(4) as pool:  # concurrent requests: some share a batch
            answers = list(
                pool.map(
                    lambda i: _post(live, "/v1/models/m:predict", V1, {"traceparent": CALLER} if i == 0 else {}),
                    range(4),
                )
            )
        status, headers, _ = _post(live, "/v2/models/m/infer", b"{}", {"traceparent": CALLER, "tracestate": "v=1"})
        spans = receiver.trace(CALLER_TRACE, 7)
        metrics = live.metrics()
    assert [a[0] for a in answers] == [200] * 4
    assert status == 422  # a v2 request without inputs: a server span only, with its status
    ours = answers[0][1]["traceparent"]
    assert ours.startswith(f"00-{CALLER_TRACE}-")
    assert ours.endswith("-01")
    server_id = ours.split("-")[2]
    by_name: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        by_name.setdefault(span["name"], []).append(span)
    [server] = [s for s in by_name["POST /v1/models/{name}:predict"] if s["spanId"] == server_id]
    assert server["parentSpanId"] == CALLER_SPAN
    assert server["kind"] == tracing.SERVER
    assert _attrs(server) | {"modelapi.model": "m"} == _attrs(server)
    assert _attrs(server)["modelapi.revision"] == "abcd1234"
    assert _attrs(server)["http.response.status_code"] == "200"
    phases = {name: by_name[name] for name in ("decode", "queue", "inference", "encode")}
    assert all(len(found) == 1 and found[0]["parentSpanId"] == server_id for found in phases.values())
    starts = [int(phases[name][0]["startTimeUnixNano"]) for name in ("decode", "queue", "inference", "encode")]
    assert starts == sorted(starts)
    assert int(server["startTimeUnixNano"]) <= starts[0]
    assert int(phases["encode"][0]["endTimeUnixNano"]) <= int(server["endTimeUnixNano"])
    inference = phases["inference"][0]
    assert _attrs(inference)["modelapi.protocol"] == "v1"
    [link] = inference["links"]
    [batch] = [s for s in receiver.spans if s["spanId"] == link["spanId"]]
    assert batch["name"] == "batch"
    assert batch["traceId"] == link["traceId"] != CALLER_TRACE
    assert _attrs(inference)["modelapi.batch_size"] == _attrs(batch)["modelapi.batch_size"]
    [failed] = by_name["POST /v2/models/{name}/infer"]
    assert _attrs(failed)["http.response.status_code"] == "422"
    assert failed.get("traceState") == "v=1"
    assert headers["traceparent"] == f"00-{CALLER_TRACE}-{failed['spanId']}-01"
    assert receiver.resources[0]["attributes"][0] == {
        "key": "service.name",
        "value": {"stringValue": tracing.SERVICE_NAME},
    }
    assert 'modelapi_trace_spans_exported_total{model="m",revision="abcd1234"}' in metrics


@pytest.mark.parametrize("http", ["fast", "uvicorn"])
def test_a_malformed_traceparent_starts_a_new_trace(
    receiver: Receiver, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, http: str
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    with live_server((model_dir / "affine.onnx").as_uri(), str(tmp_path / "cache"), http=http) as live:
        status, headers, _ = _post(live, "/v1/models/m:predict", V1, {"traceparent": f"ff-{CALLER_TRACE}-x-01"})
        unsampled, quiet, _ = _post(
            live, "/v1/models/m:predict", V1, {"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-00"}
        )
        trace_id = headers["traceparent"].split("-")[1]
        spans = receiver.trace(trace_id, 5)
    assert status == 200
    assert trace_id != CALLER_TRACE
    assert {s["name"] for s in spans} == {"POST /v1/models/{name}:predict", "decode", "queue", "inference", "encode"}
    [server] = [s for s in spans if s["kind"] == tracing.SERVER]
    assert "parentSpanId" not in server
    assert unsampled == 200
    assert "traceparent" not in quiet
    assert not [s for s in receiver.spans if s["traceId"] == CALLER_TRACE]


def test_without_tracing_answers_carry_no_traceparent(model_dir: Path, tmp_path: Path) -> None:
    with live_server((model_dir / "affine.onnx").as_uri(), str(tmp_path / "cache")) as live:
        assert live.app.state.runtime.tracer is None
        status, headers, _ = _post(live, "/v1/models/m:predict", V1, {"traceparent": CALLER})
    assert status == 200
    assert "traceparent" not in headers


def test_an_unreachable_collector_is_counted_and_logged_once(
    receiver: Receiver,
    model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver.status = 503
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "20")
    caplog.set_level(logging.WARNING, "modelapi_runtime.tracing")
    with live_server((model_dir / "affine.onnx").as_uri(), str(tmp_path / "cache"), revision="r1") as live:
        for _ in range(3):
            assert _post(live, "/v1/models/m:predict", V1, {})[0] == 200
            time.sleep(0.1)  # one export each
        deadline = time.monotonic() + 10
        while 'modelapi_trace_export_errors_total{model="m",revision="r1"} 3.0' not in live.metrics():
            assert time.monotonic() < deadline, live.metrics()
            time.sleep(0.05)
        metrics = live.metrics()
    assert 'modelapi_trace_spans_dropped_total{model="m",revision="r1"} 15.0' in metrics
    lines = [r.getMessage() for r in caplog.records if "cannot export spans" in r.getMessage()]
    assert len(lines) == 1
    assert "HTTP 503" in lines[0]


def test_every_runtime_series_has_a_row_in_the_metrics_doc() -> None:
    """docs/metrics.md "The runtime's metrics" lists exactly the ``modelapi_*`` series the runtime exports."""
    import re

    from modelapi_runtime.metrics import Metrics

    doc = (Path(__file__).resolve().parents[3] / "docs" / "metrics.md").read_text()
    section = doc.split("## The runtime's metrics", 1)[1].split("\n## ", 1)[0]
    families = Metrics("m", "r", 4).registry.collect()
    names = {f.name + ("_total" if f.type == "counter" else "") for f in families if f.name.startswith("modelapi_")}
    assert "modelapi_trace_spans_dropped_total" in names
    documented = set(re.findall(r"^\| `(modelapi_\w+)` \|", section, re.MULTILINE))
    assert names - documented == set(), "runtime series without a row in docs/metrics.md"
    assert documented - names == set(), "rows in docs/metrics.md for series the runtime does not export"


# --- the activator: a request held for a cold start is one trace ----------------------------------------------------


class ReadyAfter(Holder):
    """A model at zero whose one replica (``endpoint``) is ready after ``delay`` seconds (no API server involved)."""

    def __init__(self, settings: ActivatorSettings, endpoint: Endpoint, delay: float) -> None:
        self.settings = settings
        self.endpoint = endpoint
        self.delay = delay
        self.held = 0

    async def known(self) -> Directory:
        return Directory()

    async def endpoints(self, target: Target, timeout: float) -> list[Endpoint]:
        await asyncio.sleep(self.delay)
        return [self.endpoint]


async def test_a_request_held_by_the_activator_is_one_trace_with_the_runtimes_spans(
    receiver: Receiver, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    tracer = tracing.open_activator_tracer()
    assert tracer is not None
    tracer.exporter.start()
    settings = ActivatorSettings(hold_timeout_seconds=10)
    with live_server((model_dir / "affine.onnx").as_uri(), str(tmp_path / "cache")) as live:
        holder = ReadyAfter(settings, Endpoint("127.0.0.1", live.port), 0.2)
        runner = web.AppRunner(build_app(settings, holder, tracer))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            async with aiohttp.ClientSession() as session:
                headers = {TARGET_HEADER: "ml/m", "traceparent": CALLER, "Content-Type": "application/json"}
                url = f"http://127.0.0.1:{port}/v1/models/m:predict"
                async with session.post(url, data=V1, headers=headers) as answer:
                    assert answer.status == 200
                    runtime_parent = answer.headers["traceparent"]  # the runtime's server span, passed back
        finally:
            await runner.cleanup()
            await asyncio.to_thread(tracer.exporter.stop)
        spans = await asyncio.to_thread(receiver.trace, CALLER_TRACE, 7)
    by_name = {span["name"]: span for span in spans}
    activator, hold = by_name["activator"], by_name["hold"]
    assert activator["parentSpanId"] == CALLER_SPAN
    assert activator["kind"] == tracing.SERVER
    assert hold["parentSpanId"] == activator["spanId"]
    assert int(hold["endTimeUnixNano"]) - int(hold["startTimeUnixNano"]) >= 150_000_000  # the cold start's wait
    assert _attrs(activator)["modelapi.model"] == "m"
    assert _attrs(activator)["k8s.namespace.name"] == "ml"
    server = by_name["POST /v1/models/{name}:predict"]
    assert server["parentSpanId"] == activator["spanId"]  # the runtime's spans are the activator's children
    assert runtime_parent == f"00-{CALLER_TRACE}-{server['spanId']}-01"
    assert {"decode", "queue", "inference", "encode"} <= set(by_name)
    services = {r["attributes"][0]["value"]["stringValue"] for r in receiver.resources}
    assert services == {"modelapi-activator", tracing.SERVICE_NAME}


def test_serve_refuses_a_bad_tracing_variable_before_it_starts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from modelapi_runtime.cli import main

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "50")  # a percent where a ratio belongs
    assert main(["serve", "--model-uri", "file:///nonexistent.onnx"]) == 2
    err = capsys.readouterr().err
    assert "modelapi-runtime: tracing: OTEL_TRACES_SAMPLER_ARG='50': expected a number from 0 to 1" in err
