"""Build the iris example model: 4 float inputs -> 3 class probabilities (a fixed linear layer + softmax).

    python examples/iris/build_model.py model.onnx                      # a local file
    python examples/iris/build_model.py s3://models/iris/1/model.onnx   # uploaded to S3 (boto3)

An s3:// destination is written with boto3 and its usual settings: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_DEFAULT_REGION, and AWS_ENDPOINT_URL for a store other than AWS S3 (MinIO, Ceph, ...), addressed path-style as
the runtime does.

The weights are a small hand-made linear classifier over (sepal length, sepal width, petal length,
petal width); it is a real ONNX model that onnxruntime serves, small enough to build in tests.
Needs the `onnx` package, and `boto3` for S3 (both in modelapi's dev extras).
"""

from __future__ import annotations

import os
import sys

import onnx
from onnx import TensorProto, helper

WEIGHTS = [
    [0.42, 0.10, -0.35],
    [0.96, -0.32, -0.62],
    [-1.36, 0.12, 1.25],
    [-0.62, -0.55, 1.18],
]
BIAS = [0.25, 0.88, -1.13]


def build_iris_model() -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes=[
            helper.make_node("MatMul", ["input", "weights"], ["logits_raw"]),
            helper.make_node("Add", ["logits_raw", "bias"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
        ],
        name="iris",
        inputs=[helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        outputs=[helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3])],
        initializer=[
            helper.make_tensor("weights", TensorProto.FLOAT, [4, 3], [w for row in WEIGHTS for w in row]),
            helper.make_tensor("bias", TensorProto.FLOAT, [3], BIAS),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="modelapi-examples")
    model.ir_version = 8  # readable by every onnxruntime since 1.10
    onnx.checker.check_model(model)
    return model


def upload(body: bytes, uri: str) -> None:
    import boto3  # noqa: PLC0415 - only for an s3:// destination
    from botocore.config import Config  # noqa: PLC0415

    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not bucket or not key:
        raise SystemExit(f"build_model.py: {uri} is not s3://BUCKET/KEY")
    # path-style on a custom endpoint, as the runtime addresses it (virtual hosts need DNS most stores lack)
    config = Config(s3={"addressing_style": "path"}) if os.environ.get("AWS_ENDPOINT_URL") else None
    boto3.client("s3", config=config).put_object(Bucket=bucket, Key=key, Body=body)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: build_model.py OUTPUT.onnx | s3://BUCKET/KEY\n")
        return 2
    body = build_iris_model().SerializeToString()
    if argv[0].startswith("s3://"):
        upload(body, argv[0])
        print(f"uploaded the iris model ({len(body)} bytes) to {argv[0]}")
    else:
        with open(argv[0], "wb") as out:
            out.write(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
