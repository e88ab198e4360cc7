"""How a reconcile's Events reach the API: after its status patch, off the reconcile's path.

An Event is history for ``kubectl describe``; the status is the truth, and a reconcile holds one of the operator's
few reconcile slots until its writes return. Posted beside the status patch, a reconcile's Events (two or three when
a ModelAPI becomes Ready: ``Serving``, ``RolloutComplete``, maybe an autoscaling warning) held its slot as long as
the slowest of them, and at a burst of 1,000 ModelAPIs turned most of the last writes before Ready into Events.
:class:`EventQueue` takes them as client-go's event recorder does: a bounded queue, a few posts in flight, never
waited for by the reconcile; each keeps the time it happened. :class:`InlineEvents` posts them at once, one after
another (the unit tests' way: what a reconcile posted is there when it returns).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, Final, Protocol

from modelapi_operator import kube
from modelapi_operator.status import EventRecord

log = logging.getLogger(__name__)

POSTS_IN_FLIGHT: Final = 4
MAX_QUEUED: Final = 10_000  # at ~400 bytes each, 4 MB: a burst of 3,000 ModelAPIs' worth of Ready Events


class EventSink(Protocol):
    async def post(self, involved: Mapping[str, Any], event: EventRecord, now: str) -> None: ...


def reference(involved: Mapping[str, Any]) -> dict[str, Any]:
    """What an Event needs of the object it is about (not the whole body, kept while the Event waits)."""
    meta = involved["metadata"]
    return {
        "apiVersion": involved["apiVersion"],
        "kind": involved["kind"],
        "metadata": {key: meta[key] for key in ("name", "namespace", "uid")},
    }


async def post_now(client: kube.KubeClient, involved: Mapping[str, Any], event: EventRecord, now: str) -> None:
    try:
        await client.post_event(involved, event.type, event.reason, event.message, now)
    except kube.KubeError as error:  # an Event is best effort; the status already says it
        log.warning("could not post event %s: %s", event.reason, error)


class InlineEvents:
    def __init__(self, client: kube.KubeClient) -> None:
        self.client = client

    async def post(self, involved: Mapping[str, Any], event: EventRecord, now: str) -> None:
        await post_now(self.client, involved, event, now)


class EventQueue:
    """Events posted by ``POSTS_IN_FLIGHT`` background tasks in the order they were queued; beyond ``MAX_QUEUED``
    waiting, new ones are dropped and counted (logged once per burst)."""

    def __init__(self, client: kube.KubeClient, *, in_flight: int = POSTS_IN_FLIGHT, max_queued: int = MAX_QUEUED):
        self.client = client
        self.in_flight = in_flight
        self.dropped = 0
        self._dropping = False  # since the last Event that found room: one warning per burst of drops
        self._queue: asyncio.Queue[tuple[dict[str, Any], EventRecord, str]] = asyncio.Queue(max_queued)
        self._posters: list[asyncio.Task[None]] = []

    async def post(self, involved: Mapping[str, Any], event: EventRecord, now: str) -> None:
        if not self._posters:
            loop = asyncio.get_running_loop()
            self._posters = [loop.create_task(self._poster()) for _ in range(self.in_flight)]
        try:
            self._queue.put_nowait((reference(involved), event, now))
            self._dropping = False
        except asyncio.QueueFull:
            if not self._dropping:
                log.warning("%d Events are waiting to be posted: dropping new ones until they are", self._queue.qsize())
                self._dropping = True
            self.dropped += 1

    async def _poster(self) -> None:
        while True:
            involved, event, now = await self._queue.get()
            try:
                await post_now(self.client, involved, event, now)
            except Exception:  # a bug, not the API's answer: the poster goes on with the next Event
                log.exception("could not post event %s", event.reason)
            finally:
                self._queue.task_done()

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    async def flush(self, timeout_s: float) -> bool:
        """Until every queued Event is posted, at most ``timeout_s``; then the posters stop. False: some were not."""
        done = True
        if self._posters:
            try:
                await asyncio.wait_for(self._queue.join(), timeout_s)
            except TimeoutError:
                done = False
                log.warning("%d Events not posted before the operator stopped", self._queue.qsize())
        for task in self._posters:
            task.cancel()
        self._posters = []
        return done
