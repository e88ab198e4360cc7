"""modelapi runtime: serves an ONNX model over KServe v1 and Open Inference Protocol v2."""

__version__ = "0.1.0"
