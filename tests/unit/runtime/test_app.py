"""The runtime app through its ASGI interface with real ONNX models."""

from __future__ import annotations

import asyncio
import logging
import struct
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from conftest import ServeFactory


async def test_v1_predict(serve: ServeFactory, model_dir: Path) -> None:
    s = await serve(model_dir / "affine.onnx")
    r = await s.client.post("/v1/models/m:predict", json={"instances": [[1, 2, 3, 4], [0, 0, 0, 0]]})
    assert r.status_code == 200
    assert r.json() == {"predictions": [[3.0, 5.0, 7.0, 9.0], [1.0, 1.0, 1.0, 1.0]]}


async def test_v2_infer_json(serve: ServeFactory, model_dir: Path) -> None:
    s = await serve(model_dir / "affine.onnx", revision="r1")
    body = {"id": "42", "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    r = await s.client.post("/v2/models/m/infer", json=body)
    assert r.status_code == 200
    assert r.json() == {
        "model_name": "m",
        "model_version": "r1",
        "id": "42",
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [1, 4], "data": [3.0, 5.0, 7.0, 9.0]}],
    }
    # The versioned path serves the same model.
    r = await s.client.post("/v2/models/m/versions/r1/infer", json=body)
    assert r.status_code == 200


async def test_v2_binary_extension_roundtrip(serve: ServeFactory, model_dir: Path) -> None:
    s = await serve(model_dir / "affine.onnx")
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    header = orjson.dumps(
        {
            "inputs": [
                {"name": "x", "shape": [2, 4], "datatype": "FP32", "parameters": {"binary_data_size": x.nbytes}}
            ],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
        }
    )
    r = await s.client.post(
        "/v2/models/m/infer",
        content=header + x.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 200, r.text
    n = int(r.headers["inference-header-content-length"])
    meta = orjson.loads(r.content[:n])
    out = meta["outputs"][0]
    assert out["parameters"]["binary_data_size"] == 32
    y = np.frombuffer(r.content[n:], dtype="<f4").reshape(out["shape"])
    np.testing.assert_array_equal(y, 2 * x + 1)


async def test_multi_input_model_v1_and_v2(serve: ServeFactory, model_dir: Path) -> None:
    s = await serve(model_dir / "two_io.onnx")
    r = await s.client.post(
        "/v1/models/m:predict", json={"instances": [{"a": [1, 2], "b": [3, 4]}, {"a": [0, 1], "b": [1, 1]}]}
    )
    assert r.status_code == 200
    assert r.json()["predictions"][0] == {"sum": [4.0, 6.0], "prod": [3.0, 8.0]}
    body = {
        "inputs": [
            {"name": "a", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]},
            {"name": "b", "shape": [1, 2], "datatype": "FP32", "data": [3, 4]},
        ],
        "outputs": [{"name": "prod"}],
    }
    r = await s.client.post("/v2/models/m/infer", json=body)
    assert [o["name"] for o in r.json()["outputs"]] == ["prod"]


async def test_int_and_fixed_shape_models(serve: ServeFactory, model_dir: Path) -> None:
    s = await serve(model_dir / "int.onnx")
    r = await s.client.post("/v1/models/m:predict", json={"instances": [[1, 2, 3]]})
    assert r.json() == {"predictions": [[2, 3, 4]]}
    r = await s.client.post("/v1/models/m:predict", json={"instances": [[1.5, 2, 3]]})
    assert r.status_code == 422
    assert "INT64" in r.json()["error"]
    f = await serve(model_dir / "fixed.onnx")
    r = await f.client.post("/v1/models/m:predict", json={"instances": [[1, 2, 3]]})
    assert r.json() == {"predictions": [-1.0, -2.0, -3.0]}


