"""KServe v1 and Open Inference Protocol v2 codecs (JSON and the v2 binary tensor extension).

Decoding validates against the model's input specs (name, datatype, shape) and raises
:class:`InvalidInput` (422) for well-formed JSON that does not fit, :class:`BadRequest` (400) for
malformed bodies. Encoding hands numpy arrays to orjson directly (no ``tolist()`` round trip).
"""

from __future__ import annotations

import itertools
import math
import struct
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeGuard

import numpy as np
import orjson

from modelapi_runtime.exceptions import BadRequest, HandlerFailed, InvalidInput, PayloadTooLarge
from modelapi_runtime.tensors import NUMPY_TO_V2, V2_TO_NUMPY, Array, TensorSpec

HEADER_LENGTH = "inference-header-content-length"
_LITTLE_ENDIAN = sys.byteorder == "little"
JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
MAX_NDIM = 32  # dimensions of one v2 input (numpy's own limit is 64)

# Which JSON-decoded numpy kinds may be converted to a target kind without losing meaning.
_ACCEPTS: dict[str, str] = {"f": "fiub", "i": "iub", "u": "iub", "b": "b", "O": "USO"}

# struct's code for each dtype that JSON numbers can be packed into directly ("=": native byte order, standard sizes,
# which are numpy's). struct refuses what to_array refuses: a string, null, list or object; a float where an integer
# is expected; an integer outside the type's range; a float too large for the type. orjson's integers lie within
# int64/uint64 and JSON has no NaN or infinity, so what struct accepts numpy accepts too. BOOL is not here: struct
# packs any value at all as a bool.
_STRUCT_CODES: dict[np.dtype[np.generic], str] = {
    np.dtype(t): code
    for t, code in (
        (np.float16, "e"),
        (np.float32, "f"),
        (np.float64, "d"),
        (np.int8, "b"),
        (np.int16, "h"),
        (np.int32, "i"),
        (np.int64, "q"),
        (np.uint8, "B"),
        (np.uint16, "H"),
        (np.uint32, "I"),
        (np.uint64, "Q"),
    )
}
PACK_FROM = 64  # fewer numbers than this: np.asarray costs no more than packed()'s checks
_PACK_ROWS_FROM = 8  # innermost lists this long are packed one by one; shorter ones all together


@dataclass(slots=True)
class Decoded:
    """A decoded inference request."""

    inputs: dict[str, Array]
    rows: int | None  # rows along a shared dynamic first axis: the request can join a batch
    payload: dict[str, Any] = field(default_factory=dict)
    request_id: str | None = None
    outputs: list[str] | None = None  # v2: requested outputs (None: all)
    binary: set[str] = field(default_factory=set)  # v2: outputs to return as binary data


def check_json_values(body: bytes, max_values: int | None) -> None:
    """Refuse (413) a JSON body that holds more than ``max_values`` values, counted by their separators before
    anything is decoded."""
    # A value takes at least two bytes ("1,", "[]"), so a body of up to 2 * max_values bytes needs no count.
    if max_values is not None and len(body) > 2 * max_values:
        values = body.count(b",") + body.count(b"[") + body.count(b"{")
        if values > max_values:
            raise PayloadTooLarge(
                f"the JSON body holds about {values} values, more than the limit of {max_values}; "
                "send large tensors with the v2 binary extension"
            )


def parse_json(body: bytes, max_values: int | None = None) -> dict[str, Any]:
    """The request's JSON object. ``max_values`` bounds the values it may hold (413 beyond, see
    :func:`check_json_values`); nesting is bounded by orjson (1024 levels: 400 beyond)."""
    check_json_values(body, max_values)
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise BadRequest("the request body must be a JSON object")
    return payload


