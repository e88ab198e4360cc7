"""The iris example's model builds, is valid ONNX, and onnxruntime serves it."""

from __future__ import annotations

import runpy
from pathlib import Path

import numpy as np
import onnxruntime as ort

EXAMPLE = Path(__file__).parents[3] / "examples" / "iris" / "build_model.py"


def test_iris_model_builds_and_predicts(tmp_path: Path) -> None:
    builder = runpy.run_path(str(EXAMPLE))
    output = tmp_path / "model.onnx"
    assert builder["main"]([str(output)]) == 0
    session = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"]
    flowers = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)
    (probabilities,) = session.run(None, {"input": flowers})
    assert probabilities.shape == (2, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    # A short-petalled flower and a long-petalled one land in different classes.
    assert probabilities[0].argmax() != probabilities[1].argmax()
