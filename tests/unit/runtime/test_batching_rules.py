"""The batcher's rules on a real event loop: work-conserving, bounded, and safe when a client leaves."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from modelapi_runtime.batching import Batcher, ModelRunner
from modelapi_runtime.exceptions import Overloaded

Inputs = Mapping[str, np.ndarray]


class Model:
    """Doubles its input and records each run's row count; ``gate`` (when set) holds a run until it opens."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.runs: list[int] = []
        self.gate = gate
        self.started = threading.Event()

    def __call__(self, inputs: Inputs) -> dict[str, np.ndarray]:
        self.runs.append(len(inputs["x"]))
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(5)
        return {"y": inputs["x"] * 2}


def row(value: float, rows: int = 1) -> dict[str, np.ndarray]:
    return {"x": np.full((rows, 2), value, dtype=np.float32)}


@pytest.fixture
async def executor() -> AsyncIterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(1)
    yield pool
    pool.shutdown(wait=True)


async def started(batcher: Batcher) -> Batcher:
    batcher.start()
    await asyncio.sleep(0)  # the worker is waiting
    return batcher


async def test_a_lone_request_runs_at_once_not_after_the_window() -> None:
    model = Model()
    batcher = await started(Batcher(ModelRunner(model, None, lambda n: None), max_batch_size=16, max_latency_s=2.0))
    try:
        t0 = time.perf_counter()
        out, timing = await batcher.submit(row(1.5), 1)
        waited = time.perf_counter() - t0
    finally:
        await batcher.stop()
    np.testing.assert_array_equal(out["y"], [[3, 3]])
    assert waited < 0.5, f"a lone request waited {waited:.3f} s for company"
    assert timing.queue_s < 0.5
    assert model.runs == [1]


async def test_requests_that_arrive_together_run_as_one_batch() -> None:
    model = Model()
    batcher = await started(Batcher(ModelRunner(model, None, lambda n: None), max_batch_size=16, max_latency_s=2.0))
    try:
        results = await asyncio.gather(*(batcher.submit(row(v), 1) for v in range(8)))
    finally:
        await batcher.stop()
    assert model.runs == [8]
    for v, (out, _) in enumerate(results):
        np.testing.assert_array_equal(out["y"], [[2 * v, 2 * v]])


async def test_a_batch_never_exceeds_max_batch_size() -> None:
    model = Model()
    batcher = await started(Batcher(ModelRunner(model, None, lambda n: None), max_batch_size=4, max_latency_s=2.0))
    try:
        sizes = [1, 2, 2, 1, 3, 1]  # 10 rows: a request that does not fit starts the next batch
        results = await asyncio.gather(*(batcher.submit(row(v, n), n) for v, n in enumerate(sizes)))
    finally:
        await batcher.stop()
    assert model.runs == [3, 3, 4]
    for v, ((out, _), n) in enumerate(zip(results, sizes, strict=True)):
        assert out["y"].shape == (n, 2)
        assert (out["y"] == 2 * v).all()


async def test_requests_arriving_while_the_model_is_busy_form_the_next_batch(executor: ThreadPoolExecutor) -> None:
    gate = threading.Event()
    model = Model(gate)
    runner = ModelRunner(model, executor, lambda n: None)
    batcher = await started(Batcher(runner, max_batch_size=16, max_latency_s=5.0))
    try:
        first = asyncio.ensure_future(batcher.submit(row(1), 1))
        assert await asyncio.to_thread(model.started.wait, 5)  # dispatched alone, at once: the model is busy
        later = [asyncio.ensure_future(batcher.submit(row(v), 1)) for v in (2, 3, 4)]
        await asyncio.sleep(0.05)
        assert model.runs == [1]  # still held by the gate: the three wait for the model
        gate.set()
        await asyncio.gather(first, *later)
    finally:
        gate.set()
        await batcher.stop()
    assert model.runs == [1, 3]


async def test_the_window_closes_a_batch_that_waits_for_a_busy_model(executor: ThreadPoolExecutor) -> None:
    gate = threading.Event()
    model = Model(gate)
    batcher = await started(
        Batcher(ModelRunner(model, executor, lambda n: None), max_batch_size=16, max_latency_s=0.05)
    )
    try:
        first = asyncio.ensure_future(batcher.submit(row(1), 1))
        assert await asyncio.to_thread(model.started.wait, 5)
        early = [asyncio.ensure_future(batcher.submit(row(v), 1)) for v in (2, 3)]
        await asyncio.sleep(0.2)  # past the window: the batch of two is closed
        late = asyncio.ensure_future(batcher.submit(row(4), 1))
        await asyncio.sleep(0.01)
        gate.set()
        await asyncio.gather(first, *early, late)
    finally:
        gate.set()
        await batcher.stop()
    assert model.runs == [1, 2, 1]


