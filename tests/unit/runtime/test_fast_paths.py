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
            await asyncio.wait_for(app.state.runtime.settled.wait(), 10)
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
        assert len(headers._known) == (1 if i else 0)  # kept from its second time
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
    json_data = orjson.dumps({"inputs": [
        {"name": "a", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]},
        {"name": "b", "datatype": "INT64", "shape": [1], "parameters": {"binary_data_size": 8}},
    ]})  # fmt: skip
    for _ in range(3):
        with pytest.raises(InvalidInput):
            headers.decode(bad_head, binary)
        headers.decode(json_data, memoryview(b.tobytes()))
    assert headers._known == {}  # neither a refused header nor one with JSON data
    for i in range(codec.BinaryHeaders.MAX_ENTRIES * 2 + 5):
        for _ in range(2):
            headers.decode(*_binary_request(a, b, id=str(i)))
        assert 1 <= len(headers._known) <= codec.BinaryHeaders.MAX_ENTRIES
        assert len(headers._seen) <= codec.BinaryHeaders.MAX_ENTRIES


def test_headers_sent_once_keep_no_decoded_request() -> None:
    """A client with a new id in every header: nothing decoded is kept (only a bounded set of header bytes)."""
    headers = codec.BinaryHeaders(TWO_INPUTS, max_elements=1000, max_values=None)
    a, b = np.zeros((1, 2), np.float32), np.zeros(1, np.int64)
    for i in range(codec.BinaryHeaders.MAX_ENTRIES * 3):
        got = headers.decode(*_binary_request(a, b, id=str(i)))
        assert got.request_id == str(i)
        assert headers._known == {}
        assert 1 <= len(headers._seen) <= codec.BinaryHeaders.MAX_ENTRIES


# JSON values (as orjson decodes them) that each dtype may or may not accept: numbers, bools, integers at and past
# every range's ends, floats where integers belong, strings, null, objects, ragged and over-deep nests, empty lists.
_JSON_VALUES: list[object] = [
    [[0.5, -1.25, 3.0]],
    [[1, 2, 3], [4, 5, 6]],
    [[True, False, 2]],
    [[[1.5, 2.5], [3.5, 4.5]], [[5.0, 6.0], [7.0, 8.0]]],
    [[0.1 * i for i in range(40)] for _ in range(3)],
    list(range(-3, 20)),
    [[1.0, "2", 3.0]],
    [[1.0, None, 3.0]],
    [[1.0, {"a": 1}, 3.0]],
    [[1.0, [2.0], 3.0]],
    [[1.0, 2.0], [3.0]],
    [[1.0, 2.0], 3.0],
    [[[1.0, 2.0]], [3.0, 4.0]],
    [[], []],
    [[1.0], []],
    [[1e39, 0.0]],
    [[-3.4e38, 3.4e38]],
    [[70000.0, 1.0]],
    [[1.5, 2]],
    [[127, -128, 255, 256]],
    [[-1, 0, 1]],
    [[32767, -32768, 65535, 65536]],
    [[2**31 - 1, -(2**31), 2**32 - 1, 2**32]],
    [[2**63 - 1, -(2**63)]],
    [[2**63, 2**64 - 1]],
    [[2**63, -1]],
    ["a", "b"],
    [None],
]


@pytest.mark.parametrize("datatype", ["FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16",
                                      "UINT32", "UINT64", "BOOL", "BYTES"])  # fmt: skip
def test_packing_json_numbers_decides_as_to_array_does(datatype: str) -> None:
    """json_array's struct fast path accepts exactly what to_array accepts, with the same values, and leaves every
    refusal (and its wording) to to_array. Each value is tried as it is (too few numbers to pack) and repeated
    along its first axis (enough)."""
    for small in _JSON_VALUES:
        assert isinstance(small, list)
        # as the request decoder hands it over
        for value in (orjson.loads(orjson.dumps(small)), orjson.loads(orjson.dumps(small * 40))):
            _assert_same_decision(value, datatype)


def _assert_same_decision(value: object, datatype: str) -> None:
    spec = TensorSpec("x", datatype, (None,) * 3)
    try:
        want: np.ndarray | str = codec.to_array(value, spec, "x")
    except InvalidInput as exc:
        want = str(exc)
    try:
        got: np.ndarray | str = codec.json_array(value, spec, "x")
    except InvalidInput as exc:
        got = str(exc)
    if isinstance(want, str):
        assert got == want, value
    else:
        assert isinstance(got, np.ndarray), value
        assert (got.dtype, got.shape) == (want.dtype, want.shape), value
        np.testing.assert_array_equal(got, want, err_msg=str(value))


def test_rectangular_json_numbers_take_the_packed_path() -> None:
    rows = np.random.default_rng(0).standard_normal((4, 784)).astype(np.float32)
    got = codec.packed(orjson.loads(orjson.dumps(rows.tolist())), np.dtype(np.float32))
    assert got is not None
    np.testing.assert_array_equal(got, rows)
    narrow = np.arange(64).reshape(8, 4, 2).tolist()
    for value, dtype in ((narrow, np.int64), (list(range(64)), np.uint8)):
        got = codec.packed(value, np.dtype(dtype))
        assert got is not None
        assert got.tolist() == value
    assert codec.packed([1.0] * 64, np.dtype(np.bool_)) is None
    assert codec.packed([[1.0, 2.0]] * 32 + [[3.0]], np.dtype(np.float32)) is None


async def test_the_starts_garbage_is_freed_not_frozen(model_dir: Path, tmp_path: Path) -> None:
    """Only the younger generations are collected before the freeze (a full collection cost a start 20-30 ms of CPU):
    garbage the load left, a reference cycle here, is still freed, not frozen for the process's life."""
    import asyncio
    import gc
    import weakref

    from modelapi_runtime.app import create_app
    from modelapi_runtime.lifecycle import Loaded, load
    from modelapi_runtime.settings import RuntimeSettings

    class Node:
        other: object

    left: list[weakref.ref[Node]] = []

    def loader(settings: RuntimeSettings) -> Loaded:
        loaded = load(settings)
        cycle = Node()
        cycle.other = cycle
        left.append(weakref.ref(cycle))
        return loaded

    settings = RuntimeSettings(model_uri=(model_dir / "affine.onnx").as_uri(), name="m", model_dir=str(tmp_path))
    gc.disable()  # no automatic collection in between: the one before the freeze must free it
    app = create_app(settings, loader=loader, freeze_gc=True)
    try:
        async with app.router.lifespan_context(app):
            await asyncio.wait_for(app.state.runtime.settled.wait(), 10)
            assert len(left) == 1
            assert left[0]() is None
    finally:
        gc.enable()
        gc.unfreeze()
