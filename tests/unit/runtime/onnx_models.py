"""Small real ONNX models built with onnx.helper (no binary fixtures in git)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = [helper.make_opsetid("", 17)]


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=OPSET, producer_name="modelapi-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def affine(path: Path, features: int = 4) -> Path:
    """y = 2x + 1, x: float32 [N, features]."""
    two = numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two")
    one = numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one")
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["t"]), helper.make_node("Add", ["t", "one"], ["y"])],
        "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", features])],
        initializer=[two, one],
    )
    return _save(graph, path)


def two_io(path: Path) -> Path:
    """a, b: float32 [N, 2]; sum = a + b, prod = a * b (int64 count of positives as a third output)."""
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["a", "b"], ["sum"]),
            helper.make_node("Mul", ["a", "b"], ["prod"]),
        ],
        "two_io",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 2]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 2]),
        ],
        [
            helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["N", 2]),
            helper.make_tensor_value_info("prod", TensorProto.FLOAT, ["N", 2]),
        ],
    )
    return _save(graph, path)


def int_identity(path: Path) -> Path:
    """x: int64 [N, 3] -> y = x + 1."""
    one = numpy_helper.from_array(np.array(1, dtype=np.int64), "one")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "one"], ["y"])],
        "int_identity",
        [helper.make_tensor_value_info("x", TensorProto.INT64, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.INT64, ["N", 3])],
        initializer=[one],
    )
    return _save(graph, path)


def fixed(path: Path) -> Path:
    """x: float32 [3] (no batch axis) -> y = -x."""
    graph = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["y"])],
        "fixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
    )
    return _save(graph, path)


def mlp(path: Path, sizes: tuple[int, ...] = (784, 512, 256, 10), seed: int = 0) -> Path:
    """Gemm + Relu layers with random weights; x: float32 [N, sizes[0]] -> y: [N, sizes[-1]]."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    prev = "x"
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        w = (rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32)
        b = np.zeros(fan_out, dtype=np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        out = "y" if i == len(sizes) - 2 else f"h{i}"
        gemm_out = out if out == "y" else f"g{i}"
        nodes.append(helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], [gemm_out]))
        if out != "y":
            nodes.append(helper.make_node("Relu", [gemm_out], [out]))
        prev = out
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", sizes[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", sizes[-1]])],
        initializer=inits,
    )
    return _save(graph, path)


def slow(path: Path, layers: int = 384, seed: int = 0) -> Path:
    """A model that takes tens of milliseconds per row on two idle cores, more under load (each row becomes 256 rows
    of 256 values through ``layers`` 256x256 MatMuls sharing one weight): x: float32 [N, 4] -> y: [N, 4]. It runs on
    the model thread, not the loop, so requests stay in progress while it runs."""
    rng = np.random.default_rng(seed)
    wide, square = 256 * 256, 256
    inits = [
        numpy_helper.from_array((rng.standard_normal((4, wide)) / 2).astype(np.float32), "w_in"),
        numpy_helper.from_array(np.eye(square, dtype=np.float32), "w"),
        numpy_helper.from_array((rng.standard_normal((wide, 4)) / wide).astype(np.float32), "w_out"),
        numpy_helper.from_array(np.array([-1, square], dtype=np.int64), "rows_of_256"),
        numpy_helper.from_array(np.array([-1, wide], dtype=np.int64), "back"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w_in"], ["h"]),
        helper.make_node("Reshape", ["h", "rows_of_256"], ["s0"]),
    ]
    for i in range(layers):
        nodes.append(helper.make_node("MatMul", [f"s{i}", "w"], [f"s{i + 1}"]))
    nodes += [
        helper.make_node("Reshape", [f"s{layers}", "back"], ["b"]),
        helper.make_node("MatMul", ["b", "w_out"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        initializer=inits,
    )
    return _save(graph, path)
