"""Dynamic batching: concurrent requests merged along the first axis, results split back.

Work-conserving: a request that finds the model idle runs at once, with whatever else is waiting (up to
``max_batch_size`` rows); a lone request is never held back for company. Requests that arrive while a batch runs
form the next batch, which starts as soon as the model is free. The window (``max_latency_s``) only caps how long
that next batch stays open while the model is busy: once its first request has waited that long it closes, and
later arrivals form the one after. A model run on the event loop (fast models) is never busy while requests arrive,
so there every batch is what arrived during the previous run's loop turn.

``fill_when_idle`` (opt-in) applies the window even when the model is idle: a batch waits up to ``max_latency_s``
from its first request to fill, as an accelerator that runs a full batch in the time of one may prefer; at low load
every request then waits the window.

Requests whose inputs differ in dtype or in the non-batch dimensions are run as separate groups. When a merged run
fails, each request of the group is retried alone, so one bad request never fails its batch-mates. A request whose
client left (its future cancelled) is dropped before its batch runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from modelapi_runtime.exceptions import InferenceFailed, Overloaded
from modelapi_runtime.tensors import Array
from modelapi_runtime.tracing import RequestTrace, Tracer

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
    trace: RequestTrace | None = None  # a sampled request (tracing on): told which batch run it was part of

    @property
    def key(self) -> tuple[tuple[str, np.dtype[np.generic], tuple[int, ...]], ...]:
        """Requests with equal keys can be merged: the same inputs, dtypes and non-batch dimensions. (A list, not a
        generator, and the dtype itself, not its ``str``: about half the cost, once per request; a model with one
        input, the common case, skips the sort.)"""
        inputs = self.inputs
        if len(inputs) == 1:
            for k, v in inputs.items():
                return ((k, v.dtype, v.shape[1:]),)
        return tuple([(k, v.dtype, v.shape[1:]) for k, v in sorted(inputs.items())])


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

    def run_untimed(self, inputs: Mapping[str, Array], rows: int) -> dict[str, Array]:
        """:meth:`run_inline` for a caller that times the run itself."""
        self._observe_batch(rows)
        return self._run(inputs)

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
    """One worker task takes the waiting requests in batches and runs them (see the module's docstring)."""

    def __init__(
        self,
        execute: ModelRunner,
        max_batch_size: int,
        max_latency_s: float,
        *,
        fill_when_idle: bool = False,
        tracer: Tracer | None = None,
    ) -> None:
        self._execute = execute
        self._tracer = tracer  # on: a model run with a sampled request in it is a span of its own
        self.max_batch_size = max_batch_size
        self.max_latency_s = max_latency_s
        self.fill_when_idle = fill_when_idle  # the window applies even when the model is idle (opt-in)
        self._waiting: deque[_Item] = deque()
        self._wakeup: asyncio.Future[None] | None = None  # the worker sleeps on it; submit and a finished run wake it
        self._running: asyncio.Task[None] | None = None  # the batch running off the loop (model busy)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._worker(), name="modelapi-batcher")

    async def stop(self) -> None:
        """Stop the worker; a batch still running finishes, requests still waiting are refused (503)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._running is not None:
            await asyncio.wait({self._running})  # the batch on the model thread finishes and is answered
            self._running = None
        while self._waiting:
            item = self._waiting.popleft()
            if not item.future.done():
                item.future.set_exception(Overloaded("the server is stopping; retry on another replica"))

    async def submit(
        self, inputs: Mapping[str, Array], rows: int, trace: RequestTrace | None = None
    ) -> tuple[dict[str, Array], Timing]:
        item = _Item(inputs, rows, asyncio.get_running_loop().create_future(), time.perf_counter(), trace=trace)
        self._waiting.append(item)
        self._wake()
        return await item.future, item.timing

    def _wake(self, _done: object = None) -> None:
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    async def _sleep(self, timeout: float | None) -> None:
        """Until a request arrives or a run ends (or ``timeout`` seconds pass)."""
        wakeup = self._wakeup = asyncio.get_running_loop().create_future()
        try:
            if timeout is None:
                await wakeup
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wakeup, timeout)
        finally:
            self._wakeup = None

    def _busy(self) -> bool:
        return self._running is not None and not self._running.done()

    def _take(self, batch: list[_Item], rows: int) -> int:
        """Move waiting requests into ``batch`` while they fit in ``max_batch_size`` rows; the new row count."""
        waiting = self._waiting
        while waiting:
            item = waiting[0]
            if item.future.done():  # the client left while it waited
                waiting.popleft()
                continue
            if batch and rows + item.rows > self.max_batch_size:
                break  # starts the next batch
            batch.append(waiting.popleft())
            rows += item.rows
        return rows

    async def _worker(self) -> None:
        batch: list[_Item] = []
        try:
            while True:
                rows = self._take(batch, 0)
                if not batch:
                    await self._sleep(None)
                    continue
                if self._busy() or self.fill_when_idle:  # the batch stays open for more, at most the window
                    closes = batch[0].enqueued + self.max_latency_s
                    while rows < self.max_batch_size and (self._busy() or self.fill_when_idle):
                        left = closes - time.perf_counter()
                        if left <= 0:
                            break
                        await self._sleep(left)
                        rows = self._take(batch, rows)
                    while self._busy():  # closed: it runs once the model is free
                        await self._sleep(None)
                taken, batch = batch, []
                if self._execute.inline:
                    await self._run_batch(taken)
                else:
                    running = self._running = asyncio.get_running_loop().create_task(self._run_batch(taken))
                    running.add_done_callback(self._wake)
        finally:  # stopped: a batch not yet dispatched goes back to the front of the line (stop refuses it)
            self._waiting.extendleft(reversed(batch))

    async def _run_batch(self, batch: list[_Item]) -> None:
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
            if self._tracer is None:
                outputs, seconds = await self._execute(merged, total)
            else:
                outputs, seconds = await self._run_traced(group, merged, total)
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

    async def _run_traced(
        self, items: list[_Item], inputs: Mapping[str, Array], rows: int
    ) -> tuple[dict[str, Array], float]:
        """One model run for ``items`` with tracing on: a ``batch`` span when one of them is sampled."""
        tracer = self._tracer
        if tracer is None or all(item.trace is None for item in items):
            return await self._execute(inputs, rows)
        run = tracer.batch_run(rows)
        failed = True
        try:
            result = await self._execute(inputs, rows)
            failed = False
        finally:
            tracer.finish_batch(run, failed)
            for item in items:
                if item.trace is not None:
                    item.trace.batch = run
        return result

    async def _run_alone(self, item: _Item) -> None:
        try:
            if self._tracer is None:
                outputs, seconds = await self._execute(item.inputs, item.rows)
            else:
                outputs, seconds = await self._run_traced([item], item.inputs, item.rows)
        except Exception as exc:
            if not item.future.done():
                item.future.set_exception(
                    exc if isinstance(exc, InferenceFailed) else InferenceFailed(f"inference failed: {exc}")
                )
            return
        item.timing.infer_s = seconds
        if not item.future.done():
            item.future.set_result(outputs)
