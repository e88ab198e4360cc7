"""``modelapi logs -f`` against a real aiohttp server on loopback answering as kube-apiserver does: a runtime
container that restarts in its pod ends its log stream (the stream belongs to the run that wrote it); the command
says so and follows the new run from its start, once the kubelet has started it (not while it waits to)."""

from __future__ import annotations

import argparse
import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from modelapi_operator import cli_commands, kube, names

POD = "iris-aaaa1111-x"
REVISION = "aaaa1111"


class FakeApiServer:
    """A ModelAPI with one pod whose runtime's first run writes a line and exits; the kubelet restarts it after
    a back-off, and its second run writes a line and keeps running."""

    def __init__(self) -> None:
        self.restarts = 0
        self.state: dict[str, Any] = {"running": {"startedAt": "2026-11-30T10:00:00Z"}}
        self.log_requests: list[dict[str, str]] = []
        self.back_off = asyncio.Event()

    def pod(self) -> dict[str, Any]:
        status = {"name": names.RUNTIME_CONTAINER, "restartCount": self.restarts, "state": self.state}
        if self.restarts:
            status["lastState"] = {"terminated": {"exitCode": 1}}
        return {
            "metadata": {
                "name": POD,
                "labels": {names.LABEL_NAME: "iris", names.LABEL_REVISION: REVISION},
            },
            "status": {"phase": "Running", "containerStatuses": [status]},
        }

    async def model(self, request: web.Request) -> web.Response:
        return web.json_response({"kind": names.KIND, "metadata": {"name": "iris", "namespace": "ml"}})

    async def pods(self, request: web.Request) -> web.Response:
        return web.json_response({"kind": "PodList", "items": [self.pod()]})

    async def log(self, request: web.Request) -> web.StreamResponse:
        self.log_requests.append(dict(request.query))
        response = web.StreamResponse()
        await response.prepare(request)
        if len(self.log_requests) == 1:
            await response.write(b"run 1: serving\n")
            # the run exits: the stream ends; the kubelet counts the restart and waits (CrashLoopBackOff)
            self.restarts, self.state = 1, {"waiting": {"reason": "CrashLoopBackOff"}}
            self.back_off.set()
            return response
        assert self.restarts == 1, "a second log stream of the same run"
        assert "running" in self.state, "the new run's log was asked for before it started"
        await response.write(b"run 2: serving again\n")
        await asyncio.sleep(3600)  # the run goes on
        return response

    async def start_again(self) -> None:
        await self.back_off.wait()
        await asyncio.sleep(0.3)  # a few rescans see the container waiting
        self.state = {"running": {"startedAt": "2026-11-30T10:00:20Z"}}


@pytest.fixture
async def api() -> AsyncIterator[tuple[FakeApiServer, str]]:
    fake = FakeApiServer()
    app = web.Application()
    app.router.add_get(kube.MODELAPI.path("ml", "iris"), fake.model)
    app.router.add_get(kube.POD.path("ml"), fake.pods)
    app.router.add_get(kube.POD.path("ml", POD, "log"), fake.log)
    server = TestServer(app)
    await server.start_server()
    try:
        yield fake, str(server.make_url("/")).rstrip("/")
    finally:
        await server.close()


def _kubeconfig(tmp_path: Path, server: str) -> Path:
    path = tmp_path / "config"
    path.write_text(
        yaml.safe_dump(
            {
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u", "namespace": "ml"}}],
                "current-context": "x",
            }
        )
    )
    return path


async def test_follow_goes_on_into_a_restarted_runtimes_new_run(
    api: tuple[FakeApiServer, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake, url = api
    monkeypatch.setattr(cli_commands, "FOLLOW_RESCAN_SECONDS", 0.05)
    args = argparse.Namespace(
        kubeconfig=str(_kubeconfig(tmp_path, url)),
        context=None,
        namespace=None,
        name="iris",
        revision=None,
        tail=None,
        follow=True,
        previous=False,
    )
    out = io.StringIO()
    restart = asyncio.create_task(fake.start_again())
    command = asyncio.create_task(cli_commands.logs(args, out))
    try:
        for _ in range(200):  # up to 10 s
            if "run 2" in out.getvalue() or command.done():
                break
            await asyncio.sleep(0.05)
        assert not command.done(), command.exception()
    finally:
        command.cancel()
        restart.cancel()
        await asyncio.gather(command, restart, return_exceptions=True)
    label = f"[{POD} {REVISION}] "
    assert out.getvalue().splitlines() == [label + "run 1: serving", label + "run 2: serving again"]
    # the new run is read from its start, as a follow, and only once the kubelet has started it
    assert len(fake.log_requests) == 2, fake.log_requests
    assert fake.log_requests[1] == {"container": names.RUNTIME_CONTAINER, "follow": "true"}
    said = capsys.readouterr().err.splitlines()
    assert said == [label + "the runtime container restarted (restart 1): following its new run"], said