@pytest.mark.parametrize(
    ("path", "body", "status", "fragment"),
    [
        ("/v1/models/m:predict", b"{not json", 400, "malformed JSON"),
        ("/v1/models/m:predict", b"[1, 2]", 400, "JSON object"),
        ("/v1/models/m:predict", b"", 400, "empty"),
        ("/v1/models/other:predict", b'{"instances": [[1,2,3,4]]}', 404, "not served"),
        ("/v1/models/m:predict", b'{"instances": [[1,2,3]]}', 422, "shape"),
        ("/v1/models/m:predict", b'{"instances": [["a","b","c","d"]]}', 422, "FP32"),
        ("/v1/models/m:predict", b'{"instances": [[1,2],[1,2,3]]}', 422, "rectangular"),
        ("/v1/models/m:predict", b'{"instances": []}', 422, "instances"),
        ("/v2/models/m/infer", b'{"inputs": [{"name":"z","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}',
         422, "unknown input"),
        ("/v2/models/m/infer", b'{"inputs": [{"name":"x","shape":[1,4],"datatype":"INT32","data":[1,2,3,4]}]}',
         422, "datatype"),
        ("/v2/models/m/infer", b'{"inputs": [{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3]}]}',
         422, "3 values"),
        ("/v2/models/m/infer", b'{"inputs": [{"name":"x","shape":[2,2],"datatype":"FP32","data":[1,2,3,4]}]}',
         422, "shape"),
        ("/v2/models/m/infer", b'{"inputs": [{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],'
         b'"outputs": [{"name": "nope"}]}', 422, "unknown outputs"),
    ],
)  # fmt: skip
async def test_errors_map_to_status(
    serve: ServeFactory, model_dir: Path, path: str, body: bytes, status: int, fragment: str
) -> None:
    s = await serve(model_dir / "affine.onnx")
    r = await s.client.post(path, content=body)
    assert r.status_code == status
    assert fragment in r.json()["error"]


async def test_body_limit_answers_413_before_reading(serve: ServeFactory, model_dir: Path) -> None:
    s = await serve(model_dir / "affine.onnx", max_request_bytes=2048)
    big = b'{"instances": [' + b"[1,2,3,4]," * 400 + b"[1,2,3,4]]}"
    r = await s.client.post("/v1/models/m:predict", content=big)
    assert r.status_code == 413

    # Without a Content-Length (chunked), the limit applies while streaming.
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(big), 512):
            yield big[i : i + 512]

    r = await s.client.post("/v1/models/m:predict", content=chunks())
    assert r.status_code == 413


async def test_health_metadata_and_unknown_model(serve: ServeFactory, model_dir: Path) -> None:
    s = await serve(model_dir / "affine.onnx")
    assert (await s.client.get("/v2/health/live")).json() == {"live": True}
    assert (await s.client.get("/v2/health/ready")).json() == {"ready": True}
    meta = (await s.client.get("/v2/models/m")).json()
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert (await s.client.get("/v2/models/m/ready")).status_code == 200
    assert (await s.client.get("/v2/models/x")).status_code == 404
    assert (await s.client.get("/v2/models/x/ready")).status_code == 404
    assert (await s.client.get("/v2")).json()["extensions"] == ["binary_tensor_data"]
    s.runtime.begin_drain()
    assert (await s.client.get("/v2/health/ready")).status_code == 503
    assert (await s.client.get("/v2/health/live")).status_code == 200


def _gated_app(model_dir: Path, tmp_path: Path) -> tuple[Any, threading.Event]:
    """An app whose model loads only once the returned gate is set (at most 10 s)."""
    from modelapi_runtime import lifecycle
    from modelapi_runtime.app import create_app
    from modelapi_runtime.settings import RuntimeSettings

    gate = threading.Event()

    def gated_loader(settings):  # type: ignore[no-untyped-def]
        gate.wait(10)
        return lifecycle.load(settings)

    app = create_app(
        RuntimeSettings(model_uri=(model_dir / "affine.onnx").as_uri(), name="m", model_dir=str(tmp_path)),
        loader=gated_loader,
    )
    return app, gate


