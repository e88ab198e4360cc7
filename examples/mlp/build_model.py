"""Build the mlp example model: 256 float features -> 512 -> 512 -> 10 class probabilities (ReLU, softmax).

    python examples/mlp/build_model.py model.onnx

Weights are drawn from a fixed seed, so the file is the same on every machine; a real ONNX model that onnxruntime
serves, heavy enough that dynamic batching shows. Needs `onnx` and `numpy` (modelapi's dev extras).
"""

from __future__ import annotations

import itertools
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SIZES = (256, 512, 512, 10)
SEED = 7


def build_mlp_model(sizes: tuple[int, ...] = SIZES, seed: int = SEED) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    nodes, initializers = [], []
    current = "input"
    for layer, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        weight = (rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32)
        bias = np.zeros(fan_out, dtype=np.float32)
        initializers += [numpy_helper.from_array(weight, f"w{layer}"), numpy_helper.from_array(bias, f"b{layer}")]
        nodes.append(helper.make_node("Gemm", [current, f"w{layer}", f"b{layer}"], [f"h{layer}"]))
        current = f"h{layer}"
        if layer < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [current], [f"r{layer}"]))
            current = f"r{layer}"
    nodes.append(helper.make_node("Softmax", [current], ["probabilities"], axis=-1))
    graph = helper.make_graph(
        nodes,
        "mlp",
        inputs=[helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", sizes[0]])],
        outputs=[helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", sizes[-1]])],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="modelapi-examples")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: build_model.py OUTPUT.onnx\n")
        return 2
    onnx.save(build_mlp_model(), argv[0])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
