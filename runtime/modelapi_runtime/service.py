"""The data plane: admission -> decode -> (batch) -> predict -> encode, timed per phase.

Knows nothing about HTTP: it takes bytes and returns bytes, raising :mod:`exceptions` types that
:mod:`errors` maps to status codes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from modelapi_runtime import codec
from modelapi_runtime.batching import Batcher, ModelRunner, Timing
from modelapi_runtime.exceptions import InvalidInput, Overloaded
from modelapi_runtime.handler import Handler
from modelapi_runtime.metrics import Metrics
from modelapi_runtime.model import Model
from modelapi_runtime.tensors import Array

# Below this per-run time the model runs on the event loop: a hop to a worker thread and back
# costs tens of microseconds, more than a small MLP's whole run, and a sub-millisecond block
# never starves health probes.
INLINE_BELOW_S = 0.001

JSON = b"application/json"
OCTETS = b"application/octet-stream"


@dataclass(slots=True)
class Reply:
    body: bytes
    content_type: bytes = JSON
    header_length: int | None = None  # v2 binary extension: Inference-Header-Content-Length


class InferenceService:
    def __init__(
        self,
        model: Model,
        metrics: Metrics,
        *,
        name: str,
        version: str = "",
        handler: Handler | None = None,
        max_batch_size: int = 1,
        max_latency_s: float = 0.005,
        max_queue: int = 256,
        steady_run_s: float = 0.0,
    ) -> None:
        self.model = model
        self.metrics = metrics
        self.name = name
        self.version = version
        self.handler = handler
        self.max_queue = max_queue
        self.inflight = 0
        inline = model.device == "cpu" and steady_run_s < INLINE_BELOW_S
        self._executor = None if inline else ThreadPoolExecutor(1, thread_name_prefix="infer")
        self._runner = ModelRunner(model.run, self._executor, metrics.batch_size.observe)
        self._batcher = (
            Batcher(self._runner, max_batch_size, max_latency_s) if max_batch_size > 1 and model.batchable else None
        )

    @property
    def batching(self) -> bool:
        return self._batcher is not None

    @property
    def inline(self) -> bool:
        return self._executor is None

    @property
    def never_waits(self) -> bool:
        """No batcher and no worker thread: ``infer_v1``/``infer_v2`` finish without suspending, so a
        caller may run their coroutines to completion in one step (no task; see ``http_protocol``)."""
        return self._batcher is None and self._runner.inline

    async def start(self) -> None:
        if self._batcher is not None:
            self._batcher.start()

    async def stop(self) -> None:
        if self._batcher is not None:
            await self._batcher.stop()
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    def admit(self) -> None:
        """Bound the work in progress: beyond ``max_queue`` a request is refused at once (503)."""
        if self.inflight >= self.max_queue:
            raise Overloaded(f"{self.inflight} requests in progress (max {self.max_queue}); retry shortly")
        self.inflight += 1
        self.metrics.inflight.inc()

    def release(self) -> None:
        self.inflight -= 1
        self.metrics.inflight.dec()

    async def _predict(self, inputs: Mapping[str, Array], rows: int | None) -> tuple[dict[str, Array], Timing]:
        if self._batcher is not None:
            if rows is not None and 0 < rows <= self._batcher.max_batch_size:
                return await self._batcher.submit(inputs, rows)
        elif self._runner.inline:  # no batcher, no worker thread: nothing to await
            outputs, seconds = self._runner.run_inline(inputs, rows or 1)
            return outputs, Timing(0.0, seconds)
        outputs, seconds = await self._runner(inputs, rows or 1)
        return outputs, Timing(0.0, seconds)

    def _preprocessed(self, payload: dict[str, Any]) -> codec.Decoded:
        assert self.handler is not None
        inputs = codec.check_inputs(self.handler.preprocess(payload), self.model.inputs)
        return codec.Decoded(inputs=inputs, rows=_rows(inputs, self.model), payload=payload)

    def _postprocessed(self, outputs: dict[str, Array], payload: dict[str, Any]) -> bytes:
        assert self.handler is not None
        return codec.dumps_handler_result(self.handler.postprocess(outputs, payload))

    async def infer_v1(self, body: bytes) -> Reply:
        m = self.metrics
        t0 = time.perf_counter()
        payload = codec.parse_json(body)
        if self.handler is not None and self.handler.has_preprocess:
            decoded = self._preprocessed(payload)
        else:
            decoded = codec.decode_v1(payload, self.model.inputs)
        t1 = time.perf_counter()
        outputs, timing = await self._predict(decoded.inputs, decoded.rows)
        t2 = time.perf_counter()
        if self.handler is not None and self.handler.has_postprocess:
            out = self._postprocessed(outputs, payload)
        else:
            out = codec.encode_v1(outputs, self.model.output_names)
        m.observe_phases(t1 - t0, timing.queue_s, timing.infer_s, time.perf_counter() - t2)
        return Reply(out)

    async def infer_v2(self, body: bytes, header_length: str | None) -> Reply:
        m = self.metrics
        t0 = time.perf_counter()
        head, binary = codec.split_binary(body, header_length)
        payload = codec.parse_json(head)
        preprocess = self.handler is not None and self.handler.has_preprocess
        decoded = codec.decode_v2(payload, binary, self.model.inputs, strict=not preprocess)
        if preprocess:
            decoded = self._preprocessed(payload | {"inputs": _v2_inputs(payload, decoded)})
        t1 = time.perf_counter()
        outputs, timing = await self._predict(decoded.inputs, decoded.rows)
        t2 = time.perf_counter()
        if self.handler is not None and self.handler.has_postprocess:
            reply = Reply(self._postprocessed(outputs, decoded.payload))
        else:
            names = decoded.outputs if decoded.outputs is not None else self.model.output_names
            unknown = [n for n in names if n not in outputs]
            if unknown:
                raise InvalidInput(f"unknown outputs {unknown}; the model has {self.model.output_names}")
            data, header_len = codec.encode_v2(
                outputs,
                names,
                model_name=self.name,
                model_version=self.version,
                request_id=decoded.request_id,
                binary=decoded.binary,
            )
            reply = Reply(data, OCTETS if header_len is not None else JSON, header_len)
        m.observe_phases(t1 - t0, timing.queue_s, timing.infer_s, time.perf_counter() - t2)
        return reply

    def metadata(self) -> dict[str, Any]:
        def tensor(s: Any) -> dict[str, Any]:
            return {"name": s.name, "datatype": s.datatype, "shape": s.metadata_shape()}

        meta: dict[str, Any] = {
            "name": self.name,
            "platform": "onnxruntime",
            "inputs": [tensor(s) for s in self.model.inputs],
            "outputs": [tensor(s) for s in self.model.outputs],
        }
        if self.version:
            meta["versions"] = [self.version]
        return meta


def _rows(inputs: Mapping[str, Array], model: Model) -> int | None:
    sizes = {a.shape[0] for a in inputs.values() if a.ndim}
    return sizes.pop() if model.batchable and len(sizes) == 1 else None


def _v2_inputs(payload: dict[str, Any], decoded: codec.Decoded) -> list[dict[str, Any]]:
    """For a preprocess handler, each v2 input keeps its fields and its "data" becomes the decoded,
    shaped numpy array (so JSON and binary-extension requests look the same to the handler)."""
    return [{**item, "data": decoded.inputs[item["name"]]} for item in payload["inputs"]]
