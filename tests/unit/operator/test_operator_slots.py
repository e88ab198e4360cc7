"""The reconcile slots: a bound on concurrent reconciles, and a new ModelAPI's first reconcile served first."""

from __future__ import annotations

import asyncio

from modelapi_operator.slots import ReconcileSlots


async def _run(slots: ReconcileSlots, name: str, first: bool, order: list[str], gate: asyncio.Event) -> None:
    async with slots.held(first=first):
        order.append(name)
        await gate.wait()


async def test_a_waiting_first_reconcile_gets_the_next_free_slot_before_earlier_others() -> None:
    slots, gate = ReconcileSlots(1), asyncio.Event()
    order: list[str] = []
    holder = asyncio.create_task(_run(slots, "holder", False, order, gate))
    await asyncio.sleep(0)
    waiting = [
        asyncio.create_task(_run(slots, name, first, order, gate))
        for name, first in (("again-1", False), ("again-2", False), ("new-1", True), ("new-2", True))
    ]
    await asyncio.sleep(0)
    assert order == ["holder"]
    assert slots.waiting == 4
    gate.set()
    await asyncio.gather(holder, *waiting)
    assert order == ["holder", "new-1", "new-2", "again-1", "again-2"]
    assert slots.waiting == 0


async def test_at_most_size_at_once_and_a_cancelled_waiter_gives_its_turn_away() -> None:
    slots, gate = ReconcileSlots(2), asyncio.Event()
    order: list[str] = []
    running = 0
    most = 0

    async def counted(name: str) -> None:
        nonlocal running, most
        async with slots.held(first=False):
            running += 1
            most = max(most, running)
            order.append(name)
            await gate.wait()
            running -= 1

    tasks = [asyncio.create_task(counted(f"r{i}")) for i in range(5)]
    await asyncio.sleep(0)
    assert order == ["r0", "r1"]
    tasks[2].cancel()
    gate.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert most == 2
    assert order == ["r0", "r1", "r3", "r4"]
    async with slots.held(first=True), slots.held(first=False):  # every slot was given back
        assert slots.waiting == 0