def to_array(value: Any, spec: TensorSpec, what: str) -> Array:
    """A JSON value as an array of ``spec``'s dtype, refusing lossy or nonsensical conversions."""
    try:
        raw = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"{what}: not a rectangular array ({exc})") from None
    want = spec.dtype
    have = raw.dtype
    if have == want:
        return raw
    if have.kind not in _ACCEPTS.get(want.kind, want.kind):
        raise InvalidInput(f"{what}: expected {spec.datatype} values, got {_kind_name(raw)}")
    if want.kind == "O":
        return raw.astype(np.object_)
    if np.can_cast(have, want):  # int -> float64, bool -> anything, float32 -> float64: nothing to lose
        return raw.astype(want)
    if want.kind in "iu":
        # Integer casts wrap silently (errstate does not apply to them): check the range first.
        info = np.iinfo(want)  # type: ignore[type-var]  # want.kind is i or u here
        if raw.size and (int(raw.min()) < info.min or int(raw.max()) > info.max):
            raise InvalidInput(f"{what}: values do not fit {spec.datatype} ({info.min}..{info.max})")
        return raw.astype(want)
    try:
        with np.errstate(over="raise", invalid="raise"):
            return raw.astype(want)
    except (OverflowError, FloatingPointError, ValueError) as exc:
        raise InvalidInput(f"{what}: values do not fit {spec.datatype} ({exc})") from None


def json_array(value: Any, spec: TensorSpec, what: str) -> Array:
    """A decoded JSON value as an array of ``spec``'s dtype: :func:`packed` when it applies, else :func:`to_array`
    (which decides every other case and words the errors)."""
    arr = packed(value, spec.dtype)
    return arr if arr is not None else to_array(value, spec, what)


def packed(value: Any, dtype: np.dtype[np.generic]) -> Array | None:
    """``value`` as an array of ``dtype`` when it is a rectangular nest of lists of at least ``PACK_FROM`` JSON
    numbers that fit ``dtype``; None otherwise. The lists above the numbers are checked (type and length, level by
    level, in C), then each innermost list is packed by one ``struct`` call straight into the array's memory: no
    dtype discovery over every number (what ``np.asarray`` does first), and no float64 array on the way to float32.
    """
    code = _STRUCT_CODES.get(dtype)
    if code is None or type(value) is not list:
        return None
    shape: list[int] = []
    item: Any = value
    while type(item) is list:
        if not item or len(shape) == MAX_NDIM:
            return None  # an empty list, or nesting numpy may refuse: to_array answers those as before
        shape.append(len(item))
        item = item[0]
    if math.prod(shape) < PACK_FROM:
        return None  # numpy is as quick
    rows: list[Any] = value  # the lists (or numbers) one level down
    for depth, width in enumerate(shape[1:], 2):  # every list at this level holds lists of the same length
        if set(map(type, rows)) != {list} or set(map(len, rows)) != {width}:
            return None
        if depth < len(shape):
            rows = list(itertools.chain.from_iterable(rows))
    if len(shape) == 1:
        rows = [value]
    arr = np.empty(shape, dtype)
    width = shape[-1]
    try:
        if width >= _PACK_ROWS_FROM:  # one call per row: no list of every number on the way
            fmt, step = f"={width}{code}", width * dtype.itemsize
            for i, row in enumerate(rows):
                struct.pack_into(fmt, arr.data, i * step, *row)
        else:
            struct.pack_into(f"={arr.size}{code}", arr.data, 0, *list(itertools.chain.from_iterable(rows)))
    except (struct.error, OverflowError):  # something else than a number, or a number out of range
        return None  # to_array words the error
    return arr


def _kind_name(a: Array) -> str:
    return {"U": "strings", "S": "bytes", "O": "mixed or nested values", "V": "records"}.get(a.dtype.kind, a.dtype.name)


def _check_shape(arr: Array, spec: TensorSpec, what: str) -> None:
    if not spec.shape_matches(arr.shape):
        want = ["?" if d is None else d for d in spec.shape]
        raise InvalidInput(f"{what}: shape {list(arr.shape)} does not match the model's {want}")


