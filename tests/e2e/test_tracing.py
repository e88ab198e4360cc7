"""Tracing end to end: the operator's collector (the chart's tracing.otlpEndpoint, as the operator setting) and a
ModelAPI's spec.monitoring.tracing reach the revision's Deployment as OTEL_* variables; the runtime (a local process
with that Deployment's environment, see processes.RuntimeProcess: kwok pods run nothing) sends its spans to a real
OpenTelemetry Collector built from source (tests/e2e/cluster/otel.sh: the otlp receiver, the file exporter), and the
test reads what the collector received: a caller's trace holds the request's server, decode, queue, inference and
encode spans, with the model and revision, and the inference span links to the batch it ran in.
"""

from __future__ import annotations

import json
import runpy
import secrets
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import CLUSTER_SH, Cluster, wait_until
from .processes import OperatorProcess, RuntimeProcess, free_port, terminate

ROOT = Path(__file__).resolve().parents[2]
FLOWERS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
# a cold build of the collector (about 700 packages) on 2 cores, with room
BUILD_TIMEOUT_S = 30 * 60


class Collector:
    """otelcol-modelapi receiving OTLP/HTTP on a free loopback port and writing every batch it receives as a line of
    OTLP JSON to ``spans_path``."""

    def __init__(self, binary: Path, workdir: Path, logs_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.spans_path = workdir / "spans.jsonl"
        config = {
            "receivers": {"otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{self.port}"}}}},
            "exporters": {"file": {"path": str(self.spans_path), "flush_interval": "100ms"}},
            "service": {
                "telemetry": {"metrics": {"level": "none"}},  # no metrics server on a fixed port
                "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["file"]}},
            },
        }
        self.config_path = workdir / "collector.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = logs_dir / "otelcol-modelapi.log"
        self.binary = binary
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(self.binary), f"--config=file:{self.config_path}"], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while True:
            assert self.process.poll() is None, f"the collector exited:\n{self.log_path.read_text()[-3000:]}"
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                assert time.monotonic() < deadline, "the collector's OTLP/HTTP port never opened"
                time.sleep(0.2)

    def stop(self) -> None:
        terminate(self.process, grace_s=15)

    def spans(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Every span received so far, and the resources they came with."""
        spans: list[dict[str, Any]] = []
        resources: list[dict[str, Any]] = []
        if not self.spans_path.exists():
            return spans, resources
        for line in self.spans_path.read_text().splitlines():
            if not line.strip():
                continue
            for resource_spans in json.loads(line).get("resourceSpans", []):
                resources.append(resource_spans.get("resource", {}))
                for scope in resource_spans.get("scopeSpans", []):
                    spans += scope.get("spans", [])
        return spans, resources


@pytest.fixture(scope="module")
def collector(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[Collector]:
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    assert capture is not None
    with capture.global_and_fixture_disabled():  # a cold build prints its progress
        built = subprocess.run(
            ["bash", str(CLUSTER_SH), "build-otel"], stdout=subprocess.PIPE, timeout=BUILD_TIMEOUT_S, check=False
        )
    assert built.returncode == 0, "cluster.sh build-otel failed (its output is above)"
    binary = Path(built.stdout.decode().strip().splitlines()[-1]) / "otelcol-modelapi"
    process = Collector(binary, tmp_path_factory.mktemp("otel"), cluster.logs_dir)
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def operator(cluster: Cluster, collector: Collector) -> Iterator[OperatorProcess]:
    """The operator with a collector for every model pod (what the chart's tracing.otlpEndpoint sets)."""
    process = OperatorProcess(
        cluster,
        {
            "MODELAPI_OPERATOR_RESYNC_SECONDS": "5",
            "MODELAPI_OPERATOR_TRACING_ENDPOINT": collector.url,
            "MODELAPI_OPERATOR_TRACING_SAMPLE_RATE": "100",
        },
    )
    process.start()
    yield process
    process.stop()


@pytest.fixture
def model_uri(cluster: Cluster, s3: Any, namespace: str) -> str:
    model = runpy.run_path(str(ROOT / "examples" / "iris" / "build_model.py"))["build_iris_model"]()
    key = f"e2e/{namespace}/iris.onnx"
    s3.put_object(Bucket=cluster.s3_bucket, Key=key, Body=model.SerializeToString())
    return f"s3://{cluster.s3_bucket}/{key}"


def _deployment(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        for item in cluster.get_json("deployments", namespace=namespace)["items"]:
            if item["metadata"]["labels"].get("serving.modelapi.io/name") == name:
                return item  # type: ignore[no-any-return]
        return None

    result: dict[str, Any] = wait_until(found, timeout=60, interval=1, what=f"the Deployment of {name}")
    return result


def _predict(runtime: RuntimeProcess, model: str, headers: dict[str, str]) -> tuple[int, str | None]:
    request = urllib.request.Request(
        f"{runtime.url}/v1/models/{model}:predict",
        data=json.dumps({"instances": FLOWERS}).encode(),
        headers={"Content-Type": "application/json", **headers},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status), response.headers.get("traceparent")


def _attrs(item: dict[str, Any]) -> dict[str, str]:
    return {a["key"]: next(iter(a["value"].values())) for a in item.get("attributes", [])}


def test_a_callers_trace_holds_the_requests_spans_with_the_batch_link(
    cluster: Cluster,
    s3: Any,
    namespace: str,
    model_uri: str,
    collector: Collector,
    operator: OperatorProcess,
    tmp_path: Path,
) -> None:
    values = {key: cluster.env[key] for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    cluster.kubectl(
        "create", "secret", "generic", "s3-creds", *[f"--from-literal={k}={v}" for k, v in values.items()],
        namespace=namespace,
    )  # fmt: skip
    name = "traced"
    manifest = {
        "apiVersion": "serving.modelapi.io/v1alpha1",
        "kind": "ModelAPI",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": model_uri},
            "storage": {"endpoint": cluster.s3_endpoint_url, "region": "us-east-1", "credentialsSecret": "s3-creds"},
            "runtime": {"resources": {"cpu": "500m", "memory": "512Mi"}, "batching": {"maxBatchSize": 8}},
            "autoscaling": {"minReplicas": 1, "maxReplicas": 1},
            # the operator's collector; only callers' sampled traces are recorded
            "monitoring": {"tracing": {"sampleRate": 0}},
        },
    }
    cluster.kubectl("apply", "-f", "-", namespace=namespace, input=yaml.safe_dump(manifest))
    deployment = _deployment(cluster, namespace, name)
    revision = deployment["metadata"]["labels"]["serving.modelapi.io/revision"]
    env = {item["name"]: item.get("value") for item in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == collector.url
    assert (env["OTEL_TRACES_SAMPLER"], env["OTEL_TRACES_SAMPLER_ARG"]) == ("parentbased_traceidratio", "0")

    trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    callers = [f"00-{trace_id}-{caller_span}-01"] + [f"00-{secrets.token_hex(16)}-{caller_span}-01" for _ in range(7)]
    runtime = RuntimeProcess(cluster, deployment, tmp_path / name, values).start()
    try:
        with ThreadPoolExecutor(8) as pool:  # concurrent requests: the batcher may merge some of them
            answers = list(pool.map(lambda parent: _predict(runtime, name, {"traceparent": parent}), callers))
        untraced = _predict(runtime, name, {})  # no caller's trace, sample rate 0: not traced
        malformed = _predict(runtime, name, {"traceparent": f"00-{'0' * 32}-{caller_span}-01"})  # a new trace

        def received() -> list[dict[str, Any]] | None:
            spans = [s for s in collector.spans()[0] if s["traceId"] == trace_id]
            return spans if len(spans) >= 5 else None

        spans = wait_until(received, timeout=30, interval=0.5, what="the caller's spans at the collector")
    finally:
        runtime.stop()
    assert [status for status, _ in answers] == [200] * 8
    ours = answers[0][1]
    assert ours is not None
    assert ours.startswith(f"00-{trace_id}-")
    assert untraced == (200, None)
    assert malformed == (200, None)  # ignored: a new trace, which sample rate 0 does not record

    all_spans, resources = collector.spans()
    [server] = [s for s in spans if s["name"] == "POST /v1/models/{name}:predict"]
    assert server["spanId"] == ours.split("-")[2]
    assert server["parentSpanId"] == caller_span
    assert _attrs(server)["http.response.status_code"] == "200"
    children = {s["name"]: s for s in spans if s.get("parentSpanId") == server["spanId"]}
    assert set(children) == {"decode", "queue", "inference", "encode"}
    for span in [server, *children.values()]:
        assert _attrs(span)["modelapi.model"] == name
        assert _attrs(span)["modelapi.revision"] == revision
        assert _attrs(span)["modelapi.protocol"] == "v1"
    [link] = children["inference"]["links"]
    [batch] = [s for s in all_spans if s["spanId"] == link["spanId"] and s["traceId"] == link["traceId"]]
    assert batch["name"] == "batch"
    assert _attrs(batch)["modelapi.batch_size"] == _attrs(children["inference"])["modelapi.batch_size"]
    assert int(_attrs(batch)["modelapi.batch_size"]) >= 2  # this request's two rows, and any merged with them
    services = {_attrs(resource).get("service.name") for resource in resources}
    assert services == {name}
    # every one of the eight callers' traces arrived, none of the untraced requests' did
    traced = {s["traceId"] for s in all_spans if s.get("parentSpanId") == caller_span}
    assert traced == {parent.split("-")[1] for parent in callers}