async def test_not_ready_while_loading_then_ready(serve: ServeFactory, model_dir: Path, tmp_path: Path) -> None:
    import httpx

    app, gate = _gated_app(model_dir, tmp_path)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c,
    ):
        assert (await c.get("/v2/health/live")).status_code == 200
        assert (await c.get("/v2/health/ready")).status_code == 503
        r = await c.post("/v1/models/m:predict", json={"instances": [[1, 2, 3, 4]]})
        assert r.status_code == 503
        assert "loading" in r.json()["error"]
        gate.set()
        await asyncio.wait_for(app.state.runtime.settled.wait(), 10)
        assert (await c.get("/v2/health/ready")).status_code == 200


async def test_ready_wait_answers_the_moment_the_model_is_ready(model_dir: Path, tmp_path: Path) -> None:
    """The startup probe's ``?wait=S``: a not-ready answer is held up to S seconds, and a 200 comes as soon as the
    model is ready, not at the end of the wait; bad waits are a 400 naming the range."""
    import time

    import httpx

    app, gate = _gated_app(model_dir, tmp_path)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c,
    ):
        for bad in ("-1", "4.5", "nan", "soon", ""):
            r = await c.get("/v2/health/ready", params={"wait": bad})
            assert r.status_code == 400, bad
            assert "wait must be a number of seconds from 0 to 4" in r.json()["error"]
        t = time.monotonic()
        r = await c.get("/v2/health/ready", params={"wait": "0.3"})
        assert r.status_code == 503
        assert time.monotonic() - t >= 0.3  # held for the whole wait while loading

        async def release_later() -> None:
            await asyncio.sleep(0.5)
            gate.set()

        releasing = asyncio.create_task(release_later())
        t = time.monotonic()
        r = await c.get("/v2/health/ready", params={"wait": "4"})
        held = time.monotonic() - t
        await releasing
        assert r.status_code == 200
        assert r.json() == {"ready": True}
        assert 0.4 < held < 3.5  # answered when the model became ready, well before the wait ran out
        t = time.monotonic()
        assert (await c.get("/v2/health/ready", params={"wait": "4"})).status_code == 200
        assert time.monotonic() - t < 0.5  # ready: no wait at all
        app.state.runtime.begin_drain()
        t = time.monotonic()
        assert (await c.get("/v2/health/ready", params={"wait": "4"})).status_code == 503
        assert time.monotonic() - t < 0.5  # draining: not ready at once, never held


async def test_ready_wait_ends_when_the_start_fails(serve: ServeFactory, tmp_path: Path) -> None:
    s = await serve((tmp_path / "missing.onnx").as_uri())
    assert s.runtime.failure is not None
    import time

    t = time.monotonic()
    assert (await s.client.get("/v2/health/ready", params={"wait": "4"})).status_code == 503
    assert time.monotonic() - t < 1  # a failed start is settled: the wait does not run its course


async def test_load_failure_is_reported_not_served(serve: ServeFactory, tmp_path: Path) -> None:
    s = await serve((tmp_path / "missing.onnx").as_uri())
    assert s.runtime.failure is not None
    assert s.runtime.failure.reason == "ArtifactNotFound"
    r = await s.client.post("/v1/models/m:predict", json={"instances": [[1, 2, 3, 4]]})
    assert r.status_code == 503
    assert (await s.client.get("/v2/health/ready")).status_code == 503


async def test_overload_answers_503_with_retry_after(serve: ServeFactory, model_dir: Path) -> None:
    # The slow model keeps the first request in progress (on the model thread), so the second exceeds max_queue=1.
    s = await serve(model_dir / "slow.onnx", max_queue=1)
    body = {"instances": [[1, 2, 3, 4]]}
    # 32 rows: about a second on the model thread (tens of ms a row on two idle cores), whatever the machine's load
    first = asyncio.create_task(s.client.post("/v1/models/m:predict", json={"instances": [[1, 2, 3, 4]] * 32}))
    await asyncio.sleep(0.05)
    r = await s.client.post("/v1/models/m:predict", json=body)
    assert r.status_code == 503
    assert r.headers["retry-after"] == "1"
    assert (await first).status_code == 200