def _rows(inputs: Mapping[str, Array], specs: Sequence[TensorSpec]) -> int | None:
    rows: int | None = None
    for spec in specs:
        if not spec.batched:
            return None
        n = inputs[spec.name].shape[0]
        if rows is None:
            rows = n
        elif rows != n:
            return None
    return rows


def check_inputs(inputs: Mapping[str, Array], specs: Sequence[TensorSpec]) -> dict[str, Array]:
    """Inputs produced by a handler: every model input present, right dtype (converted) and shape."""
    out: dict[str, Array] = {}
    for spec in specs:
        if spec.name not in inputs:
            raise InvalidInput(f"missing input {spec.name!r}")
        arr = to_array(inputs[spec.name], spec, f"input {spec.name!r}")
        _check_shape(arr, spec, f"input {spec.name!r}")
        out[spec.name] = arr
    unknown = set(inputs) - {s.name for s in specs}
    if unknown:
        raise InvalidInput(f"unknown inputs {sorted(unknown)}; the model takes {[s.name for s in specs]}")
    return out


# --- KServe v1 ----------------------------------------------------------------------------------


def decode_v1(payload: dict[str, Any], specs: Sequence[TensorSpec]) -> Decoded:
    instances = payload.get("instances", payload.get("inputs"))
    if not isinstance(instances, list) or not instances:
        raise InvalidInput('v1 requests carry a non-empty "instances" list')
    if len(specs) == 1:
        return decoded_instances(json_array(instances, specs[0], "instances"), specs[0], payload)
    if not all(isinstance(i, dict) for i in instances):
        raise InvalidInput(
            f"the model has inputs {[s.name for s in specs]}: each instance must be an object keyed by them"
        )
    inputs = {}
    for spec in specs:
        try:
            column = [i[spec.name] for i in instances]
        except KeyError:
            raise InvalidInput(f"an instance lacks input {spec.name!r}") from None
        arr = json_array(column, spec, f"input {spec.name!r}")
        _check_shape(arr, spec, f"input {spec.name!r}")
        inputs[spec.name] = arr
    return Decoded(inputs=inputs, rows=_rows(inputs, specs), payload=payload)


def decoded_instances(arr: Array, spec: TensorSpec, payload: dict[str, Any]) -> Decoded:
    """A v1 request to a model with one input, whose instances decoded to ``arr`` (of the input's dtype)."""
    if not spec.batched and arr.ndim == len(spec.shape) + 1 and arr.shape[0] == 1:
        arr = arr[0]  # one instance of a model without a batch axis
    _check_shape(arr, spec, "instances")
    return Decoded(inputs={spec.name: arr}, rows=arr.shape[0] if spec.batched else None, payload=payload)


def encode_v1(outputs: Mapping[str, Array], names: Sequence[str]) -> bytes:
    if len(names) == 1:
        body: Any = {"predictions": _jsonable(outputs[names[0]], nested=True)}
    else:
        arrays = [outputs[n] for n in names]
        rows = min((a.shape[0] for a in arrays if a.ndim), default=0)
        body = {
            "predictions": [
                {n: _jsonable(a[i], nested=True) for n, a in zip(names, arrays, strict=True)} for i in range(rows)
            ]
        }
    return orjson.dumps(body, option=JSON_OPTIONS)


# --- Open Inference Protocol v2 ------------------------------------------------------------------


def split_binary(body: bytes, header_length: str | None) -> tuple[bytes, memoryview | None]:
    if header_length is None:
        return body, None
    try:
        n = int(header_length)
    except ValueError:
        raise BadRequest("Inference-Header-Content-Length must be an integer") from None
    if not 0 < n <= len(body):
        raise BadRequest(f"Inference-Header-Content-Length {n} is outside the body ({len(body)} bytes)")
    return body[:n], memoryview(body)[n:]