async def test_a_request_whose_client_left_is_dropped_and_the_others_answered(executor: ThreadPoolExecutor) -> None:
    gate = threading.Event()
    model = Model(gate)
    batcher = await started(Batcher(ModelRunner(model, executor, lambda n: None), max_batch_size=16, max_latency_s=5.0))
    try:
        first = asyncio.ensure_future(batcher.submit(row(1), 1))
        assert await asyncio.to_thread(model.started.wait, 5)
        gone = asyncio.ensure_future(batcher.submit(row(2), 1))
        stays = asyncio.ensure_future(batcher.submit(row(3), 1))
        await asyncio.sleep(0.01)
        gone.cancel()  # the client left while waiting
        gate.set()
        (out, _), (first_out, _) = await stays, await first
    finally:
        gate.set()
        await batcher.stop()
    assert gone.cancelled()
    np.testing.assert_array_equal(out["y"], [[6, 6]])
    np.testing.assert_array_equal(first_out["y"], [[2, 2]])
    assert model.runs == [1, 1]  # the one that left never ran


async def test_stop_answers_the_running_batch_and_refuses_the_waiting_ones(executor: ThreadPoolExecutor) -> None:
    gate = threading.Event()
    model = Model(gate)
    batcher = await started(Batcher(ModelRunner(model, executor, lambda n: None), max_batch_size=16, max_latency_s=5.0))
    first = asyncio.ensure_future(batcher.submit(row(1), 1))
    assert await asyncio.to_thread(model.started.wait, 5)
    waiting = asyncio.ensure_future(batcher.submit(row(2), 1))
    await asyncio.sleep(0.01)
    stopping = asyncio.ensure_future(batcher.stop())
    await asyncio.sleep(0.01)
    gate.set()
    await asyncio.wait_for(stopping, 5)
    (out, _) = await first
    np.testing.assert_array_equal(out["y"], [[2, 2]])
    with pytest.raises(Overloaded):
        await waiting
    assert model.runs == [1]


async def test_fill_when_idle_holds_an_idle_models_batch_open_for_the_window_then_runs_what_came() -> None:
    """Opt-in: the window applies with the model idle too, so requests 50 ms apart share one run; a lone one waits."""
    model = Model()
    runner = ModelRunner(model, None, lambda n: None)
    batcher = await started(Batcher(runner, max_batch_size=16, max_latency_s=0.3, fill_when_idle=True))
    try:
        t0 = time.perf_counter()
        first = asyncio.ensure_future(batcher.submit(row(1), 1))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(batcher.submit(row(2), 1))
        (out1, timing1), (out2, _) = await asyncio.gather(first, second)
        together = time.perf_counter() - t0
        t1 = time.perf_counter()
        await batcher.submit(row(3), 1)
        alone = time.perf_counter() - t1
        full = await asyncio.gather(*(batcher.submit(row(v), 1) for v in range(16)))  # full: runs before the window
    finally:
        await batcher.stop()
    assert model.runs == [2, 1, 16]
    np.testing.assert_array_equal(out1["y"], [[2, 2]])
    np.testing.assert_array_equal(out2["y"], [[4, 4]])
    assert 0.25 <= together < 2.0, f"the first batch ran after {together:.3f} s, not at the 0.3 s window"
    assert timing1.queue_s >= 0.25
    assert 0.25 <= alone < 2.0, f"a lone request ran after {alone:.3f} s, not at the window"
    assert len(full) == 16


async def test_an_output_that_is_not_per_row_makes_each_request_run_alone() -> None:
    """A merged run whose outputs cannot be split back by rows (here a total over the batch): every request of the
    batch runs again alone and gets its own answer, never a share of its batch-mates'."""
    runs: list[int] = []

    def total(inputs: Inputs) -> dict[str, np.ndarray]:
        runs.append(len(inputs["x"]))
        return {"y": inputs["x"] * 2, "total": np.asarray(inputs["x"].sum())}

    batcher = await started(Batcher(ModelRunner(total, None, lambda n: None), max_batch_size=8, max_latency_s=0.05))
    try:
        results = await asyncio.gather(*(batcher.submit(row(v), 1) for v in (1.0, 2.0, 3.0)))
    finally:
        await batcher.stop()
    assert runs == [3, 1, 1, 1]  # merged, then each alone
    for value, (out, _) in zip((1.0, 2.0, 3.0), results, strict=True):
        np.testing.assert_array_equal(out["y"], [[2 * value, 2 * value]])
        assert float(out["total"]) == 2 * value
