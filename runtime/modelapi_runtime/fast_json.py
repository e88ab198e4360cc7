"""The common v1 request decoded without a Python object per number: ``{"instances": [[numbers...], ...]}``.

simdjson parses the body into its own tape; the numbers are copied from it as doubles in one call and cast to the
input's dtype, where orjson would make a Python float (or int) of each and :func:`codec.packed` would then pack them.
It answers only what it can answer exactly as :func:`codec.decode_v1` would, and declines (None) everything else,
which then takes that path and gets its answer, errors worded as always:

- a model with one FP32 or FP64 input, no handler, a body small enough to be decoded on the event loop;
- a body whose top level is an object with one key, ``instances`` or ``inputs`` (no other key to keep for a
  handler, no duplicate key whose last value orjson would keep), and no byte order mark (simdjson skips one, orjson
  refuses it);
- that key's value a rectangular nest of at most ``codec.MAX_NDIM`` non-empty lists (checked level by level, and
  no list below the innermost level: the body holds no ``[`` more than the nest's own lists) of at least
  ``codec.PACK_FROM`` JSON numbers, none beyond the dtype's range: the cases :func:`codec.packed` accepts, which
  packs each number as the same correctly rounded double cast to the dtype.

Anything simdjson refuses (malformed JSON, invalid UTF-8, NaN or Infinity tokens, integers beyond 64 bits, numbers
beyond a double, nesting beyond 1024 levels) and anything else in the array (bools, null, strings, objects) is
declined, and orjson words the 400 or 422. The JSON value limit (413) is checked first, as :func:`codec.parse_json`
checks it. The parser's buffers are sized for bodies up to ``max_bytes`` and kept between requests: one decoder
per event loop thread, never shared with the thread that decodes large bodies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import simdjson

from modelapi_runtime import codec
from modelapi_runtime.tensors import TensorSpec

BYTE_ORDER_MARK = b"\xef\xbb\xbf"
DTYPES = (np.dtype(np.float32), np.dtype(np.float64))  # the dtypes a JSON number converts to without a range check
_KEYS = ("instances", "inputs")
# Fewer bytes than this cannot hold codec.PACK_FROM numbers (each but the last takes a digit and a comma); up to
# _COUNT_UP_TO bytes, the commas are counted first (well under a microsecond) before simdjson parses anything.
_MIN_BYTES = 2 * codec.PACK_FROM
_COUNT_UP_TO = 2048
# The smallest magnitude a double rounds to infinity as a float32 (to nearest: FLT_MAX plus half its last unit).
FLOAT32_OVERFLOW = float(2**128 - 2**103)
_SCALE = 2.0**-540  # a double times this, squared, is at most 2**968: no overflow, even summed over 2**50 values
_SCALED_LIMIT = (FLOAT32_OVERFLOW * _SCALE) ** 2  # exact: 25 significant bits, squared, times a power of two


class NumericV1Decoder:
    """Decodes v1 bodies of numbers for one FP32/FP64 model input (see the module's docstring)."""

    __slots__ = ("_parser", "max_bytes", "max_values", "spec")

    def __init__(self, spec: TensorSpec, *, max_bytes: int, max_values: int | None) -> None:
        if spec.dtype not in DTYPES:
            raise ValueError(f"{spec.datatype} is not decoded here")
        self.spec = spec
        self.max_bytes = max_bytes
        self.max_values = max_values
        self._parser = simdjson.Parser(max_capacity=max_bytes)

    @staticmethod
    def applies_to(specs: Sequence[TensorSpec], has_handler: bool) -> bool:
        """Whether requests to a model with these inputs may take this path."""
        return not has_handler and len(specs) == 1 and specs[0].dtype in DTYPES

    def decode(self, body: bytes) -> codec.Decoded | None:
        """The decoded request, or None: ``codec.decode_v1(codec.parse_json(body))`` decides it. Raises what
        those would raise for the same body when it answers (413 for too many values, 422 for a shape the model
        does not take)."""
        size = len(body)
        if size < _MIN_BYTES or size > self.max_bytes or body.startswith(BYTE_ORDER_MARK):
            return None
        if size <= _COUNT_UP_TO and body.count(b",") < codec.PACK_FROM - 1:
            return None  # too few numbers: a small model's body costs no parse it would not use
        codec.check_json_values(body, self.max_values)
        arr = self._numbers(body)
        if arr is None:
            return None
        return codec.decoded_instances(arr, self.spec, {})

    def _numbers(self, body: bytes) -> np.ndarray[Any, Any] | None:
        """The instances as an array of the input's dtype, or None. Every simdjson proxy made here is gone when it
        returns: the parser refuses the next document while one lives."""
        try:
            doc = self._parser.parse(body)
        except Exception:  # whatever simdjson refuses, orjson answers (and words) instead
            return None
        if type(doc) is not simdjson.Object or len(doc) != 1:
            return None
        instances = doc.get(_KEYS[0])
        if instances is None:
            instances = doc.get(_KEYS[1])
        del doc
        if type(instances) is not simdjson.Array:
            return None
        shape = _rectangular_shape(instances, body)
        if shape is None:
            return None
        try:
            doubles = np.frombuffer(instances.as_buffer(of_type="d"), np.float64)
        except (TypeError, ValueError, RuntimeError):  # a bool, null, string or object among the numbers
            return None
        del instances
        if doubles.size != math.prod(shape):
            return None  # pragma: no cover - _rectangular_shape has counted every list
        dtype = self.spec.dtype
        if dtype == np.float64:
            return doubles.reshape(shape)
        # JSON has no infinity: a double that casts to an infinite float32 is beyond its range (codec.packed refuses
        # it). Those are the magnitudes from FLOAT32_OVERFLOW up; the sum of the squares (one dot product, rounded
        # monotonically) stays below its square when none is. The values are scaled by a power of two first, so
        # that no square of a double overflows (numpy would warn) and the bound stays exact. A sum of many large
        # values may decline what would fit: the slow path then answers, no less correct.
        scaled = doubles * _SCALE
        if not scaled.dot(scaled) < _SCALED_LIMIT:
            return None
        return doubles.astype(dtype).reshape(shape)


def _rectangular_shape(instances: simdjson.Array, body: bytes) -> list[int] | None:
    """The shape of a rectangular nest of non-empty lists, at most ``codec.MAX_NDIM`` deep, of at least
    ``codec.PACK_FROM`` values with no list among them; None for anything else."""
    shape: list[int] = []
    item: Any = instances
    while type(item) is simdjson.Array:
        n = len(item)
        if n == 0 or len(shape) == codec.MAX_NDIM:
            return None
        shape.append(n)
        item = item[0]
    del item
    if math.prod(shape) < codec.PACK_FROM:
        return None
    level: list[simdjson.Array] = [instances]
    lists = 1
    for width in shape[1:]:  # every list at this level holds lists of the same length
        below: list[simdjson.Array] = []
        for outer in level:
            for row in outer:
                if type(row) is not simdjson.Array or len(row) != width:
                    return None
                below.append(row)
        lists += len(below)
        level = below
    del level
    # The innermost lists hold no list: the body's "[" are exactly the lists counted (the only string in the body
    # is its one key, which has none). Stop at the first one past that count.
    at = -1
    for _ in range(lists + 1):
        at = body.find(b"[", at + 1)
        if at < 0:
            return shape
    return None