async def test_metrics_exposed_with_bounded_labels(serve: ServeFactory, model_dir: Path) -> None:
    s = await serve(model_dir / "affine.onnx", revision="rev-1")
    await s.client.post("/v1/models/m:predict", json={"instances": [[1, 2, 3, 4]]})
    await s.client.post("/v1/models/m:predict", content=b"{")
    text = await s.metrics()
    assert 'modelapi_requests_total{class="success",code="200",model="m",revision="rev-1"} 1.0' in text
    assert 'modelapi_requests_total{class="client_error",code="400",model="m",revision="rev-1"} 1.0' in text
    assert 'modelapi_inflight_requests{model="m",revision="rev-1"} 0.0' in text
    for name in (
        "modelapi_request_duration_seconds_bucket",
        'modelapi_request_phase_seconds_count{model="m",phase="decode",revision="rev-1"}',
        'phase="queue"',
        'phase="infer"',
        'phase="encode"',
        "modelapi_batch_size_bucket",
        "modelapi_model_load_seconds{",
        "modelapi_cold_start_download_seconds{",
        "modelapi_cold_start_load_seconds{",
        "modelapi_cold_start_warmup_seconds{",
        "modelapi_cold_start_process_seconds{",
        'modelapi_model_ready{model="m",revision="rev-1"} 1.0',
        'modelapi_model_info{device="cpu"',
    ):
        assert name in text, name
    size = (model_dir / "affine.onnx").stat().st_size
    assert f'modelapi_artifact_bytes{{model="m",revision="rev-1"}} {float(size)}' in text, "the operator sizes from it"


