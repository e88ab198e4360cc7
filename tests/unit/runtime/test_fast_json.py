"""The v1 decoder for bodies of numbers (fast_json) answers exactly as orjson + codec.decode_v1 do, or declines."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelapi_runtime import codec
from modelapi_runtime.exceptions import RequestError
from modelapi_runtime.fast_json import NumericV1Decoder
from modelapi_runtime.service import OFFLOAD_ABOVE_BYTES
from modelapi_runtime.tensors import TensorSpec

MAX_VALUES = 1024 * 1024
ROW = [0.25 * (i % 7) - 0.5 for i in range(784)]
BIG_ROW = np.random.default_rng(0).standard_normal(784).astype(np.float32).tolist()


def _body(instances: Any, key: str = "instances") -> bytes:
    return json.dumps({key: instances}).encode()


def _row(*values: str) -> str:
    """A JSON row of 64 numbers whose first ones are ``values`` (JSON text, as sent)."""
    return "[" + ",".join([*values, *["1.5"] * (64 - len(values))]) + "]"


SPECS = {
    "FP32 batched": TensorSpec("x", "FP32", (None, 784)),
    "FP64 batched": TensorSpec("x", "FP64", (None, 784)),
    "FP32 any shape": TensorSpec("x", "FP32", (None, None, None)),
    "FP32 one instance": TensorSpec("x", "FP32", (784,)),
    "FP32 64 wide": TensorSpec("x", "FP32", (None, 64)),
}

# Bodies sent as they are: the common shape, and every edge of it the decoder must decline or answer as before.
BODIES: dict[str, bytes] = {
    "one row": _body([ROW]),
    "one row of random floats": _body([BIG_ROW]),
    "inputs key": _body([ROW], key="inputs"),
    "sixteen rows": _body([ROW] * 16),
    "flat list": _body(ROW),
    "three levels": _body([[ROW[:64]] * 2] * 3),
    "integers": _body([[i - 400 for i in range(784)]]),
    "integers beyond int64": ('{"instances": [' + _row("18446744073709551615", "-1") + "]}").encode(),
    "integers beyond 64 bits": ('{"instances": [' + _row("18446744073709551616") + "]}").encode(),
    "integers below int64": ('{"instances": [' + _row("-9223372036854775809") + "]}").encode(),
    "float32 overflow": ('{"instances": [' + _row("1e39") + "]}").encode(),
    "float32 overflow, negative": ('{"instances": [' + _row("-3.5e38") + "]}").encode(),
    "float32 max": ('{"instances": [' + _row("3.4028234663852886e38") + "]}").encode(),
    "float32 rounds to max": ('{"instances": [' + _row("3.4028235677973362e38") + "]}").encode(),
    "float32 rounds to infinity": ('{"instances": [' + _row("-3.4028235677973366e38") + "]}").encode(),
    "double overflow": ('{"instances": [' + _row("1e400") + "]}").encode(),
    "underflow": ('{"instances": [' + _row("1e-400", "-1e-50") + "]}").encode(),
    "NaN token": ('{"instances": [' + _row("NaN") + "]}").encode(),
    "Infinity token": ('{"instances": [' + _row("Infinity") + "]}").encode(),
    "-Infinity token": ('{"instances": [' + _row("-Infinity") + "]}").encode(),
    "leading zero": ('{"instances": [' + _row("01") + "]}").encode(),
    "bool": ('{"instances": [' + _row("true") + "]}").encode(),
    "null": ('{"instances": [' + _row("null") + "]}").encode(),
    "string": ('{"instances": [' + _row('"1.5"') + "]}").encode(),
    "string with a bracket": ('{"instances": [' + _row('"["') + "]}").encode(),
    "object": ('{"instances": [' + _row('{"a": 1}') + "]}").encode(),
    "list first among the numbers": ('{"instances": [' + _row("[2]") + "," + _row("3") + "]}").encode(),
    "list among the numbers": ('{"instances": [' + _row("1", "[2]") + "," + _row("3") + "]}").encode(),
    "empty list among the numbers": ('{"instances": [' + _row("1", "[]", "2") + "," + _row("3") + "]}").encode(),
    "ragged rows": _body([ROW, ROW[:-1]]),
    "ragged rows, same count": _body([ROW[:100], ROW[:50], ROW[:150]]),
    "a number among the rows": _body([ROW, 1.0, ROW]),
    "empty instances": _body([]),
    "empty rows": _body([[], []]),
    "empty row after a full one": _body([ROW, []]),
    "instances null": b'{"instances": null}',
    "instances a number": b'{"instances": 3}',
    "instances an object": b'{"instances": {"x": [1, 2]}}',
    "too few numbers": _body([ROW[:63]]),
    "depth bomb": b'{"instances": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    "deep but parseable": b'{"instances": ' + b"[" * 40 + b",".join([b"1"] * 64) + b"]" * 40 + b"}",
    "byte order mark": b"\xef\xbb\xbf" + _body([ROW]),
    "invalid UTF-8 in a key": b'{"inst\xff": [' + _row("1").encode() + b"]}",
    "invalid UTF-8 outside strings": b'{"instances": [' + _row("1").encode() + b"]\xff}",
    "lone surrogate": b'{"instances": [' + _row("1").encode() + b'], "id": "\\ud800"}',
    "duplicate key": b'{"instances": [' + _row("1").encode() + b'], "instances": [' + _row("2").encode() + b"]}",
    "both keys": b'{"inputs": [' + _row("1").encode() + b'], "instances": [' + _row("2").encode() + b"]}",
    "another key": b'{"instances": [' + _row("1").encode() + b'], "parameters": {"x": 1}}',
    "trailing comma": ('{"instances": [' + _row("1") + ",]}").encode(),
    "trailing content": _body([ROW]) + b" x",
    "NUL after the document": _body([ROW]) + b"\x00",
    "top level a list": json.dumps([ROW]).encode(),
    "empty body": b"",
    "whitespace": b" \t\r\n" + _body([ROW]) + b"\n",
}


def _slow(body: bytes, spec: TensorSpec, max_values: int | None) -> codec.Decoded | RequestError:
    try:
        return codec.decode_v1(codec.parse_json(body, max_values), [spec])
    except RequestError as exc:
        return exc


def _fast(decoder: NumericV1Decoder, body: bytes) -> codec.Decoded | RequestError | None:
    try:
        return decoder.decode(body)
    except RequestError as exc:
        return exc


def _assert_same(fast: codec.Decoded | RequestError | None, slow: codec.Decoded | RequestError, what: str) -> None:
    if fast is None:
        return  # declined: the slow path answers, as before
    if isinstance(slow, RequestError):
        assert isinstance(fast, RequestError), f"{what}: accepted what the slow path refuses ({slow})"
        assert (type(fast), fast.status, str(fast)) == (type(slow), slow.status, str(slow)), what
        return
    assert isinstance(fast, codec.Decoded), f"{what}: refused ({fast}) what the slow path accepts"
    assert fast.rows == slow.rows, what
    assert fast.inputs.keys() == slow.inputs.keys(), what
    for name, want in slow.inputs.items():
        got = fast.inputs[name]
        assert (got.dtype, got.shape) == (want.dtype, want.shape), what
        np.testing.assert_array_equal(got, want, err_msg=what)


@pytest.mark.parametrize("spec_name", list(SPECS))
def test_every_body_is_answered_as_orjson_and_decode_v1_answer_it_or_declined(spec_name: str) -> None:
    spec = SPECS[spec_name]
    decoder = NumericV1Decoder(spec, max_bytes=OFFLOAD_ABOVE_BYTES, max_values=MAX_VALUES)
    for name, body in BODIES.items():
        _assert_same(_fast(decoder, body), _slow(body, spec, MAX_VALUES), f"{spec_name}: {name}")


def test_the_common_bodies_take_the_fast_path_and_their_edges_do_not() -> None:
    decoder = NumericV1Decoder(SPECS["FP32 any shape"], max_bytes=OFFLOAD_ABOVE_BYTES, max_values=MAX_VALUES)
    taken = {name for name, body in BODIES.items() if _fast(decoder, body) is not None}  # answered (or 422)
    assert taken == {
        "one row",
        "flat list",
        "one row of random floats",
        "inputs key",
        "sixteen rows",
        "three levels",
        "integers",
        "integers beyond int64",
        "float32 max",
        "float32 rounds to max",
        "underflow",
        "whitespace",
    }
    # what orjson refuses (400), and what must stay with the slow path's checks and wording, is all declined
    declined = ("NaN token", "Infinity token", "double overflow", "depth bomb", "byte order mark", "float32 overflow",
                "float32 overflow, negative", "float32 rounds to infinity", "ragged rows, same count",
                "list among the numbers", "list first among the numbers", "empty list among the numbers", "bool",
                "invalid UTF-8 in a key", "duplicate key", "another key", "too few numbers", "empty rows")  # fmt: skip
    for name in declined:
        assert _fast(decoder, BODIES[name]) is None, name


def test_float32_values_are_the_correctly_rounded_doubles_cast_as_the_packed_path_casts_them() -> None:
    spec = SPECS["FP32 batched"]
    decoder = NumericV1Decoder(spec, max_bytes=OFFLOAD_ABOVE_BYTES, max_values=MAX_VALUES)
    rng = np.random.default_rng(1)
    rows = [rng.standard_normal(784) * scale for scale in (1e-40, 1e-3, 1.0, 1e30, 1e36)]
    for row in rows:
        body = _body([row.tolist()])
        fast = decoder.decode(body)
        assert fast is not None
        _assert_same(fast, _slow(body, spec, MAX_VALUES), f"scale {row[0]}")


def test_the_json_value_limit_is_checked_first_with_the_same_413() -> None:
    spec = SPECS["FP32 64 wide"]
    decoder = NumericV1Decoder(spec, max_bytes=OFFLOAD_ABOVE_BYTES, max_values=1024)
    body = _body([[1] * 64] * 40)  # 2,600 values in 5,321 bytes: beyond 1,024
    fast, slow = _fast(decoder, body), _slow(body, spec, 1024)
    assert isinstance(slow, RequestError)
    assert slow.status == 413
    _assert_same(fast, slow, "value limit")
    assert fast is not None


def test_a_shape_the_model_does_not_take_gets_the_same_422() -> None:
    spec = SPECS["FP32 64 wide"]
    decoder = NumericV1Decoder(spec, max_bytes=OFFLOAD_ABOVE_BYTES, max_values=MAX_VALUES)
    body = _body([ROW])
    fast, slow = _fast(decoder, body), _slow(body, spec, MAX_VALUES)
    assert isinstance(slow, RequestError)
    assert slow.status == 422
    assert isinstance(fast, RequestError)
    _assert_same(fast, slow, "shape")


def test_bodies_beyond_max_bytes_are_left_to_the_decode_thread() -> None:
    decoder = NumericV1Decoder(SPECS["FP32 64 wide"], max_bytes=4096, max_values=MAX_VALUES)
    assert decoder.decode(_body([ROW[:64]] * 10)) is not None
    assert len(_body([ROW[:64]] * 20)) > 4096
    assert decoder.decode(_body([ROW[:64]] * 20)) is None


def test_the_parser_is_reusable_after_every_kind_of_decline_and_refusal() -> None:
    """simdjson refuses a new document while a proxy of the last one lives: none may outlive a decode."""
    decoder = NumericV1Decoder(SPECS["FP32 64 wide"], max_bytes=OFFLOAD_ABOVE_BYTES, max_values=MAX_VALUES)
    good = _body([ROW[:64]])
    for name, body in [*BODIES.items(), ("shape refused", _body([ROW]))]:
        _fast(decoder, body)
        assert decoder.decode(good) is not None, f"after {name}"


def test_it_applies_to_one_float_input_without_a_handler_only() -> None:
    f32, f64 = SPECS["FP32 batched"], SPECS["FP64 batched"]
    assert NumericV1Decoder.applies_to([f32], has_handler=False)
    assert NumericV1Decoder.applies_to([f64], has_handler=False)
    assert not NumericV1Decoder.applies_to([f32], has_handler=True)
    assert not NumericV1Decoder.applies_to([f32, f64], has_handler=False)
    for datatype in ("FP16", "INT64", "INT32", "UINT8", "BOOL", "BYTES"):
        assert not NumericV1Decoder.applies_to([TensorSpec("x", datatype, (None, 4))], has_handler=False)
    with pytest.raises(ValueError, match="INT64"):
        NumericV1Decoder(TensorSpec("x", "INT64", (None, 4)), max_bytes=1024, max_values=None)


def test_the_shortest_body_of_enough_numbers_is_taken_and_shorter_ones_are_left_without_a_parse() -> None:
    spec = SPECS["FP32 64 wide"]
    decoder = NumericV1Decoder(spec, max_bytes=OFFLOAD_ABOVE_BYTES, max_values=MAX_VALUES)
    shortest = b'{"inputs":[[' + b",".join([b"0"] * 64) + b"]]}"
    fast = decoder.decode(shortest)
    assert isinstance(fast, codec.Decoded)
    _assert_same(fast, _slow(shortest, spec, MAX_VALUES), "shortest")
    # a small model's body: declined before anything parses it
    parsed: list[bytes] = []

    class Recorder:
        def parse(self, body: bytes) -> None:
            parsed.append(body)

    decoder._parser = Recorder()  # type: ignore[assignment]
    assert decoder.decode(b'{"instances": [[0.5, 1.5, 2.5, 3.5]]}') is None
    assert decoder.decode(b'{"instances": [' + b",".join([b"[0.123456789, 1.5]"] * 30) + b"]}") is None
    assert parsed == []
    assert decoder.decode(shortest) is None  # the recorder's None is no document
    assert parsed == [shortest]


_leaf = (
    st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(-(2**70), 2**70)
    | st.sampled_from([True, None, "1", [], [1.0], [[2]], {"a": 1}, 3.5e38, -1e39, 1e-320])
)
_number = st.floats(-1e6, 1e6, allow_nan=False) | st.integers(-(2**40), 2**40)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    width=st.integers(62, 70),
    rows=st.integers(1, 3),
    numbers=st.lists(_number, min_size=210, max_size=210),
    odd=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 69), _leaf), max_size=2),
    ragged=st.booleans(),
    key=st.sampled_from(["instances", "inputs"]),
    datatype=st.sampled_from(["FP32", "FP64"]),
)
def test_generated_bodies_are_answered_as_the_slow_path_answers_them(
    width: int, rows: int, numbers: list[float], odd: list[tuple[int, int, Any]], ragged: bool, key: str, datatype: str
) -> None:
    """Rows of numbers around 64 wide, one of them shorter when ``ragged``, with odd values (a bool, null, string,
    list, object, a number beyond float32 or 64 bits) put in at random places."""
    instances: list[list[Any]] = [numbers[r * width : (r + 1) * width] for r in range(rows)]
    if ragged:
        instances[-1].pop()
    for row, column, value in odd:
        if row < len(instances) and column < len(instances[row]):
            instances[row][column] = value
    body = json.dumps({key: instances}).encode()
    spec = TensorSpec("x", datatype, (None, None))
    decoder = NumericV1Decoder(spec, max_bytes=OFFLOAD_ABOVE_BYTES, max_values=MAX_VALUES)
    _assert_same(_fast(decoder, body), _slow(body, spec, MAX_VALUES), body.decode()[:200])
