"""The reconcile slots: at most ``size`` reconciles at once, and a new ModelAPI's first before the others.

In a burst of new ModelAPIs the events of the first ones' children (a pod scheduled, a Deployment's status) ask for
re-reconciles of those, which queued with the first reconciles of the ModelAPIs created after them: the last new
ModelAPI got its children only once every elder's re-reconciles had had their turn. A first reconcile (the ModelAPI
has no Deployment yet) now takes the next free slot before any other waiting reconcile; among each kind, the order
of arrival.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager


class ReconcileSlots:
    def __init__(self, size: int) -> None:
        self.size = size
        self._free = size
        self._first: deque[asyncio.Future[None]] = deque()
        self._others: deque[asyncio.Future[None]] = deque()

    def held(self, *, first: bool) -> AbstractAsyncContextManager[None]:
        """One slot, held for the block; ``first``: for a ModelAPI's first reconcile (served before the others)."""
        return self._held(first)

    @asynccontextmanager
    async def _held(self, first: bool) -> AsyncIterator[None]:
        await self._acquire(first)
        try:
            yield
        finally:
            self._release()

    @property
    def waiting(self) -> int:
        return sum(not future.done() for future in (*self._first, *self._others))

    async def _acquire(self, first: bool) -> None:
        if self._free > 0 and not self.waiting:
            self._free -= 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        (self._first if first else self._others).append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._release()  # handed a slot just as it was cancelled: pass it on
            raise

    def _release(self) -> None:
        for queue in (self._first, self._others):
            while queue:
                future = queue.popleft()
                if not future.done():
                    future.set_result(None)
                    return
        self._free += 1
