"""Fixtures for the runtime's unit tests: real tiny ONNX models, the real app over ASGI, and moto's S3 server."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import onnx_models
import pytest
from starlette.applications import Starlette

from modelapi_runtime.app import create_app
from modelapi_runtime.lifecycle import Runtime
from modelapi_runtime.settings import RuntimeSettings


@pytest.fixture(autouse=True)
def _no_ambient_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests must not pick up MODELAPI_* or AWS settings from the developer's shell."""
    import os

    for key in list(os.environ):
        if key.startswith(("MODELAPI_", "AWS_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("models")
    onnx_models.affine(d / "affine.onnx")
    onnx_models.two_io(d / "two_io.onnx")
    onnx_models.int_identity(d / "int.onnx")
    onnx_models.fixed(d / "fixed.onnx")
    onnx_models.mlp(d / "mlp.onnx", (16, 32, 4))
    onnx_models.slow(d / "slow.onnx")
    return d


class Served:
    def __init__(self, app: Starlette, client: httpx.AsyncClient) -> None:
        self.app = app
        self.client = client

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.app.state.runtime
        return runtime

    async def metrics(self) -> str:
        return (await self.client.get("/metrics")).text


ServeFactory = Callable[..., Awaitable[Served]]


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[ServeFactory]:
    """``await serve(path, **settings)``: the real app, lifespan run, model loaded, httpx client."""
    async with contextlib.AsyncExitStack() as stack:

        async def make(model: Path | str, *, wait: bool = True, **overrides: Any) -> Served:
            uri = model if isinstance(model, str) else model.as_uri()
            settings = RuntimeSettings(model_uri=uri, name="m", model_dir=str(tmp_path / "cache"), **overrides)
            app = create_app(settings)
            await stack.enter_async_context(app.router.lifespan_context(app))
            client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
            await stack.enter_async_context(client)
            served = Served(app, client)
            if wait:
                for _ in range(2000):  # up to 20 s; a load failure ends the wait too
                    if served.runtime.service is not None or served.runtime.failure is not None:
                        break
                    await asyncio.sleep(0.01)
            return served

        yield make


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server (a real S3 API over HTTP) on a free local port, one per test module: its URL."""
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_client(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A boto3 client of s3_endpoint; its test credentials and region are in the environment too, where the code
    under test looks for them."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
