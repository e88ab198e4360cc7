"""Tensor descriptions shared by the codecs and the model: names, v2 datatypes, numpy dtypes, shapes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.generic]

# Open Inference Protocol v2 datatype <-> numpy dtype.
V2_TO_NUMPY: dict[str, np.dtype[np.generic]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}
NUMPY_TO_V2: dict[np.dtype[np.generic], str] = {v: k for k, v in V2_TO_NUMPY.items()}

# onnxruntime's type strings ("tensor(float)") -> v2 datatype.
ONNX_TO_V2: dict[str, str] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}

Dim = int | None  # None: dynamic (symbolic or unknown) dimension


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One model input or output as the protocols see it."""

    name: str
    datatype: str  # v2 datatype
    shape: tuple[Dim, ...]

    @property
    def dtype(self) -> np.dtype[np.generic]:
        return V2_TO_NUMPY[self.datatype]

    @property
    def batched(self) -> bool:
        """True when the first dimension is dynamic, so requests can be stacked along it."""
        return len(self.shape) > 0 and self.shape[0] is None

    def metadata_shape(self) -> list[int]:
        """v2 metadata uses -1 for a dynamic dimension."""
        return [-1 if d is None else d for d in self.shape]

    def shape_matches(self, shape: tuple[int, ...]) -> bool:
        if len(shape) != len(self.shape):
            return False
        for want, got in zip(self.shape, shape, strict=True):  # noqa: SIM110 - cheaper than all() per request
            if want is not None and want != got:
                return False
        return True

    def synthesize(self) -> Array:
        """An input of this spec for the warm-up run: dynamic dimensions become 1."""
        shape = tuple(1 if d is None else d for d in self.shape)
        if self.datatype == "BYTES":
            return np.full(shape, "", dtype=np.object_)
        return np.zeros(shape, dtype=self.dtype)
