"""Peer: the plain FastAPI wrapper a data scientist writes around the same onnxruntime session.

Usage: python plain_fastapi.py MODEL.onnx PORT
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import onnxruntime as ort
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel


class V1Request(BaseModel):
    instances: list[list[float]]


class V2Input(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[float]


class V2Request(BaseModel):
    inputs: list[V2Input]


def make_app(path: str) -> FastAPI:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    app = FastAPI()

    @app.post("/v1/models/m:predict")
    def predict(req: V1Request) -> dict[str, Any]:
        y = session.run(None, {input_name: np.asarray(req.instances, dtype=np.float32)})[0]
        return {"predictions": y.tolist()}

    @app.post("/v2/models/m/infer")
    def infer(req: V2Request) -> dict[str, Any]:
        i = req.inputs[0]
        x = np.asarray(i.data, dtype=np.float32).reshape(i.shape)
        y = session.run(None, {input_name: x})[0]
        return {
            "model_name": "m",
            "outputs": [{"name": "y", "datatype": "FP32", "shape": list(y.shape), "data": y.ravel().tolist()}],
        }

    return app


if __name__ == "__main__":
    uvicorn.run(make_app(sys.argv[1]), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning",
                access_log=False, http="httptools", loop="uvloop")  # fmt: skip
