"""Held requests: per model, one poller reads its pods while requests wait, writes the demand annotation, and
releases every waiter at once when a replica is ready (Ready, or running with a runtime that says it is)."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aiohttp

from modelapi_runtime.activator.kube import Kube, KubeError
from modelapi_runtime.activator.settings import ActivatorSettings
from modelapi_runtime.activator.targets import (
    READY_PATH,
    Directory,
    Endpoint,
    Target,
    ready_endpoints,
    services_directory,
    starting_endpoints,
)

log = logging.getLogger(__name__)

FRESH_SECONDS = 1.0  # ready endpoints read this recently are used without reading again
KNOWN_SECONDS = 5.0  # the list of ModelAPIs (for bare names) is read at most this often


class NoSuchModel(Exception):
    """The API server says this ModelAPI does not exist."""


class QueueFull(Exception):
    """The activator already holds its queue limit of requests."""


@dataclass
class _Model:
    target: Target
    ready: list[Endpoint] = field(default_factory=list)
    read_at: float = -1e9
    waiting: int = 0
    missing: bool = False
    found: asyncio.Event = field(default_factory=asyncio.Event)
    poller: asyncio.Task[None] | None = None


class Holder:
    def __init__(self, kube: Kube, settings: ActivatorSettings) -> None:
        self.kube = kube
        self.settings = settings
        self.held = 0
        self._models: dict[Target, _Model] = {}
        self._known: tuple[float, Directory] = (-1e9, Directory())
        self._probes: aiohttp.ClientSession | None = None  # asks starting pods' runtimes whether they are ready

    async def known(self) -> Directory:
        """The ModelAPIs and their Services' ClusterIPs (read at most every 5 s; the last answer on an error)."""
        read_at, directory = self._known
        if time.monotonic() - read_at >= KNOWN_SECONDS:
            targets, by_address = directory.targets, directory.by_address
            try:
                targets = tuple(await self.kube.modelapis())
            except KubeError as error:
                log.warning("ModelAPIs not listed (%s): bare Host names cannot be placed", error)
            try:
                by_address = services_directory(await self.kube.model_services())
            except KubeError as error:
                log.warning("Services not listed (%s): requests to a ClusterIP cannot be placed", error)
            directory = Directory(targets, by_address)
            self._known = (time.monotonic(), directory)
        return directory

    def forget(self, target: Target) -> None:
        """A forward to a known endpoint failed: read the pods again before the next one."""
        model = self._models.get(target)
        if model is not None:
            model.read_at = -1e9

    async def endpoints(self, target: Target, timeout: float) -> list[Endpoint]:
        """Ready endpoints of the model, waiting up to ``timeout`` (held) for one; TimeoutError past it."""
        model = self._models.setdefault(target, _Model(target))
        if model.ready and time.monotonic() - model.read_at < FRESH_SECONDS:
            return model.ready
        if self.held >= self.settings.queue_limit:
            raise QueueFull
        self.held += 1
        model.waiting += 1
        try:
            event = model.found
            if model.poller is None or model.poller.done():
                model.missing = False
                model.poller = asyncio.get_running_loop().create_task(self._poll(model))
            await asyncio.wait_for(event.wait(), timeout)
        finally:
            self.held -= 1
            model.waiting -= 1
        if model.missing:
            raise NoSuchModel(str(target))
        return model.ready

    async def _answering(self, endpoints: list[Endpoint]) -> list[Endpoint]:
        """Of pods that run but are not Ready yet, those whose runtime already says it is ready: the kubelet would
        mark them Ready at its next probe (up to a period later); held requests need not wait for that."""
        if not endpoints:
            return []
        if self._probes is None or self._probes.closed:
            timeout = aiohttp.ClientTimeout(total=self.settings.probe_timeout_seconds)
            self._probes = aiohttp.ClientSession(timeout=timeout)

        async def answers(endpoint: Endpoint, session: aiohttp.ClientSession) -> bool:
            try:
                async with session.get(endpoint.url(READY_PATH)) as response:
                    return response.status == 200
            except (aiohttp.ClientError, TimeoutError, OSError):
                return False

        found = await asyncio.gather(*(answers(e, self._probes) for e in endpoints))
        return [endpoint for endpoint, ok in zip(endpoints, found, strict=True) if ok]

    async def close(self) -> None:
        if self._probes is not None:
            await self._probes.close()

    def _release(self, model: _Model) -> None:
        model.found.set()
        model.found = asyncio.Event()

    async def _poll(self, model: _Model) -> None:
        asked_at: float | None = None  # when the demand was last written
        began = time.monotonic()
        while model.waiting > 0:
            try:
                pods = await self.kube.pods(model.target)
            except KubeError as error:
                log.warning("pods of %s not read: %s", model.target, error)
                pods = []
            ready = ready_endpoints(pods) or await self._answering(starting_endpoints(pods))
            if ready:
                model.ready, model.read_at = ready, time.monotonic()
                if asked_at is not None:  # the model was at zero (not a refresh of known replicas): say when it woke
                    log.info(
                        "replica of %s is ready after %.2f s: forwarding %d held requests",
                        model.target, model.read_at - began, model.waiting,
                    )  # fmt: skip
                self._release(model)
                return
            if asked_at is None or time.monotonic() - asked_at >= self.settings.demand_seconds:
                now = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
                try:
                    await self.kube.ask_for_replica(model.target, now)
                    asked_at = time.monotonic()
                    log.info("asked for a replica of %s (%d requests held)", model.target, model.waiting)
                except KubeError as error:
                    if error.status == 404:
                        model.missing = True
                        self._release(model)
                        return
                    log.warning("demand for %s not written: %s", model.target, error)
            await asyncio.sleep(self.settings.poll_seconds)
