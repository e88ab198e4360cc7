"""The activator's holder on real sockets: a held request goes as soon as a starting pod's runtime says it is ready
(GET /v2/health/ready answers 200), without waiting for the kubelet to mark the pod Ready; a runtime still loading
(503) keeps it held. The pod list is a stand-in for the API server (the real-node tier runs the real one)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from modelapi_runtime.activator.holding import Holder
from modelapi_runtime.activator.kube import Credentials, Kube
from modelapi_runtime.activator.settings import ActivatorSettings
from modelapi_runtime.activator.targets import Endpoint, Target

TARGET = Target("ml", "iris")


class OnePod(Kube):
    """The API server's answer for a model with one pod that runs and is not Ready yet."""

    def __init__(self, port: int) -> None:
        super().__init__(Credentials(server="http://127.0.0.1:9"))
        self.port = port
        self.asked = 0

    async def pods(self, target: Target) -> list[dict[str, Any]]:
        return [
            {
                "metadata": {"name": "iris-0"},
                "spec": {"containers": [{"name": "runtime", "ports": [{"name": "http", "containerPort": self.port}]}]},
                "status": {
                    "phase": "Running",
                    "podIP": "127.0.0.1",
                    "conditions": [{"type": "Ready", "status": "False"}],
                    "containerStatuses": [{"name": "runtime", "state": {"running": {}}}],
                },
            }
        ]

    async def ask_for_replica(self, target: Target, now: str) -> None:
        self.asked += 1


@pytest.fixture
async def runtime_health() -> AsyncIterator[tuple[int, dict[str, int]]]:
    """/v2/health/ready answering 503 until ``state["ready_after"]`` calls, then 200."""
    state = {"calls": 0, "ready_after": 3}

    async def ready(_: web.Request) -> web.Response:
        state["calls"] += 1
        return web.Response(status=200 if state["calls"] > state["ready_after"] else 503)

    app = web.Application()
    app.router.add_get("/v2/health/ready", ready)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield port, state
    finally:
        await runner.cleanup()


async def test_a_held_request_goes_once_the_starting_pods_runtime_answers_ready(
    runtime_health: tuple[int, dict[str, int]],
) -> None:
    port, state = runtime_health
    kube = OnePod(port)
    holder = Holder(kube, ActivatorSettings(poll_seconds=0.05))
    started = time.monotonic()
    try:
        assert await holder.endpoints(TARGET, timeout=5) == [Endpoint("127.0.0.1", port)]
    finally:
        await holder.close()
    assert state["calls"] == 4, "asked until the runtime said ready, then no more"
    assert kube.asked == 1
    assert time.monotonic() - started < 2


async def test_a_runtime_still_loading_keeps_the_request_held(runtime_health: tuple[int, dict[str, int]]) -> None:
    port, state = runtime_health
    state["ready_after"] = 10**6
    holder = Holder(OnePod(port), ActivatorSettings(poll_seconds=0.05))
    try:
        with pytest.raises(TimeoutError):
            await holder.endpoints(TARGET, timeout=0.5)
    finally:
        await holder.close()
    assert state["calls"] >= 3
