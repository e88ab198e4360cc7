"""The serving fast paths keep the behaviour of the slower code they replace."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from modelapi_runtime import codec
from modelapi_runtime.exceptions import InferenceFailed, InvalidInput, RequestError
from modelapi_runtime.metrics import LATENCY_BUCKETS, Metrics
from modelapi_runtime.model import Model
from modelapi_runtime.tensors import Array, TensorSpec


def test_direct_session_run_matches_the_public_api(model_dir: Path) -> None:
    m = Model(model_dir / "mlp.onnx", threads=1, device="cpu")
    assert m._run_direct is not None
    x = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    direct = m.run({"x": x})
    m._run_direct = None  # the public InferenceSession.run()
    public = m.run({"x": x})
    np.testing.assert_array_equal(direct["y"], public["y"])


def test_direct_session_run_errors_are_inference_failed(model_dir: Path) -> None:
    m = Model(model_dir / "affine.onnx", threads=1, device="cpu")
    for feeds in ({}, {"x": np.zeros((1, 4), np.float64)}, {"nope": np.zeros((1, 4), np.float32)}):
        with pytest.raises(InferenceFailed):
            m.run(feeds)


def test_integer_inputs_out_of_range_are_refused_not_wrapped() -> None:
    spec = TensorSpec("x", "INT32", (None, 2))
    assert codec.to_array([[1, -(2**31)]], spec, "x").dtype == np.int32
    with pytest.raises(InvalidInput, match="do not fit INT32"):
        codec.to_array([[1, 2**40]], spec, "x")
    with pytest.raises(InvalidInput, match="do not fit UINT8"):
        codec.to_array([[-1, 3]], TensorSpec("x", "UINT8", (None, 2)), "x")


def test_float_conversions() -> None:
    f32 = TensorSpec("x", "FP32", (None, 2))
    with pytest.raises(InvalidInput, match="do not fit FP32"):
        codec.to_array([[1e300, 0.0]], f32, "x")
    assert codec.to_array([[True, 2]], f32, "x").dtype == np.float32
    with pytest.raises(InvalidInput, match="strings"):
        codec.to_array([["1.5", "2"]], f32, "x")
    f64 = TensorSpec("x", "FP64", (None, 2))
    raw = codec.to_array([[1.5, 2.5]], f64, "x")
    assert raw.dtype == np.float64
    assert raw.tolist() == [[1.5, 2.5]]


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_non_finite_outputs_are_json_null(dtype: type) -> None:
    y: Array = np.array([[1.0, np.nan, np.inf, -np.inf]], dtype=dtype)
    assert orjson.loads(codec.encode_v1({"y": y}, ["y"])) == {"predictions": [[1.0, None, None, None]]}
    body, header_len = codec.encode_v2({"y": y}, ["y"], model_name="m", model_version="", request_id=None, binary=set())
    assert header_len is None
    assert orjson.loads(body)["outputs"][0]["data"] == [1.0, None, None, None]
    # A non-contiguous output (a column of a batch) is serialized too.
    wide: Array = np.arange(6, dtype=dtype).reshape(3, 2)[:, :1]
    assert orjson.loads(codec.encode_v1({"y": wide}, ["y"])) == {"predictions": [[0.0], [2.0], [4.0]]}


def _lines(text: bytes, prefix: str) -> list[str]:
    return [ln for ln in text.decode().splitlines() if ln.startswith(prefix) and "_created" not in ln]


def test_loop_histograms_expose_what_prometheus_client_would() -> None:
    values = [0.0, 0.0005, 0.0007, 0.001, 0.003, 0.2, 7.0, 99.0]
    metrics = Metrics("m", "r1", max_batch_size=16)
    reference = CollectorRegistry()
    ref = Histogram(
        "modelapi_request_duration_seconds", "Inference request latency.", ["model", "revision"],
        buckets=LATENCY_BUCKETS, registry=reference,
    ).labels("m", "r1")  # fmt: skip
    for v in values:
        metrics.request_seconds.observe(v)
        ref.observe(v)
    ours = metrics.render()
    assert _lines(ours, "modelapi_request_duration_seconds") == _lines(
        generate_latest(reference), "modelapi_request_duration_seconds"
    )
    assert b"# TYPE modelapi_request_duration_seconds histogram" in ours
    assert b'modelapi_request_duration_seconds_created{model="m",revision="r1"}' in ours


def test_loop_counters_and_gauge() -> None:
    metrics = Metrics("m", "")
    for code in (200, 200, 422, 503):
        metrics.count(code)
    metrics.inflight.inc()
    metrics.inflight.inc()
    metrics.inflight.dec()
    metrics.batch_size.observe(3)
    text = metrics.render().decode()
    assert 'modelapi_requests_total{class="success",code="200",model="m",revision=""} 2.0' in text
    assert 'modelapi_requests_total{class="overload",code="503",model="m",revision=""} 1.0' in text
    assert "# TYPE modelapi_requests_total counter" in text
    assert 'modelapi_inflight_requests{model="m",revision=""} 1.0' in text
    assert 'modelapi_batch_size_bucket{le="+Inf",model="m",revision=""} 1.0' in text
    assert 'modelapi_batch_size_sum{model="m",revision=""} 3.0' in text


async def test_server_app_freezes_the_loaded_heap(model_dir: Path, tmp_path: Path) -> None:
    import asyncio
    import gc

    from modelapi_runtime.app import create_app
    from modelapi_runtime.settings import RuntimeSettings

    settings = RuntimeSettings(model_uri=(model_dir / "affine.onnx").as_uri(), name="m", model_dir=str(tmp_path))
    app = create_app(settings, freeze_gc=True)
    try:
        async with app.router.lifespan_context(app):
            await asyncio.wait_for(app.state.runtime.ready_event.wait(), 10)
            assert gc.get_freeze_count() > 1000
    finally:
        gc.unfreeze()


TWO_INPUTS = (TensorSpec("a", "FP32", (None, 2)), TensorSpec("b", "INT64", (None,)))


def _binary_request(a: np.ndarray, b: np.ndarray, **extra: object) -> tuple[bytes, memoryview]:
    head = orjson.dumps({
        "inputs": [
            {"name": "a", "datatype": "FP32", "shape": list(a.shape), "parameters": {"binary_data_size": a.nbytes}},
            {"name": "b", "datatype": "INT64", "shape": list(b.shape), "parameters": {"binary_data_size": b.nbytes}},
        ],
        "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
        **extra,
    })  # fmt: skip
    return head, memoryview(a.tobytes() + b.tobytes())


def test_a_remembered_binary_header_decodes_each_request_s_own_data_as_the_full_decode_does() -> None:
    headers = codec.BinaryHeaders(TWO_INPUTS, max_elements=1000, max_values=None)
    rng = np.random.default_rng(0)
    for i in range(3):  # the same header bytes, new tensor values each time
        a, b = rng.standard_normal((3, 2)).astype(np.float32), rng.integers(0, 9, 3)
        head, binary = _binary_request(a, b, id="same")
        got = headers.decode(head, binary)
        want = codec.decode_v2(orjson.loads(head), binary, TWO_INPUTS)
        assert len(headers._known) == 1
        for name, value in want.inputs.items():
            assert got.inputs[name].dtype == value.dtype
            np.testing.assert_array_equal(got.inputs[name], value)
        np.testing.assert_array_equal(got.inputs["a"], a)
        np.testing.assert_array_equal(got.inputs["b"], b)
        assert (got.rows, got.request_id, got.outputs, got.binary) == (3, "same", ["y"], {"y"}), i


def test_a_remembered_binary_header_with_a_binary_part_of_another_length_is_refused_as_before() -> None:
    headers = codec.BinaryHeaders(TWO_INPUTS, max_elements=1000, max_values=None)
    head, binary = _binary_request(np.zeros((2, 2), np.float32), np.zeros(2, np.int64))
    headers.decode(head, binary)
    for cut in (binary[:-8], memoryview(binary.tobytes() + b"\0" * 8)):
        with pytest.raises(RequestError) as remembered:
            headers.decode(head, cut)
        with pytest.raises(RequestError) as full:
            codec.decode_v2(orjson.loads(head), cut, TWO_INPUTS)
        assert (type(remembered.value), str(remembered.value)) == (type(full.value), str(full.value))


def test_binary_headers_keep_only_valid_all_binary_headers_and_a_bounded_number() -> None:
    headers = codec.BinaryHeaders(TWO_INPUTS, max_elements=1000, max_values=None)
    a, b = np.zeros((1, 2), np.float32), np.zeros(1, np.int64)
    head, binary = _binary_request(a, b, parameters={"bad": True})
    bad_head = head.replace(b'"FP32"', b'"FP16"')
    with pytest.raises(InvalidInput):
        headers.decode(bad_head, binary)
    json_data = orjson.dumps({"inputs": [
        {"name": "a", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]},
        {"name": "b", "datatype": "INT64", "shape": [1], "parameters": {"binary_data_size": 8}},
    ]})  # fmt: skip
    headers.decode(json_data, memoryview(b.tobytes()))
    assert headers._known == {}  # neither a refused header nor one with JSON data
    for i in range(codec.BinaryHeaders.MAX_ENTRIES * 2 + 5):
        headers.decode(*_binary_request(a, b, id=str(i)))
        assert 1 <= len(headers._known) <= codec.BinaryHeaders.MAX_ENTRIES
