"""The data scientist's handler hook and dynamic batching, through the real app."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
from conftest import ServeFactory

from modelapi_runtime.batching import Batcher, ModelRunner
from modelapi_runtime.exceptions import InferenceFailed

HANDLER = """
import numpy as np

def preprocess(payload):
    if payload.get("boom"):
        raise RuntimeError("preprocess exploded")
    if "inputs" in payload and isinstance(payload["inputs"], list):  # v2: decoded tensors
        return {"x": np.asarray(payload["inputs"][0]["data"], dtype=np.float32).reshape(-1, 4)}
    return {"x": np.asarray([[r["a"], r["b"], r["c"], r["d"]] for r in payload["rows"]], dtype=np.float32)}

def postprocess(outputs, payload):
    if payload.get("boom_post"):
        raise ValueError("postprocess exploded")
    return {"scores": outputs["y"], "n": len(outputs["y"])}
"""


@pytest.fixture
def handler_file(tmp_path: Path) -> Path:
    p = tmp_path / "handler.py"
    p.write_text(HANDLER)
    return p


async def test_handler_pre_and_postprocess(serve: ServeFactory, model_dir: Path, handler_file: Path) -> None:
    s = await serve(model_dir / "affine.onnx", handler=handler_file.as_uri())
    r = await s.client.post("/v1/models/m:predict", json={"rows": [{"a": 1, "b": 2, "c": 3, "d": 4}]})
    assert r.status_code == 200, r.text
    assert r.json() == {"scores": [[3.0, 5.0, 7.0, 9.0]], "n": 1}
    r = await s.client.post(
        "/v2/models/m/infer",
        json={"inputs": [{"name": "raw", "shape": [4], "datatype": "FP32", "data": [0, 0, 0, 1]}]},
    )
    assert r.status_code == 200, r.text
    assert r.json()["scores"] == [[1.0, 1.0, 1.0, 3.0]]


async def test_raising_handler_gives_500_logs_traceback_and_keeps_serving(
    serve: ServeFactory, model_dir: Path, handler_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = await serve(model_dir / "affine.onnx", handler=handler_file.as_uri())
    with caplog.at_level(logging.ERROR):
        r = await s.client.post("/v1/models/m:predict", json={"boom": True})
    assert r.status_code == 500
    # the client gets a request id and a generic message; the handler's text stays in the log, under that id
    request_id = r.json()["request_id"]
    assert r.headers["x-request-id"] == request_id
    assert "exploded" not in r.text
    assert any(
        rec.exc_info and "preprocess exploded" in str(rec.exc_info[1]) and request_id in rec.getMessage()
        for rec in caplog.records
    )
    r = await s.client.post("/v1/models/m:predict", json={"rows": [{"a": 0, "b": 0, "c": 0, "d": 0}], "boom_post": 1})
    assert r.status_code == 500
    assert "exploded" not in r.text
    assert "handler failed" in r.json()["error"]
    r = await s.client.post("/v1/models/m:predict", json={"rows": [{"a": 0, "b": 0, "c": 0, "d": 0}]})
    assert r.status_code == 200
    assert 'code="500"' in await s.metrics()


async def test_handler_that_does_not_import_fails_the_start(
    serve: ServeFactory, model_dir: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import does_not_exist_anywhere\n")
    s = await serve(model_dir / "affine.onnx", handler=bad.as_uri())
    assert s.runtime.failure is not None
    assert s.runtime.failure.reason == "ModelLoadFailed"
    assert "does_not_exist_anywhere" in s.runtime.failure.message


async def test_handler_must_be_python_source(serve: ServeFactory, model_dir: Path, tmp_path: Path) -> None:
    pkl = tmp_path / "handler.pkl"
    pkl.write_bytes(b"\x80\x04.")
    s = await serve(model_dir / "affine.onnx", handler=pkl.as_uri())
    assert s.runtime.failure is not None
    assert ".py" in s.runtime.failure.message


async def test_batching_merges_concurrent_requests_and_splits_results(serve: ServeFactory, model_dir: Path) -> None:
    s = await serve(model_dir / "mlp.onnx", max_batch_size=32, max_latency_ms=50)
    assert s.runtime.service is not None
    assert s.runtime.service.batching
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((int(rng.integers(1, 4)), 16)).astype(np.float32) for _ in range(24)]
    alone = await serve(model_dir / "mlp.onnx")  # same model, batching off: the reference answers
    expected = [
        np.asarray(
            (await alone.client.post("/v1/models/m:predict", json={"instances": x.tolist()})).json()["predictions"]
        )
        for x in xs
    ]
    responses = await asyncio.gather(
        *(s.client.post("/v1/models/m:predict", json={"instances": x.tolist()}) for x in xs)
    )
    for x, r, want in zip(xs, responses, expected, strict=True):
        assert r.status_code == 200
        got = np.asarray(r.json()["predictions"])
        assert got.shape == (len(x), 4)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    text = await s.metrics()
    # At least one model run carried more than one request's rows.
    line = next(ln for ln in text.splitlines() if ln.startswith("modelapi_batch_size_bucket") and 'le="4.0"' in ln)
    count = next(ln for ln in text.splitlines() if ln.startswith("modelapi_batch_size_count"))
    assert float(line.rsplit(" ", 1)[1]) < float(count.rsplit(" ", 1)[1]) + 0  # some batches > 4 rows
    assert float(count.rsplit(" ", 1)[1]) < 24  # fewer runs than requests


async def test_bad_request_in_a_batch_does_not_fail_its_batch_mates(serve: ServeFactory, model_dir: Path) -> None:
    s = await serve(model_dir / "affine.onnx", max_batch_size=16, max_latency_ms=30)
    good = {"instances": [[1, 2, 3, 4]]}
    bad = {"instances": [[1, 2, 3]]}
    results = await asyncio.gather(
        *(s.client.post("/v1/models/m:predict", json=b) for b in [good, bad, good, bad, good])
    )
    assert [r.status_code for r in results] == [200, 422, 200, 422, 200]


async def test_batcher_isolates_a_request_that_fails_at_run_time() -> None:
    """A request that passes validation but makes the merged run fail: only it gets the error."""
    calls: list[int] = []

    def run(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = inputs["x"]
        calls.append(len(x))
        if (x < 0).any():
            raise InferenceFailed("negative input")
        return {"y": x * 2}

    batcher = Batcher(ModelRunner(run, None, lambda n: None), max_batch_size=8, max_latency_s=0.05)
    batcher.start()
    try:
        xs = [np.full((1, 2), v, dtype=np.float32) for v in (1, -1, 3)]
        results = await asyncio.gather(*(batcher.submit({"x": x}, 1) for x in xs), return_exceptions=True)
    finally:
        await batcher.stop()
    assert isinstance(results[1], InferenceFailed)
    ok0, ok2 = results[0], results[2]
    assert not isinstance(ok0, BaseException)
    assert not isinstance(ok2, BaseException)
    np.testing.assert_array_equal(ok0[0]["y"], [[2, 2]])
    np.testing.assert_array_equal(ok2[0]["y"], [[6, 6]])
    assert calls[0] == 3  # merged first, then each alone
    assert sorted(calls[1:]) == [1, 1, 1]


async def test_batcher_respects_max_batch_size_and_mixed_shapes() -> None:
    sizes: list[int] = []

    def run(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        sizes.append(len(inputs["x"]))
        return {"y": inputs["x"].sum(axis=1, keepdims=True)}

    batcher = Batcher(ModelRunner(run, None, lambda n: None), max_batch_size=4, max_latency_s=0.05)
    batcher.start()
    try:
        xs = [np.ones((2, 3), np.float32), np.ones((2, 3), np.float32), np.ones((1, 3), np.float32),
              np.ones((1, 5), np.float32)]  # fmt: skip
        results = await asyncio.gather(*(batcher.submit({"x": x}, len(x)) for x in xs))
    finally:
        await batcher.stop()
    assert max(sizes) <= 4
    for x, (out, _) in zip(xs, results, strict=True):
        np.testing.assert_array_equal(out["y"], x.sum(axis=1, keepdims=True))