def decode_v2(
    payload: dict[str, Any],
    binary: memoryview | None,
    specs: Sequence[TensorSpec],
    *,
    strict: bool = True,
    max_elements: int = 2**31 - 1,
) -> Decoded:
    """``strict=False`` (a handler preprocesses): decode tensors without matching them to the model.
    ``max_elements``: the most elements a shape may describe (checked before anything is allocated)."""
    items = payload.get("inputs")
    if not isinstance(items, list) or not items:
        raise InvalidInput('v2 requests carry a non-empty "inputs" list')
    inputs: dict[str, Array] = {}
    offset = 0
    for item in items:
        if not isinstance(item, dict):
            raise InvalidInput("each input must be an object with name, shape, datatype and data")
        name, shape, datatype = item.get("name"), item.get("shape"), item.get("datatype")
        if not isinstance(name, str):
            raise InvalidInput("an input lacks its name")
        if name in inputs:
            raise InvalidInput(f"input {name!r} is given twice")
        if not _is_shape(shape):
            raise InvalidInput(f"input {name!r}: shape must be a list of non-negative integers")
        if not isinstance(datatype, str) or datatype not in V2_TO_NUMPY:
            raise InvalidInput(f"input {name!r}: unknown datatype {datatype!r}")
        spec = _spec_named(specs, name)
        if spec is None:
            if strict:
                raise InvalidInput(f"unknown input {name!r}; the model takes {[s.name for s in specs]}")
            spec = TensorSpec(name, datatype, tuple(shape))
        if datatype != spec.datatype:
            raise InvalidInput(f"input {name!r}: datatype {datatype} but the model expects {spec.datatype}")
        count = math.prod(shape)
        if count > max_elements or count == 0 or len(shape) > MAX_NDIM:
            _check_element_count(shape, name, max_elements)
        params = item.get("parameters")
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if size is not None:
            arr, offset = _binary_tensor(binary, offset, size, spec, count=count)
        else:
            if "data" not in item:
                raise InvalidInput(f"input {name!r}: no data")
            arr = json_array(item["data"], spec, f"input {name!r}")
            if arr.size != count:
                raise InvalidInput(f"input {name!r}: {arr.size} values for shape {shape} ({count})")
        arr = arr.reshape(shape)
        if strict:
            _check_shape(arr, spec, f"input {name!r}")
        inputs[name] = arr
    if binary is not None and offset != len(binary):
        raise BadRequest(f"{len(binary) - offset} bytes of binary data are not claimed by any input")
    if strict:
        missing = [s.name for s in specs if s.name not in inputs]
        if missing:
            raise InvalidInput(f"missing inputs {missing}")
    requested, wanted_binary = _requested_outputs(payload)
    request_id = payload.get("id")
    return Decoded(
        inputs=inputs,
        rows=_rows(inputs, specs) if strict else None,
        payload=payload,
        request_id=request_id if isinstance(request_id, str) else None,
        outputs=requested,
        binary=wanted_binary,
    )


