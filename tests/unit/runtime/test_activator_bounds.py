"""The activator's own bounds against hostile clients, on a real socket: bodies are counted against a byte budget
before they are read, a body that does not arrive in time gets 408, and an oversized declared body gets 413 without
being read. The holder (what waits for a replica) is a stand-in that never finds one: a model at zero that does not
wake, the case in which the activator holds bodies longest."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from modelapi_runtime.activator.holding import Holder
from modelapi_runtime.activator.server import build_app
from modelapi_runtime.activator.settings import ActivatorSettings
from modelapi_runtime.activator.targets import TARGET_HEADER, Directory, Endpoint, Target

MIB = 1024 * 1024


class NeverReady(Holder):
    """A model at zero whose replica never becomes ready (no API server involved)."""

    def __init__(self, settings: ActivatorSettings) -> None:
        self.settings = settings
        self.held = 0

    async def known(self) -> Directory:
        return Directory()

    async def endpoints(self, target: Target, timeout: float) -> list[Endpoint]:
        self.held += 1
        try:
            await asyncio.sleep(timeout)
        finally:
            self.held -= 1
        raise TimeoutError


@pytest.fixture
async def activator() -> AsyncIterator[tuple[int, ActivatorSettings]]:
    settings = ActivatorSettings(
        max_body_mib=4, max_held_mib=6, body_timeout_seconds=0.5, hold_timeout_seconds=3, queue_limit=100
    )
    runner = web.AppRunner(build_app(settings, NeverReady(settings)))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield port, settings
    finally:
        await runner.cleanup()


async def _send_head(port: int, length: int | None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    framing = f"Content-Length: {length}\r\n" if length is not None else "Transfer-Encoding: chunked\r\n"
    head = f"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\n{TARGET_HEADER}: ml/m\r\n{framing}\r\n"
    writer.write(head.encode())
    await writer.drain()
    return reader, writer


async def _status(reader: asyncio.StreamReader) -> tuple[int, str]:
    raw = await asyncio.wait_for(reader.read(65536), 10)
    line, _, rest = raw.decode(errors="replace").partition("\r\n")
    return int(line.split()[1]), rest


async def test_a_declared_body_over_the_limit_is_refused_unread(activator: tuple[int, ActivatorSettings]) -> None:
    port, _ = activator
    reader, writer = await _send_head(port, 5 * MIB)
    status, text = await _status(reader)
    writer.close()
    assert status == 413, text
    assert "at most" in text


async def test_bodies_past_the_byte_budget_get_503_with_retry_after(activator: tuple[int, ActivatorSettings]) -> None:
    port, _ = activator
    held = []
    for _ in range(2):  # 2 x 3 MiB declared and sent: the 6 MiB budget is full while they are held
        reader, writer = await _send_head(port, 3 * MIB)
        writer.write(b"{" + b" " * (3 * MIB - 2) + b"}")
        await writer.drain()
        held.append((reader, writer))
    await asyncio.sleep(0.3)
    reader, writer = await _send_head(port, 1024)
    status, text = await _status(reader)
    assert status == 503, text
    assert "retry-after:" in text.lower()
    assert "budget" in text
    for _, w in [*held, (reader, writer)]:
        w.close()


async def test_a_body_that_does_not_arrive_in_time_gets_408(activator: tuple[int, ActivatorSettings]) -> None:
    port, settings = activator
    reader, writer = await _send_head(port, 1000)
    writer.write(b"{")  # and then nothing
    await writer.drain()
    status, text = await _status(reader)
    writer.close()
    assert status == 408, text
    assert f"{settings.body_timeout_seconds:g} s" in text
