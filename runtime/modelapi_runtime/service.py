"""The data plane: admission -> decode -> (batch) -> predict -> encode, timed per phase.

Knows nothing about HTTP: it takes bytes and returns bytes, raising :mod:`exceptions` types that
:mod:`errors` maps to status codes.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from modelapi_runtime import codec
from modelapi_runtime.batching import Batcher, ModelRunner, Timing
from modelapi_runtime.exceptions import InvalidInput, Overloaded
from modelapi_runtime.fast_json import NumericV1Decoder
from modelapi_runtime.handler import Handler
from modelapi_runtime.metrics import Metrics
from modelapi_runtime.model import Model
from modelapi_runtime.tensors import Array
from modelapi_runtime.tracing import RequestTrace, Tracer

# Below this per-run time the model runs on the event loop: a hop to a worker thread and back
# costs tens of microseconds, more than a small MLP's whole run, and a sub-millisecond block
# never starves health probes.
INLINE_BELOW_S = 0.001
# Above this body size, decoding, the model run and encoding leave the event loop for a worker thread, so health
# probes and small requests are answered meanwhile (a 16 MiB JSON body takes seconds to decode).
OFFLOAD_ABOVE_BYTES = 256 * 1024

T = TypeVar("T")

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
        max_json_values: int | None = None,
        max_tensor_elements: int = 2**31 - 1,
        fill_when_idle: bool = False,
        tracer: Tracer | None = None,
    ) -> None:
        self.model = model
        self.metrics = metrics
        self.name = name
        self.version = version
        self.handler = handler
        self.max_queue = max_queue
        self.max_json_values = max_json_values
        self.max_tensor_elements = max_tensor_elements
        self.inflight = 0
        # v2 binary requests: decoding remembered per header (not with a handler: it sees and may change the payload)
        self._binary_headers = (
            None
            if handler is not None
            else codec.BinaryHeaders(model.inputs, max_elements=max_tensor_elements, max_values=max_json_values)
        )
        # v1 bodies of numbers: decoded without a Python object per number (on the loop only: small bodies)
        self._numeric_v1 = (
            NumericV1Decoder(model.inputs[0], max_bytes=OFFLOAD_ABOVE_BYTES, max_values=max_json_values)
            if NumericV1Decoder.applies_to(model.inputs, handler is not None)
            else None
        )
        self._inflight_gauge = metrics.inflight
        # large bodies are decoded here, one at a time (threads start on first use)
        self._offload = ThreadPoolExecutor(1, thread_name_prefix="decode")
        inline = model.device == "cpu" and steady_run_s < INLINE_BELOW_S
        self._executor = None if inline else ThreadPoolExecutor(1, thread_name_prefix="infer")
        self._runner = ModelRunner(model.run, self._executor, metrics.batch_size.observe)
        self._batcher = (
            Batcher(self._runner, max_batch_size, max_latency_s, fill_when_idle=fill_when_idle, tracer=tracer)
            if max_batch_size > 1 and model.batchable
            else None
        )
        # No batcher and no worker thread: ``infer_v1``/``infer_v2`` on a body up to OFFLOAD_ABOVE_BYTES finish
        # without suspending, so a caller may run their coroutines to completion in one step (no task; see
        # ``http_protocol``). An attribute, not a property: read once per request.
        self.never_waits = self._batcher is None and self._runner.inline

    @property
    def batching(self) -> bool:
        return self._batcher is not None

    @property
    def inline(self) -> bool:
        return self._executor is None

    async def start(self) -> None:
        if self._batcher is not None:
            self._batcher.start()

    async def stop(self) -> None:
        if self._batcher is not None:
            await self._batcher.stop()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self._offload.shutdown(wait=True)

    def admit(self) -> None:
        """Bound the work in progress: beyond ``max_queue`` a request is refused at once (503). Called once the
        request's body is complete: a client still sending (or stalled) holds no slot."""
        if self.inflight >= self.max_queue:
            raise Overloaded(f"{self.inflight} requests in progress (max {self.max_queue}); retry shortly")
        self.inflight += 1
        self._inflight_gauge.value += 1

    def release(self) -> None:
        self.inflight -= 1
        self._inflight_gauge.value -= 1

    async def _off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the decode thread (for a large request)."""
        return await asyncio.get_running_loop().run_in_executor(self._offload, fn, *args)

    async def _predict(
        self, inputs: Mapping[str, Array], rows: int | None, big: bool = False, trace: RequestTrace | None = None
    ) -> tuple[dict[str, Array], Timing]:
        if big:  # never inline on the loop, never held up in a batch
            outputs, seconds = await self._runner.run_in(self._executor or self._offload, inputs, rows or 1)
            return outputs, Timing(0.0, seconds)
        if self._batcher is not None:
            if rows is not None and 0 < rows <= self._batcher.max_batch_size:
                return await self._batcher.submit(inputs, rows, trace)
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

    def _decode_v1(self, body: bytes) -> codec.Decoded:
        return codec.decode_v1(codec.parse_json(body, self.max_json_values), self.model.inputs)

    async def infer_v1(self, body: bytes, trace: RequestTrace | None = None) -> Reply:
        m = self.metrics
        big = len(body) > OFFLOAD_ABOVE_BYTES
        t0 = time.perf_counter()
        if self.handler is not None and self.handler.has_preprocess:  # the handler runs on the loop, as always
            if big:
                payload = await self._off_loop(codec.parse_json, body, self.max_json_values)
            else:
                payload = codec.parse_json(body, self.max_json_values)
            decoded = self._preprocessed(payload)
        else:
            if big:
                decoded = await self._off_loop(self._decode_v1, body)
            else:
                numeric = self._numeric_v1.decode(body) if self._numeric_v1 is not None else None
                if numeric is not None:  # a body of numbers (the common case)
                    decoded = numeric
                else:
                    decoded = codec.decode_v1(codec.parse_json(body, self.max_json_values), self.model.inputs)
            payload = decoded.payload
        t1 = time.perf_counter()
        if self.never_waits and not big:  # on the loop, nothing to await: timed by t1 and t2
            outputs = self._runner.run_untimed(decoded.inputs, decoded.rows or 1)
            t2 = time.perf_counter()
            queue_s, infer_s = 0.0, t2 - t1
        else:
            outputs, timing = await self._predict(decoded.inputs, decoded.rows, big, trace)
            t2 = time.perf_counter()
            queue_s, infer_s = timing.queue_s, timing.infer_s
        if self.handler is not None and self.handler.has_postprocess:
            out = self._postprocessed(outputs, payload)
        else:
            names = self.model.output_names
            out = await self._off_loop(codec.encode_v1, outputs, names) if big else codec.encode_v1(outputs, names)
        t3 = time.perf_counter()
        m.observe_phases(t1 - t0, queue_s, infer_s, t3 - t2)
        if trace is not None:
            trace.phases(t0, t1, queue_s, infer_s, t2, t3, decoded.rows or 1)
        return Reply(out)

    def _decode_v2(self, body: bytes, header_length: str | None, strict: bool) -> codec.Decoded:
        head, binary = codec.split_binary(body, header_length)
        payload = codec.parse_json(head, self.max_json_values)
        return codec.decode_v2(payload, binary, self.model.inputs, strict=strict, max_elements=self.max_tensor_elements)

    async def infer_v2(self, body: bytes, header_length: str | None, trace: RequestTrace | None = None) -> Reply:
        m = self.metrics
        big = len(body) > OFFLOAD_ABOVE_BYTES
        t0 = time.perf_counter()
        preprocess = self.handler is not None and self.handler.has_preprocess
        if big:
            decoded = await self._off_loop(self._decode_v2, body, header_length, not preprocess)
        else:
            head, binary = codec.split_binary(body, header_length)
            if binary is not None and self._binary_headers is not None:
                decoded = self._binary_headers.decode(head, binary)
            else:
                payload = codec.parse_json(head, self.max_json_values)
                decoded = codec.decode_v2(
                    payload, binary, self.model.inputs, strict=not preprocess, max_elements=self.max_tensor_elements
                )
        if preprocess:
            payload = decoded.payload
            decoded = self._preprocessed(payload | {"inputs": _v2_inputs(payload, decoded)})
        t1 = time.perf_counter()
        if self.never_waits and not big:  # on the loop, nothing to await: timed by t1 and t2
            outputs = self._runner.run_untimed(decoded.inputs, decoded.rows or 1)
            t2 = time.perf_counter()
            queue_s, infer_s = 0.0, t2 - t1
        else:
            outputs, timing = await self._predict(decoded.inputs, decoded.rows, big, trace)
            t2 = time.perf_counter()
            queue_s, infer_s = timing.queue_s, timing.infer_s
        if self.handler is not None and self.handler.has_postprocess:
            reply = Reply(self._postprocessed(outputs, decoded.payload))
        else:
            names = decoded.outputs if decoded.outputs is not None else self.model.output_names
            unknown = [n for n in names if n not in outputs]
            if unknown:
                raise InvalidInput(f"unknown outputs {unknown}; the model has {self.model.output_names}")
            if big:
                encode = functools.partial(
                    codec.encode_v2,
                    model_name=self.name,
                    model_version=self.version,
                    request_id=decoded.request_id,
                    binary=decoded.binary,
                )
                data, header_len = await self._off_loop(encode, outputs, names)
            else:
                data, header_len = codec.encode_v2(
                    outputs,
                    names,
                    model_name=self.name,
                    model_version=self.version,
                    request_id=decoded.request_id,
                    binary=decoded.binary,
                )
            reply = Reply(data, OCTETS if header_len is not None else JSON, header_len)
        t3 = time.perf_counter()
        m.observe_phases(t1 - t0, queue_s, infer_s, t3 - t2)
        if trace is not None:
            trace.phases(t0, t1, queue_s, infer_s, t2, t3, decoded.rows or 1)
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
