"""Peer: KServe's Python ModelServer wrapping the same onnxruntime session (run from its own venv).

Configured at its best, as a KServe user would tune it for throughput: no per-request logging of any kind
(``enable_latency_logging=False``; the ``uvicorn.access`` and ``kserve.trace`` loggers, which log every request
line and every request's timings by default, set to WARNING), gRPC off, one uvicorn worker, and the same
onnxruntime session options as every other server in the benchmark (1 intra-op and 1 inter-op thread).

Usage: python kserve_server.py MODEL.onnx PORT
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import kserve
import numpy as np
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse


class OnnxModel(kserve.Model):
    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        self.path = path
        self.session: Any = None

    def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(self.path, sess_options=options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.ready = True
        return True

    def predict(self, payload: Any, headers: Any = None, response_headers: Any = None) -> Any:
        if isinstance(payload, InferRequest):
            x = payload.inputs[0].as_numpy().astype(np.float32, copy=False)
            y = self.session.run(None, {self.input_name: x})[0]
            out = InferOutput(name="y", shape=list(y.shape), datatype="FP32")
            out.set_data_from_numpy(y, binary_data=bool(payload.use_binary_outputs))
            return InferResponse(
                response_id=payload.id or "", model_name=self.name, infer_outputs=[out],
                use_binary_outputs=bool(payload.use_binary_outputs),
            )  # fmt: skip
        x = np.asarray(payload["instances"], dtype=np.float32)
        y = self.session.run(None, {self.input_name: x})[0]
        return {"predictions": y.tolist()}


if __name__ == "__main__":
    model = OnnxModel("m", sys.argv[1])
    model.load()
    port = int(sys.argv[2])
    server = kserve.ModelServer(http_port=port, grpc_port=port + 1000, enable_grpc=False, enable_latency_logging=False)
    # the constructor configured KServe's logging; quiet the two per-request loggers it sets to INFO
    for name in ("uvicorn.access", "kserve.trace"):
        logging.getLogger(name).setLevel(logging.WARNING)
    server.start([model])
