"""Constant-rate HTTP load against a Service's ClusterIP, from the host, for the real-node tests.

Requests are started on a fixed schedule (open loop: a slow answer does not slow the sender down), so a rollout
that stalls or drops connections shows up as failures and latency, not as a lower request count.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

Classify = Callable[[Any], str]


@dataclass
class Outcome:
    started_s: float  # seconds since the load began
    ok: bool
    detail: str  # the classification of a good answer, else the status code or exception name
    latency_s: float = 0.0  # from the request's start to its answer (or failure)


@dataclass
class LoadReport:
    outcomes: list[Outcome] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def sent(self) -> int:
        return len(self.outcomes)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    def failures_by_kind(self) -> Counter[str]:
        return Counter(o.detail for o in self.failed)

    def shares(self, since_s: float = 0.0) -> Counter[str]:
        return Counter(o.detail for o in self.outcomes if o.ok and o.started_s >= since_s)

    def summary(self) -> str:
        rate = self.sent / self.duration_s if self.duration_s else 0.0
        return (
            f"sent {self.sent} requests in {self.duration_s:.1f} s ({rate:.0f}/s); "
            f"failed requests: {len(self.failed)} {dict(self.failures_by_kind())}; answers: {dict(self.shares())}"
        )


class ConstantLoad:
    """POST ``body`` to ``url`` ``rate`` times a second on a background thread until stopped.

    keepalive=True reuses connections as a client library would (the hard case for a rollout: a kept-alive
    connection outlives the endpoint change); keepalive=False opens one connection per request, so that
    kube-proxy picks a pod for every request (what a traffic-share measurement needs).
    """

    def __init__(
        self,
        url: str,
        body: Any,
        classify: Classify,
        *,
        rate: float = 200,
        keepalive: bool = True,
        timeout_s: float = 5,
    ) -> None:
        self.url, self.body, self.classify = url, json.dumps(body).encode(), classify
        self.rate, self.keepalive, self.timeout_s = rate, keepalive, timeout_s
        self.report = LoadReport()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="constant-load", daemon=True)

    def __enter__(self) -> ConstantLoad:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> LoadReport:
        self._stop.set()
        self._thread.join(timeout=self.timeout_s + 30)
        return self.report

    def elapsed_s(self) -> float:
        return time.monotonic() - self._t0 if hasattr(self, "_t0") else 0.0

    async def _main(self) -> None:
        connector = aiohttp.TCPConnector(limit=256, force_close=not self.keepalive)
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        headers = {"Content-Type": "application/json"}
        async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers) as session:
            self._t0 = time.monotonic()
            pending: set[asyncio.Task[None]] = set()
            n = 0
            deadline = self._t0 + 900  # bounded: never outlives a test run
            while not self._stop.is_set() and time.monotonic() < deadline:
                task = asyncio.create_task(self._one(session, time.monotonic() - self._t0))
                pending.add(task)
                task.add_done_callback(pending.discard)
                n += 1
                await asyncio.sleep(max(0.0, self._t0 + n / self.rate - time.monotonic()))
            if pending:
                await asyncio.wait(pending)
            self.report.duration_s = time.monotonic() - self._t0

    async def _one(self, session: aiohttp.ClientSession, started_s: float) -> None:
        began = time.monotonic()
        try:
            async with session.post(self.url, data=self.body) as response:
                payload = await response.read()
                took = time.monotonic() - began
                if response.status != 200:
                    self.report.outcomes.append(Outcome(started_s, False, f"HTTP {response.status}", took))
                    return
                self.report.outcomes.append(Outcome(started_s, True, self.classify(json.loads(payload)), took))
        except (TimeoutError, aiohttp.ClientError, ValueError) as error:
            self.report.outcomes.append(Outcome(started_s, False, type(error).__name__, time.monotonic() - began))