async def test_no_log_line_per_request(serve: ServeFactory, model_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    s = await serve(model_dir / "affine.onnx")
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        for _ in range(5):
            await s.client.post("/v1/models/m:predict", json={"instances": [[1, 2, 3, 4]]})
    assert [r for r in caplog.records if r.name.startswith(("modelapi", "uvicorn"))] == []


def _binary_v2(x: np.ndarray) -> tuple[bytes, dict[str, str]]:
    header = orjson.dumps(
        {
            "inputs": [
                {"name": "x", "shape": list(x.shape), "datatype": "FP32", "parameters": {"binary_data_size": x.nbytes}}
            ]
        }
    )
    return header + x.tobytes(), {"Inference-Header-Content-Length": str(len(header))}


async def test_binary_framing_errors_are_400(serve: ServeFactory, model_dir: Path) -> None:
    s = await serve(model_dir / "affine.onnx")
    body, headers = _binary_v2(np.zeros((1, 4), dtype=np.float32))
    r = await s.client.post("/v2/models/m/infer", content=body + b"extra", headers=headers)
    assert r.status_code == 400
    r = await s.client.post("/v2/models/m/infer", content=body[:-4], headers=headers)
    assert r.status_code == 400
    r = await s.client.post("/v2/models/m/infer", content=body, headers={"Inference-Header-Content-Length": "x"})
    assert r.status_code == 400
    assert struct.calcsize("<f") == 4


async def test_the_process_age_at_ready_is_exported(serve: ServeFactory, model_dir: Path) -> None:
    """modelapi_cold_start_process_seconds: this process's age when the model turned ready (here the test process's),
    the pod's own part of a start in the cold-start benchmark."""
    import re

    from modelapi_runtime.metrics import process_age_seconds

    before = process_age_seconds()
    s = await serve(model_dir / "affine.onnx")
    after = process_age_seconds()
    found = re.search(r"^modelapi_cold_start_process_seconds\{[^}]*\} ([0-9.e+-]+)$", await s.metrics(), re.M)
    assert found, "no modelapi_cold_start_process_seconds"
    assert before is not None
    assert after is not None
    assert before <= float(found.group(1)) <= after


def test_a_pull_started_early_is_the_one_the_loader_uses(model_dir: Path, tmp_path: Path) -> None:
    """`serve` starts the pull before the server's imports and hands it to the loader: its artifacts and duration are
    the start's, and its failure is the start's failure, with its reason."""
    from modelapi_runtime.exceptions import ArtifactNotFound
    from modelapi_runtime.lifecycle import load
    from modelapi_runtime.pull import start_pull
    from modelapi_runtime.settings import RuntimeSettings

    settings = RuntimeSettings(model_uri=(model_dir / "affine.onnx").as_uri(), model_dir=str(tmp_path))
    pulling = start_pull(settings)
    loaded = load(settings, pulling)
    assert loaded.cold_start.download_s == pulling.result().seconds
    assert loaded.cold_start.artifact_bytes == (model_dir / "affine.onnx").stat().st_size
    assert loaded.model.run({"x": np.ones((1, 4), np.float32)})["y"].tolist() == [[3.0, 3.0, 3.0, 3.0]]

    gone = RuntimeSettings(model_uri=(tmp_path / "gone.onnx").as_uri(), model_dir=str(tmp_path))
    with pytest.raises(ArtifactNotFound, match=r"gone\.onnx"):
        load(gone, start_pull(gone))


def test_process_age_reads_the_start_time_after_any_command_name(tmp_path: Path) -> None:
    import os
    import time

    from modelapi_runtime.metrics import process_age_seconds

    ticks = os.sysconf("SC_CLK_TCK")
    started = int((time.clock_gettime(time.CLOCK_BOOTTIME) - 12.5) * ticks)
    fields = ["S", *["0"] * 18, str(started), *["0"] * 30]  # starttime is the 22nd field, the 20th after the name
    stat = tmp_path / "stat"
    stat.write_text(f"4242 (a) b (c)) {' '.join(fields)}\n")
    assert process_age_seconds(stat) == pytest.approx(12.5, abs=0.5)
    assert process_age_seconds(tmp_path / "absent") is None
    stat.write_text("4242 (truncated")
    assert process_age_seconds(stat) is None


async def test_routing_errors_answer_as_fastapi_did(serve: ServeFactory, model_dir: Path) -> None:
    """The routes are Starlette's now, their refusals unchanged: JSON ``detail`` for a 404 and a 405 (with
    ``allow``), a 405 for ``HEAD`` on a ``GET`` route, no redirect for a trailing slash."""
    s = await serve(model_dir / "affine.onnx")
    for path in ("/nope", "/docs", "/v2/health/live/", "/v2/models/m/infer/x"):
        r = await s.client.get(path)
        assert (r.status_code, r.json()) == (404, {"detail": "Not Found"})
        assert r.headers["content-type"] == "application/json"
    for method, path in (("POST", "/v2/health/live"), ("DELETE", "/v2/models/m"), ("PUT", "/v1/models/m:predict")):
        r = await s.client.request(method, path)
        assert (r.status_code, r.json(), r.headers["allow"]) == (405, {"detail": "Method Not Allowed"}, "GET")
    r = await s.client.head("/v2/health/ready")
    assert (r.status_code, r.headers["allow"]) == (405, "GET")


async def test_the_openapi_document_describes_every_route(serve: ServeFactory, model_dir: Path) -> None:
    """/openapi.json is built by FastAPI on its first request (a start does not import FastAPI): it names exactly the
    paths the app routes, each a GET."""
    from modelapi_runtime import __version__
    from modelapi_runtime.routes import GetRoute, build_routes

    s = await serve(model_dir / "affine.onnx")
    r = await s.client.get("/openapi.json")
    assert r.status_code == 200
    document = r.json()
    assert document["info"] == {"title": "modelapi runtime", "version": __version__}
    routed = {route.path for route in build_routes(s.runtime)}
    assert all(isinstance(route, GetRoute) for route in build_routes(s.runtime))
    assert set(document["paths"]) == routed
    assert {method for ops in document["paths"].values() for method in ops} == {"get"}
    assert document["paths"]["/v2/health/live"]["get"]["operationId"] == "live_v2_health_live_get"
    assert (await s.client.get("/openapi.json")).content == r.content  # built once, the same answer
