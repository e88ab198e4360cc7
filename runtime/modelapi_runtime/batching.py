"""Dynamic batching: concurrent requests merged along the first axis, results split back.

A worker task takes the first waiting request, then gathers more until ``max_batch_size`` rows or
``max_latency`` has passed since that first one. Requests whose inputs differ in dtype or in the
non-batch dimensions are run as separate groups. When a merged run fails, each request of the group
is retried alone, so one bad request never fails its batch-mates.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from modelapi_runtime.exceptions import InferenceFailed
from modelapi_runtime.tensors import Array

RunFn = Callable[[Mapping[str, Array]], dict[str, Array]]


@dataclass(slots=True)
class Timing:
    queue_s: float = 0.0
    infer_s: float = 0.0


@dataclass(slots=True)
class _Item:
    inputs: Mapping[str, Array]
    rows: int
    future: asyncio.Future[dict[str, Array]]
    enqueued: float
    timing: Timing = field(default_factory=Timing)

    @property
    def key(self) -> tuple[tuple[str, str, tuple[int, ...]], ...]:
        return tuple((k, v.dtype.str, v.shape[1:]) for k, v in sorted(self.inputs.items()))


class ModelRunner:
    """Runs the model inline (fast models: a thread hop costs more than the run) or in one thread."""

    def __init__(self, run: RunFn, executor: Executor | None, observe_batch: Callable[[int], None]) -> None:
        self._run = run
        self._executor = executor
        self._observe_batch = observe_batch

    @property
    def inline(self) -> bool:
        return self._executor is None

    def run_inline(self, inputs: Mapping[str, Array], rows: int) -> tuple[dict[str, Array], float]:
        """The model on the calling thread (the event loop): no await, for the fast models only."""
        self._observe_batch(rows)
        started = time.perf_counter()
        result = self._run(inputs)
        return result, time.perf_counter() - started

    async def __call__(self, inputs: Mapping[str, Array], rows: int) -> tuple[dict[str, Array], float]:
        if self._executor is None:
            return self.run_inline(inputs, rows)
        return await self.run_in(self._executor, inputs, rows)

    async def run_in(
        self, executor: Executor, inputs: Mapping[str, Array], rows: int
    ) -> tuple[dict[str, Array], float]:
        """The model in ``executor``'s thread (the metric is still observed on the loop)."""
        self._observe_batch(rows)
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(executor, self._run, inputs)
        return result, time.perf_counter() - started


class Batcher:
    def __init__(self, execute: ModelRunner, max_batch_size: int, max_latency_s: float) -> None:
        self._execute = execute
        self.max_batch_size = max_batch_size
        self.max_latency_s = max_latency_s
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._carry: _Item | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._worker(), name="modelapi-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def submit(self, inputs: Mapping[str, Array], rows: int) -> tuple[dict[str, Array], Timing]:
        loop = asyncio.get_running_loop()
        item = _Item(inputs, rows, loop.create_future(), time.perf_counter())
        self._queue.put_nowait(item)
        return await item.future, item.timing

    async def _next(self, timeout: float | None) -> _Item | None:
        if self._carry is not None:
            item, self._carry = self._carry, None
            return item
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            if timeout is not None and timeout <= 0:
                return None
        if timeout is None:
            return await self._queue.get()
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return None

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self._next(None)
            assert first is not None
            batch, rows = [first], first.rows
            deadline = loop.time() + self.max_latency_s
            while rows < self.max_batch_size:
                item = await self._next(deadline - loop.time())
                if item is None:
                    break
                if rows + item.rows > self.max_batch_size:
                    self._carry = item  # starts the next batch
                    break
                batch.append(item)
                rows += item.rows
            groups: dict[object, list[_Item]] = {}
            for item in batch:
                if not item.future.done():  # the client may have gone
                    groups.setdefault(item.key, []).append(item)
            for group in groups.values():
                await self._run_group(group)

    async def _run_group(self, group: list[_Item]) -> None:
        started = time.perf_counter()
        for item in group:
            item.timing.queue_s = started - item.enqueued
        if len(group) == 1:
            await self._run_alone(group[0])
            return
        names = list(group[0].inputs)
        merged = {n: np.concatenate([item.inputs[n] for item in group]) for n in names}
        total = sum(item.rows for item in group)
        try:
            outputs, seconds = await self._execute(merged, total)
        except Exception:
            for item in group:  # isolate the culprit: everyone else still gets an answer
                await self._run_alone(item)
            return
        offset = 0
        for item in group:
            end = offset + item.rows
            part = {}
            for name, value in outputs.items():
                if value.ndim == 0 or value.shape[0] != total:
                    # An output that is not per-row cannot be split back: run alone instead.
                    await self._run_alone(item)
                    break
                part[name] = value[offset:end]
            else:
                item.timing.infer_s = seconds
                if not item.future.done():
                    item.future.set_result(part)
            offset = end

    async def _run_alone(self, item: _Item) -> None:
        try:
            outputs, seconds = await self._execute(item.inputs, item.rows)
        except Exception as exc:
            if not item.future.done():
                item.future.set_exception(
                    exc if isinstance(exc, InferenceFailed) else InferenceFailed(f"inference failed: {exc}")
                )
            return
        item.timing.infer_s = seconds
        if not item.future.done():
            item.future.set_result(outputs)