class BinaryHeaders:
    """Decoding of v2 requests whose inputs are all binary, remembered per JSON header.

    Such a request's header (names, datatypes, shapes, byte sizes, requested outputs, id) decides everything that
    :func:`decode_v2` checks except the binary part's length, and clients with fixed shapes send the same header
    bytes again and again. A header is decoded and validated in full the first and second time it is seen; when
    that succeeds the second time, what it decided (each tensor's dtype, shape and place in the binary part) is
    kept under the exact header bytes, and a later request with the same header and a binary part of the same
    length gets its tensors as views at those places without parsing the JSON again. Anything else (another
    length, a header not kept, JSON data in the header) takes the full decode, which answers errors as always.
    A header seen once leaves only its bytes (in ``_seen``): a client that puts a new id in every header keeps no
    decoded request alive past its answer (which the garbage collector would then walk), and pays two set
    lookups. At most ``MAX_ENTRIES`` headers of at most ``MAX_HEADER_BYTES`` are kept in each; when full, that
    memory starts over.
    """

    MAX_ENTRIES = 64
    MAX_HEADER_BYTES = 2048

    __slots__ = ("_known", "_seen", "max_elements", "max_values", "specs")

    def __init__(self, specs: Sequence[TensorSpec], *, max_elements: int, max_values: int | None) -> None:
        self.specs = specs
        self.max_elements = max_elements
        self.max_values = max_values
        self._known: dict[bytes, _BinaryLayout] = {}
        self._seen: set[bytes] = set()  # headers decoded once, not (yet) kept

    def decode(self, head: bytes, binary: memoryview) -> Decoded:
        known = self._known.get(head)
        if known is not None and known.size == len(binary):
            inputs = {}
            for name, dtype, shape, offset, count in known.tensors:
                inputs[name] = np.frombuffer(binary, dtype, count, offset).reshape(shape)
            return Decoded(inputs, known.rows, known.payload, known.request_id, known.outputs, known.binary)
        payload = parse_json(head, self.max_values)
        decoded = decode_v2(payload, binary, self.specs, max_elements=self.max_elements)
        if _LITTLE_ENDIAN and len(head) <= self.MAX_HEADER_BYTES:
            if head not in self._seen:
                if len(self._seen) >= self.MAX_ENTRIES:
                    self._seen.clear()
                self._seen.add(head)
                return decoded
            layout = _BinaryLayout.of(decoded, payload["inputs"], len(binary))
            if layout is not None:
                if len(self._known) >= self.MAX_ENTRIES:
                    self._known.clear()
                self._known[head] = layout
        return decoded


@dataclass(frozen=True, slots=True)
class _BinaryLayout:
    """What a v2 header whose inputs are all binary decided: (name, dtype, shape, offset, count) per tensor."""

    tensors: tuple[tuple[str, np.dtype[np.generic], tuple[int, ...], int, int], ...]
    size: int  # the binary part's length it was validated with
    rows: int | None
    payload: dict[str, Any]
    request_id: str | None
    outputs: list[str] | None
    binary: set[str]

    @staticmethod
    def of(decoded: Decoded, items: list[dict[str, Any]], size: int) -> _BinaryLayout | None:
        tensors = []
        offset = 0
        for item in items:  # validated by decode_v2: names unique, every size an int within the binary part
            params = item.get("parameters")
            nbytes = params.get("binary_data_size") if isinstance(params, dict) else None
            if nbytes is None:
                return None  # JSON data in the header: nothing to remember
            arr = decoded.inputs[item["name"]]
            tensors.append((item["name"], arr.dtype, arr.shape, offset, arr.size))
            offset += nbytes
        return _BinaryLayout(
            tuple(tensors), size, decoded.rows, decoded.payload, decoded.request_id, decoded.outputs, decoded.binary
        )


def _check_element_count(shape: list[int], name: str, limit: int) -> None:
    """Refuse (422) a shape with too many dimensions, or whose non-zero dimensions multiply beyond ``limit``: numpy
    could not allocate, or even reshape, such an array."""
    if len(shape) > MAX_NDIM:
        raise InvalidInput(f"input {name!r}: shape has {len(shape)} dimensions, more than {MAX_NDIM}")
    if math.prod([d or 1 for d in shape]) > limit:
        raise InvalidInput(f"input {name!r}: shape {shape} describes more than {limit} elements")


def _is_shape(shape: Any) -> TypeGuard[list[int]]:
    if not isinstance(shape, list):
        return False
    for d in shape:  # noqa: SIM110 - a loop costs less than all() over a generator, per request
        if type(d) is not int or d < 0:
            return False
    return True


def _spec_named(specs: Sequence[TensorSpec], name: str) -> TensorSpec | None:
    for spec in specs:  # a model has a handful of inputs: cheaper than a dict built per request
        if spec.name == name:
            return spec
    return None


def _binary_tensor(
    binary: memoryview | None, offset: int, size: Any, spec: TensorSpec, *, count: int
) -> tuple[Array, int]:
    if binary is None:
        raise BadRequest(f"input {spec.name!r}: binary_data_size without Inference-Header-Content-Length")
    if type(size) is not int or size < 0 or offset + size > len(binary):
        raise BadRequest(f"input {spec.name!r}: binary_data_size {size!r} is outside the binary data")
    if spec.datatype == "BYTES":
        raise InvalidInput(f"input {spec.name!r}: BYTES tensors are accepted as JSON only")
    dtype = spec.dtype
    if size != count * dtype.itemsize:
        raise InvalidInput(f"input {spec.name!r}: {size} bytes for {count} {spec.datatype} values")
    # The extension's tensors are little-endian: on a little-endian host the request's bytes are
    # used in place (a read-only view of the body, no copy).
    view = binary[offset : offset + size]
    if _LITTLE_ENDIAN or dtype.itemsize == 1:
        return np.frombuffer(view, dtype=dtype), offset + size
    return np.frombuffer(view, dtype=dtype.newbyteorder("<")).astype(dtype), offset + size  # pragma: no cover


def _requested_outputs(payload: dict[str, Any]) -> tuple[list[str] | None, set[str]]:
    params = payload.get("parameters")
    all_binary = isinstance(params, dict) and params.get("binary_data_output") is True
    items = payload.get("outputs")
    if items is None:
        return None, {"*"} if all_binary else set()
    if not isinstance(items, list):
        raise InvalidInput('"outputs" must be a list of objects with a name')
    names: list[str] = []
    binary: set[str] = set()
    for o in items:
        name = o.get("name") if isinstance(o, dict) else None
        if not isinstance(name, str):
            raise InvalidInput('"outputs" must be a list of objects with a name')
        names.append(name)
        if all_binary:
            binary.add(name)
        else:
            p = o.get("parameters")
            if isinstance(p, dict) and p.get("binary_data") is True:
                binary.add(name)
    return names, binary


def encode_v2(
    outputs: Mapping[str, Array],
    names: Sequence[str],
    *,
    model_name: str,
    model_version: str,
    request_id: str | None,
    binary: set[str],
) -> tuple[bytes, int | None]:
    """Response body and, when binary outputs are present, the JSON header's length."""
    items: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name in names:
        arr = outputs[name]
        datatype = NUMPY_TO_V2.get(arr.dtype)
        if datatype is None:
            raise InvalidInput(f"output {name!r} has unsupported dtype {arr.dtype}")  # pragma: no cover
        item: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(arr.shape)}
        if (name in binary or "*" in binary) and datatype != "BYTES":
            data = arr.tobytes() if _LITTLE_ENDIAN else arr.astype(arr.dtype.newbyteorder("<")).tobytes()
            item["parameters"] = {"binary_data_size": len(data)}
            blobs.append(data)
        else:
            item["data"] = _jsonable(arr, nested=False)
        items.append(item)
    body: dict[str, Any] = {"model_name": model_name, "outputs": items}
    if model_version:
        body["model_version"] = model_version
    if request_id is not None:
        body["id"] = request_id
    header = orjson.dumps(body, option=JSON_OPTIONS)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


def _jsonable(arr: Array, *, nested: bool) -> Any:
    if arr.dtype.kind == "O":
        flat = arr.tolist() if nested else arr.ravel().tolist()
        return _decode_bytes(flat)
    # orjson serializes numpy arrays natively and writes NaN/Infinity (which JSON lacks) as null.
    arr = np.ascontiguousarray(arr)
    return arr if nested else arr.ravel()


def _decode_bytes(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode_bytes(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def dumps_handler_result(result: Any) -> bytes:
    """A postprocess result as JSON; numpy values allowed."""
    try:
        return orjson.dumps(result, option=JSON_OPTIONS | orjson.OPT_NON_STR_KEYS, default=_default)
    except TypeError as exc:
        raise HandlerFailed(f"handler postprocess returned something that is not JSON: {exc}") from None


def _default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
